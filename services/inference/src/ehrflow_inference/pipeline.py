"""One notification event through every workflow its organization runs: drafts, shadow drafts, outcomes.

No FastStream here: ``evaluate`` takes an event and what the configuration provides, and returns what to
publish. Around each workflow's ``draft`` it adds what every workflow shares:

- the debounce: an evaluation waits until ``trigger.debounce_s`` after the event was received, so the later
  events of a burst are on the EHR when the first is evaluated, and the earlier ones find themselves
  superseded. The wait holds the partition, which is what keeps one patient's events in order;
- outcomes: a refused read (403, 404/410), an invalid model answer and a workflow's own reasons become
  ``InferenceOutcome`` events, counted by workflow and reason, never a silent drop;
- the draft: its id (the same organization, workflow, model version, patient and inputs always give the same
  id, so redelivery is harmless), the model reference, the feature whose scopes writing it needs, its
  expiry, and the review policy: ``shadow`` drafts go to their own topic, ``auto-approve`` marks a draft
  whose summary satisfies the contract's condition.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from prometheus_client import Counter

from ehrflow_contracts import DraftProposed, InferenceOutcome, ModelRef, NotificationReceived
from ehrflow_contracts.events import OutcomeReason
from ehrflow_inference.enabled import Enabled
from ehrflow_inference.evaluation import Drafted, FhirReader, Outcome, OutcomeError
from ehrflow_inference.inputs import refused
from ehrflow_inference.models import InvalidModelOutput, Models, ModelUnavailable
from ehrflow_runtime.consumers import where
from ehrflow_runtime.errors import ConfigurationError, RetryableError, UpstreamRejected

log = logging.getLogger("ehrflow.inference")

DRAFTS = Counter("ehrflow_inference_drafts", "Drafts made, by workflow and review path.", ["workflow", "review"])
OUTCOMES = Counter(
    "ehrflow_inference_outcomes", "Evaluations that gave no draft, by workflow and reason.", ["workflow", "reason"]
)

Kind = Literal["draft", "shadow", "outcome"]


class WorkflowUnavailable(RetryableError):
    """A workflow's model or EHR failed for now: the event is tried again later (``retries``); after the last
    attempt its outcome is ``reason``."""

    def __init__(self, workflow: str, cause: RetryableError) -> None:
        super().__init__(f"{workflow}: {where(cause)}")
        self.workflow = workflow
        self.reason: OutcomeReason = "model-unavailable" if isinstance(cause, ModelUnavailable) else "ehr-unavailable"


def gave_up(event: NotificationReceived, exc: WorkflowUnavailable, attempts: int) -> InferenceOutcome:
    """The outcome of an event dead-lettered after its last retry."""
    OUTCOMES.labels(exc.workflow, exc.reason).inc()
    return InferenceOutcome(
        organization_id=event.organization_id,
        correlation_id=event.correlation_id,
        workflow=exc.workflow,
        outcome=exc.reason,
        patient=event.patient,
        detail=f"{where(exc.__cause__ or exc)} after {attempts} attempts; the event is on the dead-letter topic",
    )


@dataclass(frozen=True)
class Result:
    kind: Kind
    event: DraftProposed | InferenceOutcome


def draft_id(organization_id: str, workflow: str, model_version: str, patient: str, basis: Sequence[str]) -> str:
    material = "\x1f".join([organization_id, workflow, model_version, patient, *sorted(basis)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


async def debounce(
    event: NotificationReceived,
    enabled: Enabled,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    window = enabled.contract.trigger.debounce_s
    if window > 0:
        wait = (event.received_at + timedelta(seconds=window) - now()).total_seconds()
        if wait > 0:
            await sleep(min(wait, window))


async def evaluate(
    event: NotificationReceived,
    enabled: Sequence[Enabled],
    fhir_for: Callable[[str], FhirReader],
    models: Models,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Result]:
    """Every enabled workflow that ``event`` triggers, in the organization's order."""
    results: list[Result] = []
    for entry in enabled:
        if not entry.workflow.triggered_by(event, entry.contract):
            continue
        await debounce(event, entry, now, sleep)
        outcome = await _run(event, entry, fhir_for, models)
        if outcome is not None:
            results.append(_shaped(event, entry, outcome, now()))
    return results


async def _run(
    event: NotificationReceived, entry: Enabled, fhir_for: Callable[[str], FhirReader], models: Models
) -> Drafted | Outcome | None:
    contract = entry.contract
    try:
        return await entry.workflow.draft(event, contract, fhir_for(contract.feature), models.client(contract.model))
    except OutcomeError as exc:
        return exc.outcome
    except InvalidModelOutput as exc:
        return Outcome("invalid-model-output", str(exc), event.patient)
    except UpstreamRejected as exc:
        if exc.status in (403, 404, 410):
            return refused(exc, exc.resource_type, event.patient)
        raise
    except RetryableError as exc:
        raise WorkflowUnavailable(entry.workflow.name, exc) from exc


def _shaped(event: NotificationReceived, entry: Enabled, result: Drafted | Outcome, now: datetime) -> Result:
    contract, name = entry.contract, entry.workflow.name
    if isinstance(result, Outcome):
        OUTCOMES.labels(name, result.reason).inc()
        log.info("no draft", extra={"org": event.organization_id, "workflow": name, "reason": result.reason})
        return Result(
            "outcome",
            InferenceOutcome(
                organization_id=event.organization_id,
                correlation_id=event.correlation_id,
                workflow=name,
                outcome=result.reason,
                patient=result.patient,
                missing=result.missing,
                detail=result.detail,
            ),
        )
    if result.resource.get("resourceType") != contract.output.resource_type:
        raise ConfigurationError(
            f"workflow {name} drafted a {result.resource.get('resourceType')}; its contract says "
            f"{contract.output.resource_type}"
        )
    resource = result.resource
    if contract.output.profile:
        resource = {**resource, "meta": {**resource.get("meta", {}), "profile": [contract.output.profile]}}
    review = contract.review
    auto = review.mode == "auto-approve" and review.when is not None and review.when.holds(result.summary)
    path = "shadow" if review.mode == "shadow" else "auto-approved" if auto else "review"
    DRAFTS.labels(name, path).inc()
    did = draft_id(event.organization_id, name, contract.model.version, result.patient, result.basis)
    log.info("drafted", extra={"org": event.organization_id, "workflow": name, "draft_id": did, "review": path})
    draft = DraftProposed(
        organization_id=event.organization_id,
        correlation_id=event.correlation_id,
        occurred_at=result.occurred_at,
        draft_id=did,
        workflow=name,
        model=ModelRef(name=contract.model.name, version=contract.model.version),
        patient=result.patient,
        resource=resource,
        basis=result.basis,
        summary=result.summary,
        auto_approve=auto,
        feature=contract.feature,
        expires_at=now + timedelta(hours=review.ttl_hours),
        evidence=result.evidence,
        approver_role=review.approver_role,
    )
    return Result("shadow" if review.mode == "shadow" else "draft", draft)
