"""train_<model> with and without a person's approval: where the review sits, what it asks and how long it waits."""

from __future__ import annotations

from datetime import timedelta

import yaml

from ml.core.spec import SPEC_DIR
from ml.training.approval import review_request
from tests.fixtures import parsed_dags

# The train DAG of the shipped churn spec, as it stands without approval.
TASK_IDS = {"extract", "train_cpu", "train_gpu", "evaluate", "gate", "promote", "champion_changed", "publish_champion"}


def _train_dag(tmp_path, **approval):
    """train_churn parsed with the churn spec, its `promotion.approval` set to `approval`, served alone."""
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    if approval:
        data["promotion"]["approval"] = approval
    spec_path = tmp_path / "churn.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    with parsed_dags(spec_path=spec_path, file="train_model.py") as dags:
        return dags["train_churn"]


def test_without_approval_the_dag_is_as_it_was(tmp_path):
    dag = _train_dag(tmp_path)
    assert set(dag.task_ids) == TASK_IDS
    promote = dag.get_task("promote")
    assert promote.upstream_task_ids == {"extract", "evaluate", "gate"}
    assert promote.trigger_rule == "all_success"


def test_with_approval_a_review_waits_between_the_gate_and_promote(tmp_path):
    from airflow.providers.standard.operators.hitl import HITLOperator

    dag = _train_dag(tmp_path, required=True, timeout_hours=6)
    assert set(dag.task_ids) == TASK_IDS | {"request_review", "review"}
    request, review, promote = dag.get_task("request_review"), dag.get_task("review"), dag.get_task("promote")
    assert request.upstream_task_ids == {"evaluate", "gate"}
    assert review.upstream_task_ids == {"request_review"}
    assert promote.upstream_task_ids == {"extract", "evaluate", "gate", "review"}
    # A skipped review (the gate rejected) skips nothing further: promote still records the decision.
    assert request.ignore_downstream_trigger_rules is False
    assert promote.trigger_rule == "none_failed_min_one_success"

    assert isinstance(review, HITLOperator)
    assert (review.options, review.defaults, review.multiple) == (["Approve", "Reject"], ["Reject"], False)
    # A plain timedelta: the task reports its timeout to Airflow, which cannot encode pendulum's Duration.
    assert type(review.response_timeout) is timedelta and review.response_timeout == timedelta(hours=6)
    assert review.execution_timeout is None
    assert review.serialized_params["reason"]["value"] == "" and review.owner == "tidemark"


def test_the_review_shows_the_request_that_request_review_returned(tmp_path):
    """The review's subject and body render what request_review pushed (real Jinja, the DAG's environment)."""
    review = _train_dag(tmp_path, required=True).get_task("review")
    decision = {"promote": True, "decision": "promoted", "reasons": ["pass: roc_auc 0.7012 against the floor 0.62"],
                "card": "runs/churn/manual_1/card.html"}
    pushed = {"request_review": review_request("churn", {"challenger": {"candidate": "lightgbm"}}, decision,
                                               timeout_hours=72)}

    class TaskInstance:
        def xcom_pull(self, task_ids: str):
            return pushed[task_ids]

    env = review.dag.get_template_env()
    subject = review.render_template(review.subject, {"ti": TaskInstance()}, env)
    body = review.render_template(review.body, {"ti": TaskInstance()}, env)
    assert subject == "Promote the lightgbm challenger of churn to champion?"
    assert body == pushed["request_review"]["body"]
    assert "- pass: roc_auc 0.7012 against the floor 0.62" in body and "card: `runs/churn/manual_1/card.html`" in body

