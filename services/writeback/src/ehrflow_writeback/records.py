"""What a decision and a card's feedback record on their draft in the review queue: one definition for the
consumers (``handlers``) and for rebuilding the view from the log (``rebuild``)."""

from __future__ import annotations

from ehrflow_contracts import CardFeedback, ReviewDecided
from ehrflow_contracts.events import OVERRIDE_REASONS


def decision_fields(decision: ReviewDecided) -> dict[str, str]:
    return {
        "reviewer": decision.reviewer,
        **({"reason": decision.reason} if decision.reason else {}),
        **({"reason_code": decision.reason_code} if decision.reason_code else {}),
        **({"edited": "yes"} if decision.edited_text is not None else {}),
    }


def feedback_fields(feedback: CardFeedback) -> dict[str, str]:
    reason = OVERRIDE_REASONS.get(feedback.reason_code or "", feedback.reason_code)  # type: ignore[call-overload]
    return {
        "card_feedback": feedback.outcome,
        "card_feedback_at": feedback.outcome_at.isoformat(),
        **({"card_feedback_reason": reason} if reason else {}),
        **({"card_feedback_comment": feedback.comment} if feedback.comment else {}),
    }
