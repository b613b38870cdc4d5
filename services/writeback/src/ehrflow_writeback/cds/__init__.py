"""CDS Hooks 2.0 services per organization, at ``{public url}/cds/{org}``:

- ``GET  /cds/{org}/cds-services``: discovery (one ``patient-view`` service, ``ehrflow-drafts``, with a
  prefetch template for the patient, so the service never has to query the EHR back);
- ``POST /cds/{org}/cds-services/ehrflow-drafts``: a card per pending draft of the patient in context, with
  a SMART link to the review screen;
- ``POST /cds/{org}/cds-services/ehrflow-drafts/feedback``: accepted/overridden (with reason and comment),
  published to ``card.feedback`` and shown on the draft.

Every call is authenticated by the EHR's CDS client JWT (``trust``). A card's override is feedback on the
card, not a decision on the draft: the draft stays pending until a clinician decides on it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ehrflow_contracts import CardFeedback
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.outcomes import operation_outcome
from ehrflow_writeback.app import ReviewContext
from ehrflow_writeback.cds.cards import SERVICE_ID, card, draft_of
from ehrflow_writeback.cds.trust import CdsTrust, Untrusted

log = logging.getLogger("ehrflow.writeback.cds")
PATIENT_ID = re.compile(r"^(?:Patient/)?([A-Za-z0-9\-.]{1,64})$")
MAX_BODY = 1024 * 1024
M = TypeVar("M", bound=BaseModel)


class Context(BaseModel):
    userId: str = Field(min_length=1)  # noqa: N815 (CDS Hooks' name)
    patientId: str = Field(min_length=1)  # noqa: N815
    encounterId: str | None = None  # noqa: N815


class HookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    hook: str
    hookInstance: str = Field(min_length=1)  # noqa: N815
    context: Context
    prefetch: dict[str, Any] | None = None


class Coding(BaseModel):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class OverrideReason(BaseModel):
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)  # noqa: N815


class Feedback(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str
    outcome: Literal["accepted", "overridden"]
    overrideReason: OverrideReason | None = None  # noqa: N815
    outcomeTimestamp: datetime  # noqa: N815


class FeedbackRequest(BaseModel):
    feedback: list[Feedback] = Field(min_length=1, max_length=100)


def launch_url(org: Organization) -> str | None:
    """Where the EHR starts a SMART launch of the review screen: auth's ``/launch/{org}``."""
    if org.launch is None:
        return None
    return org.launch.redirect_uri.removesuffix("/callback")


async def _parsed(request: Request, model: type[M]) -> M | Response:
    """The JSON body as ``model``, or the OperationOutcome that says what is wrong with it."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return operation_outcome(413, "too-costly", f"a CDS Hooks request is at most {MAX_BODY} bytes")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        return operation_outcome(400, "invalid", f"{'.'.join(map(str, err['loc']))}: {err['msg']}")


def cds_routes(
    context: Callable[[], ReviewContext], trust: Callable[[], CdsTrust], public_url: str | None
) -> list[Route]:
    def base(request: Request, org_id: str) -> str:
        root = (public_url or str(request.base_url)).rstrip("/")
        return f"{root}/cds/{org_id}/cds-services"

    async def trusted(request: Request, *paths: str) -> Organization | Response:
        org_id = request.path_params["org"]
        org = context().registry.get(org_id)
        if org is None or org.cds_hooks is None:
            return operation_outcome(404, "not-found", "no CDS Hooks services for this organization")
        audiences = tuple(base(request, org_id) + p for p in paths)
        try:
            await trust().verify(org, request.headers.get("authorization"), audiences)
        except Untrusted as exc:
            log.warning("cds call refused", extra={"org": org_id, "reason": str(exc)})
            return operation_outcome(401, "security", str(exc))
        return org

    async def discovery(request: Request) -> Response:
        org = await trusted(request, "")
        if isinstance(org, Response):
            return org
        service = {
            "hook": "patient-view",
            "id": SERVICE_ID,
            "title": "AI drafts awaiting review",
            "description": "A card for each AI-drafted result about this patient that awaits a clinician's review "
            "in ehrflow, with a link that opens the review screen.",
            "prefetch": {"patient": "Patient/{{context.patientId}}"},
        }
        return JSONResponse({"services": [service]})

    async def patient_view(request: Request) -> Response:
        org = await trusted(request, f"/{SERVICE_ID}")
        if isinstance(org, Response):
            return org
        hook = await _parsed(request, HookRequest)
        if isinstance(hook, Response):
            return hook
        if hook.hook != "patient-view":
            return operation_outcome(400, "invalid", f"hook: this service answers patient-view, not {hook.hook}")
        found = PATIENT_ID.match(hook.context.patientId)
        if found is None:
            return operation_outcome(400, "invalid", "context.patientId: not a FHIR id")
        patient = f"Patient/{found[1]}"
        prefetched = (hook.prefetch or {}).get("patient")
        if isinstance(prefetched, dict) and prefetched.get("id") not in (None, found[1]):
            return operation_outcome(400, "invalid", "prefetch.patient: not the patient in context")
        ctx, now = context(), datetime.now(UTC)
        pending = await ctx.queue.list(org.id, "pending", patient=patient)
        link = launch_url(org)
        cards = [
            card(q, link, now)
            for q in pending
            if q.draft.patient == patient and (q.draft.expires_at is None or q.draft.expires_at > now)
        ]
        return JSONResponse({"cards": cards})

    async def feedback(request: Request) -> Response:
        org = await trusted(request, f"/{SERVICE_ID}", f"/{SERVICE_ID}/feedback")
        if isinstance(org, Response):
            return org
        sent = await _parsed(request, FeedbackRequest)
        if isinstance(sent, Response):
            return sent
        ctx = context()
        recorded = 0
        for item in sent.feedback:
            draft_id = draft_of(item.card)
            queued = await ctx.queue.get(org.id, draft_id) if draft_id else None
            if queued is None:
                log.info("feedback on an unknown card", extra={"org": org.id})
                continue
            reason = item.overrideReason
            event = CardFeedback(
                organization_id=org.id,
                correlation_id=queued.draft.correlation_id,
                draft_id=queued.draft.draft_id,
                service=SERVICE_ID,
                outcome=item.outcome,
                reason_system=reason.reason.system if reason and reason.reason else None,
                reason_code=reason.reason.code if reason and reason.reason else None,
                comment=reason.userComment if reason else None,
                outcome_at=item.outcomeTimestamp,
            )
            key = f"{org.id}|{queued.draft.patient}".encode()
            try:
                await asyncio.wait_for(ctx.publishers.feedback.publish(event, key=key), ctx.publish_timeout_s)
            except Exception:
                return operation_outcome(
                    503, "transient", "feedback not recorded; send it again", headers={"Retry-After": "5"}
                )
            recorded += 1
        return JSONResponse({"recorded": recorded})

    return [
        Route("/cds/{org}/cds-services", discovery, methods=["GET"]),
        Route(f"/cds/{{org}}/cds-services/{SERVICE_ID}", patient_view, methods=["POST"]),
        Route(f"/cds/{{org}}/cds-services/{SERVICE_ID}/feedback", feedback, methods=["POST"]),
    ]
