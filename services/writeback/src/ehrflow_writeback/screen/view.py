"""A queued draft as the review screen shows it: evidence with dates, units and ages, the result and its
parts (or the summary's statements with the inputs each cites), the model, and the decision so far."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ehrflow_contracts.events import OVERRIDE_REASONS
from ehrflow_writeback.queue import QueuedDraft
from ehrflow_writeback.writer import editable_text

STATEMENT = re.compile(r"^\s*[-*]\s+(?P<text>.*?)\s*(\[(?P<refs>[^\]]*)\])?\s*$")
WORKFLOW_TITLES = {
    "news2": "NEWS2 early warning score",
    "readmission": "30-day readmission risk",
    "tumor-board": "Tumor board preparation summary",
}


def age(then: datetime | None, now: datetime) -> str:
    """How long ago, as a clinician says it: ``just now``, ``12 min``, ``5 h``, ``3 d``."""
    if then is None:
        return "unknown"
    seconds = (now - (then if then.tzinfo else then.replace(tzinfo=UTC))).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


@dataclass(frozen=True)
class Row:
    anchor: str
    reference: str
    label: str
    value: str
    when: str
    age: str


@dataclass(frozen=True)
class Statement:
    text: str
    sources: list[tuple[str, str]]
    """(reference, anchor of its evidence row, or '' when the row is not shown)."""


@dataclass(frozen=True)
class DraftView:
    id: str
    status: str
    title: str
    workflow: str
    feature: str
    model: str
    resource_type: str
    proposed: str
    expires: str
    expired: bool
    headline: str
    band: str
    parts: list[tuple[str, str]]
    statements: list[Statement]
    text: str | None
    evidence: list[Row]
    inputs_age: str
    decided: dict[str, str] = field(default_factory=dict)
    needs_role: str = ""
    """The role this reviewer lacks to decide on the draft ('' when they have it, or none is needed)."""

    @property
    def decidable(self) -> bool:
        return self.status == "pending" and not self.expired and not self.needs_role


def _anchor(draft_id: str, reference: str) -> str:
    return "ev-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{draft_id[:12]}-{reference}").strip("-")


def _headline(summary: dict[str, object]) -> tuple[str, str, list[tuple[str, str]]]:
    band = str(summary.get("band", ""))
    if "score" in summary:
        scores = summary.get("scores")
        parts = [(k.replace("_", " "), str(v)) for k, v in scores.items()] if isinstance(scores, dict) else []
        if "spo2_scale" in summary:
            parts.append(("SpO2 scale", str(summary["spo2_scale"])))
        return f"Score {summary['score']}", band, parts
    if "probability" in summary:
        probability = float(summary["probability"])  # type: ignore[arg-type]
        parts = [
            (k.replace("_", " "), f"{v:g}" if isinstance(v, float) else str(v))
            for k, v in summary.items()
            if k not in ("probability", "band")
        ]
        return f"Risk {probability:.0%}", band, parts
    return "", band, [(k.replace("_", " "), str(v)) for k, v in summary.items() if k != "band"]


def draft_view(queued: QueuedDraft, now: datetime, roles: tuple[str, ...] | None = None) -> DraftView:
    d = queued.draft
    rows = [
        Row(
            anchor=_anchor(d.draft_id, e.reference),
            reference=e.reference,
            label=e.label,
            value=" ".join(x for x in (e.value, e.unit) if x),
            when=e.when.strftime("%Y-%m-%d %H:%M %Z").strip() if e.when else "",
            age=age(e.when, now),
        )
        for e in d.evidence
    ]
    anchors = {r.reference.split("/_history/")[0]: r.anchor for r in rows}
    text = editable_text(d.resource)
    statements = []
    for line in (text or "").splitlines():
        found = STATEMENT.match(line)
        if found:
            refs = [r.strip() for r in (found["refs"] or "").split(",") if r.strip()]
            statements.append(Statement(found["text"], [(r, anchors.get(r, "")) for r in refs]))
    headline, band, parts = _headline(d.summary)
    times = [e.when for e in d.evidence if e.when]
    if times:
        newest, oldest = age(max(times), now), age(min(times), now)
        inputs_age = newest if newest == oldest else f"{newest} to {oldest}"
    else:
        inputs_age = "unknown"
    decided = {k: v for k, v in queued.fields.items() if k in ("reviewer", "reason", "resource_ref", "detail")}
    if code := queued.fields.get("reason_code"):
        decided["reason_code"] = OVERRIDE_REASONS.get(code, code)  # type: ignore[call-overload]
    if queued.fields.get("edited"):
        decided["edited"] = "yes"
    feedback = queued.fields.get("card_feedback")
    if feedback:
        why = [queued.fields.get("card_feedback_reason"), queued.fields.get("card_feedback_comment")]
        decided["card_feedback"] = feedback + "".join(f"; {w}" for w in why if w)
    return DraftView(
        id=d.draft_id,
        status=queued.status,
        title=WORKFLOW_TITLES.get(d.workflow, d.workflow),
        workflow=d.workflow,
        feature=d.feature or d.workflow,
        model=f"{d.model.name} {d.model.version}",
        resource_type=str(d.resource.get("resourceType", "")),
        proposed=d.received_at.strftime("%Y-%m-%d %H:%M UTC"),
        expires=d.expires_at.strftime("%Y-%m-%d %H:%M UTC") if d.expires_at else "",
        expired=d.expires_at is not None and d.expires_at <= now,
        headline=headline,
        band=band,
        parts=parts,
        statements=statements,
        text=text,
        evidence=rows,
        inputs_age=inputs_age,
        decided=decided,
        needs_role=d.approver_role if d.approver_role and roles is not None and d.approver_role not in roles else "",
    )
