"""A person's approval of a promotion that the gate passed, for specs with `promotion.approval.required`.

train_<model> asks in Airflow's required actions (a human-in-the-loop task) with the text built here, and its
`promote` task turns the answer into the decision it records: an approval keeps the gate's decision and names
the approver as the actor that moves the champion; a rejection, or no answer within `timeout_hours`, turns it
into a rejection whose reasons say who rejected it and why. A decision the gate rejected is never put to anyone
and stays as it is.
"""

from __future__ import annotations

from typing import Any, Mapping

APPROVE, REJECT = "Approve", "Reject"
OPTIONS = [APPROVE, REJECT]
REASON = "reason"  # the reviewer's text, a field of the request
GATE_ACTOR = "train_model"  # the actor of a promotion no person decided (promote_step's default)


def review_request(model: str, evaluation: Mapping[str, Any], decision: Mapping[str, Any], *,
                   timeout_hours: float) -> dict[str, str]:
    """The subject and body to ask a person with; empty when the gate rejected, since no one is asked then."""
    if not decision["promote"]:
        return {}
    return {"subject": review_subject(model, evaluation["challenger"]["candidate"]),
            "body": review_body(model, decision, timeout_hours=timeout_hours)}


def review_subject(model: str, challenger: str) -> str:
    """The request's headline: which model's champion the challenger would replace."""
    return f"Promote the {challenger} challenger of {model} to champion?"


def review_body(model: str, decision: Mapping[str, Any], *, timeout_hours: float | None = None) -> str:
    """The request's Markdown: the gate's decision, every reason it gave, the model card's location, and what an
    answer (or none) does."""
    lines = [f"The promotion gate of **{model}** says **{decision['decision']}**:", ""]
    lines += [f"- {reason}" for reason in decision.get("reasons", [])]
    lines += ["", f"card: {_card(decision.get('card'))}", ""]
    lines.append(f"{APPROVE} makes the challenger the champion of {model}; {REJECT} keeps the current champion. "
                 "Either way the version is published and the decision recorded, with your reason.")
    if timeout_hours is not None:
        lines.append(f"No answer within {_hours(timeout_hours)} rejects the promotion.")
    return "\n".join(lines)


def _card(location: Any) -> str:
    if not location:
        return "not available"
    text = str(location)
    return f"[{text}]({text})" if text.startswith(("http://", "https://")) else f"`{text}`"


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def apply_review(decision: dict, review: Mapping[str, Any] | None, *, timeout_hours: float) -> tuple[dict, str]:
    """The decision to record and the actor that records it, given the reviewer's answer.

    `review` is what the human-in-the-loop task returned (`chosen_options`, `params_input`,
    `responded_by_user`); None, or an answer without a user (the timeout's default), means no one answered.
    A decision the gate rejected comes back unchanged, whatever the review."""
    if not decision["promote"]:
        return decision, GATE_ACTOR
    user = (review or {}).get("responded_by_user")
    if not user:
        return _rejected(decision, f"no answer within {_hours(timeout_hours)}: rejected"), GATE_ACTOR
    name = user.get("name") or user.get("id")
    reason = str(((review or {}).get("params_input") or {}).get(REASON) or "").strip()
    chosen = (review or {}).get("chosen_options") or []
    verdict = "approved" if chosen == [APPROVE] else "rejected"
    line = f"{verdict} by {name}" + (f": {reason}" if reason else "")
    if verdict == "rejected":
        return _rejected(decision, line), name
    return {**decision, "reasons": [*decision["reasons"], line],
            "checks": {**decision.get("checks", {}), "approval": True}}, name


def _rejected(decision: dict, line: str) -> dict:
    return {**decision, "promote": False, "decision": "rejected", "reasons": [*decision["reasons"], line],
            "checks": {**decision.get("checks", {}), "approval": False}}
