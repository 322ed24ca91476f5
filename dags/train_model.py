"""
### `train_<model>`

One DAG per served model spec (`served: true` in `ml/specs/<model>.yaml` or in `TIDEMARK_SPECS_DIR`):
trains the spec's candidates, compares the best one with the model's champion on the same out-of-time
rows, and lets the promotion gate decide. Runs on the spec's schedule (weekly for churn) and whenever
the model's `retrain_requested.<model>` asset is updated; a spec with `schedule: null` retrains only on
request.

1. `extract` first completes any promotion that a killed run left half done and checks that the current
   champion downloads and loads (a damaged champion stops the run here, before anything is fitted). It then
   reads every label known at the as-of date (conf `as_of`, else the triggering event's
   `as_of`, else the features watermark: the latest as-of date in the feature relation, never the
   clock) from the warehouse as Arrow, and splits it by time with gaps of at least the label horizon.
   A scheduled run skips, with the reason in its log, before any label exists or when the champion
   was trained as of the features watermark already.
2. `train_cpu` / `train_gpu` fit one candidate per mapped task. The PyTorch candidates run in the `gpu`
   pool and on the `gpu` queue, so a deployment can route them to GPU workers.
3. `evaluate` picks the challenger on validation and scores it and the champion on the test window,
   with a paired bootstrap interval on the primary metric's difference.
4. `gate` applies the spec's promotion policy. `promote` publishes the version to the registry, records
   the decision with its intent, moves the champion alias when it passed, then writes `ml.model_promotions`;
   a retry (or `python -m ml registry repair`) completes a promotion that was interrupted.
5. `publish_champion` updates the `champion.<model>` asset only when the champion changed.

A spec with `promotion.approval.required: true` puts a person between the gate and `promote`. When the gate
passed, `request_review` writes the request and `review` waits in the UI's required actions (Browse, or the
run's `review` task) with the gate's reasons and the model card's location; anyone allowed to answer the
DAG's human-in-the-loop tasks picks Approve or Reject and gives a reason. Then `promote` records the answer:

- Approve: the same promotion as without approval, the alias moved (compare-and-swap) in the approver's name,
  the reasons ending `approved by <user>: <reason>`.
- Reject: the version is published and the decision recorded as rejected, ending `rejected by <user>: <reason>`;
  the champion stays.
- No answer within `timeout_hours` (72 by default): the scheduler answers Reject, and the decision is recorded
  as rejected, ending `no answer within <N> h: rejected`; the champion stays.

When the gate rejected, no one is asked (`review` is skipped) and `promote` records the rejection as usual.
While a run waits, the model's next training run waits behind it (one active run per DAG).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.orchestration.airflow_setup import GPU_POOL, WAREHOUSE_POOL, priority
from ml.orchestration.assets import champion_asset, retrain_requested_asset
from ml.orchestration.intervals import requested_as_of
from ml.orchestration.served import add_model_dags
from ml.training.approval import OPTIONS, REASON, REJECT

settings = Settings.from_env()


def train_model(spec: ModelSpec):
    """The train DAG of one model."""
    cpu_candidates = [c.name for c in spec.candidates if not c.uses_gpu]
    gpu_candidates = [c.name for c in spec.candidates if c.uses_gpu]
    retrain_requested, champion = retrain_requested_asset(spec.name), champion_asset(spec.name)
    approval = spec.promotion.approval

    @dag(
        dag_id=f"train_{spec.name}",
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(spec.schedule, timezone="UTC"), assets=[retrain_requested]
        ) if spec.schedule else [retrain_requested],
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        description=spec.description or None,
        tags=["tidemark", "training", spec.name],
        default_args={"owner": "tidemark", "retries": 1, "retry_delay": pendulum.duration(minutes=2),
                      **priority("train_model")},
    )
    def train():
        @task(pool=WAREHOUSE_POOL)
        def extract(dag_run=None, triggering_asset_events=None) -> dict:
            """Check the champion, then read and split the labelled rows known at the as-of date."""
            from ml.orchestration.skips import skip_when_idle
            from ml.training.steps import extract_step, prepare_step, scheduled_as_of

            prepared = prepare_step(spec, settings)
            as_of = requested_as_of(dag_run.conf, triggering_asset_events)
            with skip_when_idle():  # a scheduled run with nothing new to learn from: skipped, the reason logged
                scheduled = as_of is None
                if scheduled:
                    as_of = scheduled_as_of(spec, settings, prepared["champion_as_of"])
                return extract_step(spec, settings, dag_run.run_id, as_of, scheduled=scheduled)

        @task
        def train_cpu(candidate: str, data: dict) -> dict:
            """Fit one CPU candidate."""
            from ml.training.steps import train_step

            return train_step(spec, settings, data, candidate)

        @task(pool=GPU_POOL, queue=settings.gpu_queue)
        def train_gpu(candidate: str, data: dict) -> dict:
            """Fit one PyTorch candidate: on CUDA when the worker has a GPU, else on the CPU."""
            from ml.training.steps import train_step

            return train_step(spec, settings, data, candidate)

        @task
        def evaluate(data: dict, cpu: list[dict], gpu: list[dict]) -> dict:
            """Challenger and champion on the same out-of-time test rows."""
            from ml.training.evaluate import evaluate_step

            return evaluate_step(spec, settings, data, [*cpu, *gpu])

        @task
        def gate(data: dict, evaluation: dict) -> dict:
            """The spec's promotion policy, with a reason for every check."""
            from ml.training.steps import gate_step

            return gate_step(spec, settings, data, evaluation)

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def request_review(evaluation: dict, decision: dict) -> dict:
            """What the reviewer is asked; nothing when the gate rejected, which skips `review` (not `promote`)."""
            from ml.training.approval import review_request

            return review_request(spec.name, evaluation, decision, timeout_hours=approval.timeout_hours)

        def review() -> HITLOperator:
            """Wait in the required actions for Approve or Reject and a reason; Reject once the timeout passed."""
            request = "ti.xcom_pull(task_ids='request_review')"
            return HITLOperator(
                task_id="review",
                subject=f"{{{{ {request}['subject'] }}}}",
                body=f"{{{{ {request}['body'] }}}}",
                options=OPTIONS,
                defaults=[REJECT],
                params={REASON: Param("", type="string", title="Reason",
                                      description="why; recorded with the decision")},
                # a timedelta: the task reports it to Airflow, which cannot encode pendulum's Duration
                response_timeout=timedelta(hours=approval.timeout_hours),
            )

        # With approval, `review` may be skipped (the gate rejected): promote runs when nothing upstream failed.
        @task(pool=WAREHOUSE_POOL, trigger_rule="none_failed_min_one_success" if approval.required else "all_success")
        def promote(data: dict, evaluation: dict, decision: dict, answer: dict | None = None, dag_run=None) -> dict:
            """Publish the version, record the decision, move the champion if the gate (and the reviewer) passed it."""
            from ml.training.steps import promote_step

            if not approval.required:
                return promote_step(spec, settings, data, evaluation, decision, run_id=dag_run.run_id)
            from ml.training.approval import apply_review

            decision, actor = apply_review(decision, answer, timeout_hours=approval.timeout_hours)
            return promote_step(spec, settings, data, evaluation, decision, run_id=dag_run.run_id, actor=actor)

        @task.short_circuit
        def champion_changed(outcome: dict) -> bool:
            return outcome["champion_after"] != outcome["champion_before"]

        @task(outlets=[champion])
        def publish_champion(outcome: dict, outlet_events=None) -> dict:
            """Announce the new champion to the DAGs that score with it."""
            outlet_events[champion].extra = {"model": outcome["model"], "version": outcome["version"]}
            return outcome

        data = extract()
        cpu = train_cpu.partial(data=data).expand(candidate=cpu_candidates)
        gpu = train_gpu.partial(data=data).expand(candidate=gpu_candidates) if gpu_candidates else []
        evaluation = evaluate(data, cpu, gpu)
        decision = gate(data, evaluation)
        if approval.required:
            asked = review()
            request_review(evaluation, decision) >> asked
            outcome = promote(data, evaluation, decision, asked.output)
        else:
            outcome = promote(data, evaluation, decision)
        champion_changed(outcome) >> publish_champion(outcome)

    return train()


add_model_dags(globals(), "train", train_model, settings)
