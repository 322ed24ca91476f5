"""A person's answer to a passed gate: the decision promote records, its actor, and the request's text."""

from __future__ import annotations

from datetime import datetime, timezone

from ml.training.approval import APPROVE, REJECT, apply_review, review_body, review_request

PASSED = {"promote": True, "decision": "promoted", "checks": {"score_range": True, "floor_roc_auc": True},
          "reasons": ["pass: scores span [0.0224, 0.6497] inside [0, 1] and are not constant",
                      "pass: roc_auc 0.6965 against the floor 0.62"]}
FAILED = {"promote": False, "decision": "rejected", "checks": {"beats_champion": False},
          "reasons": ["FAIL: roc_auc 0.6891 vs champion 0.6891 (gain +0.0000)"]}


def _answer(option: str, reason: str = "", user: dict | None = None) -> dict:
    """What the human-in-the-loop task returns (HITLTriggerEventSuccessPayload)."""
    return {"chosen_options": [option], "params_input": {"reason": reason},
            "responded_at": datetime(2025, 5, 2, 9, 30, tzinfo=timezone.utc), "responded_by_user": user}


ANA = {"id": "ana", "name": "ana"}


def test_an_approval_keeps_the_promotion_and_names_the_approver_as_actor():
    decision, actor = apply_review(PASSED, _answer(APPROVE, "  card reviewed, segments fine ", ANA), timeout_hours=72)
    assert actor == "ana"
    assert decision["promote"] is True and decision["decision"] == "promoted"
    assert decision["reasons"] == [*PASSED["reasons"], "approved by ana: card reviewed, segments fine"]
    assert decision["checks"] == {**PASSED["checks"], "approval": True}
    assert PASSED["reasons"][-1].startswith("pass: roc_auc")  # the gate's decision itself is left as it was


def test_a_rejection_with_a_reason_is_recorded_as_rejected_by_the_reviewer():
    decision, actor = apply_review(PASSED, _answer(REJECT, "wait for the Q3 audit", ANA), timeout_hours=72)
    assert actor == "ana"
    assert decision["promote"] is False and decision["decision"] == "rejected"
    assert decision["reasons"][-1] == "rejected by ana: wait for the Q3 audit"
    assert decision["reasons"][:-1] == PASSED["reasons"] and decision["checks"]["approval"] is False


def test_a_rejection_without_a_reason_names_the_reviewer_alone():
    decision, _ = apply_review(PASSED, _answer(REJECT, "", {"id": "7", "name": ""}), timeout_hours=72)
    assert decision["reasons"][-1] == "rejected by 7"


def test_no_answer_within_the_timeout_rejects_the_promotion():
    # The scheduler's timeout answers with the defaults (Reject) and no user; no review at all means the same.
    for review in (_answer(REJECT, "", None), None):
        decision, actor = apply_review(PASSED, review, timeout_hours=0.5)
        assert decision["promote"] is False and decision["decision"] == "rejected"
        assert decision["reasons"][-1] == "no answer within 0.5 h: rejected"
        assert actor == "train_model"


def test_a_decision_the_gate_rejected_stays_rejected_whoever_approves_it():
    for review in (None, _answer(APPROVE, "ship it", ANA)):
        assert apply_review(FAILED, review, timeout_hours=72) == (FAILED, "train_model")


def test_the_body_lists_the_decision_every_reason_and_the_card():
    body = review_body("churn", {**PASSED, "card": "s3://models/churn/cards/run_7.html"}, timeout_hours=72)
    assert "**churn**" in body and "**promoted**" in body
    for reason in PASSED["reasons"]:
        assert f"- {reason}" in body
    assert "card: `s3://models/churn/cards/run_7.html`" in body
    assert "No answer within 72 h rejects the promotion." in body
    linked = review_body("churn", {**PASSED, "card": "https://airflow.example/cards/churn.html"})
    assert "card: [https://airflow.example/cards/churn.html](https://airflow.example/cards/churn.html)" in linked
    assert "No answer" not in linked


def test_the_body_says_when_there_is_no_card_yet():
    assert "card: not available" in review_body("churn", PASSED)
    assert "card: not available" in review_body("churn", {**PASSED, "card": None})


def test_a_request_names_the_challenger_and_is_empty_when_the_gate_rejected():
    evaluation = {"challenger": {"candidate": "lightgbm"}}
    request = review_request("churn", evaluation, PASSED, timeout_hours=24)
    assert request["subject"] == "Promote the lightgbm challenger of churn to champion?"
    assert request["body"] == review_body("churn", PASSED, timeout_hours=24)
    assert review_request("churn", evaluation, FAILED, timeout_hours=24) == {}
