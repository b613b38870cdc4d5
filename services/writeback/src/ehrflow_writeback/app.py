"""The review API: list an organization's drafts, approve or reject one.

Callers are clinicians with a SMART-launch session (``Authorization: Bearer <session id>`` plus the
session's cookie; they see only their launch's patient and decide as the session's user), or clients
holding the organization's review key (they see the whole queue and name the reviewer). Either opens
only its own organization: another organization's path answers 401, a draft outside the organization
or the session's patient answers 404. Only clinicians review: a session whose ``fhirUser`` is not a
Practitioner or PractitionerRole (a Patient, RelatedPerson or Person) answers 403, so it can neither see
AI drafts nor become the verifier of one.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ehrflow_contracts.events import OverrideReason
from ehrflow_runtime.organizations import Registry
from ehrflow_runtime.outcomes import operation_outcome
from ehrflow_runtime.sessions import SessionClient, session_cookie_name
from ehrflow_runtime.settings import read_secret_file
from ehrflow_writeback.decisions import Refused, publish_decision
from ehrflow_writeback.handlers import Publishers
from ehrflow_writeback.queue import STATUSES, ReviewQueue

audit = logging.getLogger("ehrflow.writeback.audit")

REVIEWER = re.compile(r"^(Practitioner|PractitionerRole)/[A-Za-z0-9\-.]{1,64}$")


class Decision(BaseModel):
    reviewer: str | None = Field(
        default=None,
        pattern=REVIEWER.pattern,
        description="FHIR reference of the deciding clinician (review-key clients); a session's user wins.",
    )
    reason: str | None = Field(default=None, max_length=1000, description="The reviewer's comment.")
    reason_code: OverrideReason | None = Field(
        default=None, description="Why a draft is overridden (rejected): a CDS Hooks `overrideReason` code."
    )
    text: str | None = Field(
        default=None,
        max_length=100_000,
        description="Approve with this revision of a text output (a DocumentReference's summary).",
    )


@dataclass(frozen=True)
class ReviewContext:
    registry: Registry
    queue: ReviewQueue
    publishers: Publishers
    publish_timeout_s: float


@dataclass(frozen=True)
class Reviewer:
    """Who is calling the review API, and what they may see."""

    organization: str
    user: str | None
    """``Practitioner/…`` of a clinician session; None for a review-key client (it names the reviewer)."""
    patient: str | None
    """A session sees only its launch's patient; a review-key client sees the whole queue."""
    roles: tuple[str, ...] | None = None
    """A session's ehrflow roles; None for a review-key client (a trusted integration naming its reviewer)."""

    def may_see(self, draft_patient: str) -> bool:
        return self.patient is None or self.patient == draft_patient


class ReviewAccess:
    """Review-key clients per organization, and clinician sessions (introspected at the auth service)."""

    def __init__(self, registry: Registry, sessions: SessionClient | None) -> None:
        self._keys = {org.id: read_secret_file(org.review.api_key_file) for org in registry}
        self._sessions = sessions

    async def reviewer(self, request: Request) -> Reviewer | None:
        org_id = request.path_params["org"]
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        expected = self._keys.get(org_id)
        if expected is not None and hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
            return Reviewer(org_id, None, None)
        return await self.from_session(org_id, presented, request.cookies.get(session_cookie_name(presented)))

    async def from_session(self, org_id: str, session_id: str, binding: str | None) -> Reviewer | None:
        """The clinician of a launch session (id and binding), if it is a live session of ``org_id``."""
        if self._sessions is None or not binding:
            return None
        session = await self._sessions.introspect(session_id, binding)
        if session is None or session.organization != org_id:  # a session opens its own organization only
            return None
        return Reviewer(org_id, session.user, session.patient, session.roles)


NOT_A_CLINICIAN = "only a Practitioner or PractitionerRole reviews drafts"


def routes(context: Callable[[], ReviewContext], access: Callable[[], ReviewAccess]) -> list[Route]:
    """The review API over the current configuration (``context()`` and ``access()`` follow registry
    reloads: a revoked review key or a removed organization stops working without a restart)."""
    denied = "a review key or a clinician session of this organization is required"

    async def clinician(request: Request) -> Reviewer | Response:
        """The caller, or the answer that refuses them (401 unknown, 403 not a clinician)."""
        reviewer = await access().reviewer(request)
        if reviewer is None:
            return operation_outcome(401, "security", denied)
        if reviewer.user is not None and not REVIEWER.match(reviewer.user):
            audit.warning("review refused: not a clinician", extra={"org": reviewer.organization})
            return operation_outcome(403, "forbidden", NOT_A_CLINICIAN)
        return reviewer

    async def list_drafts(request: Request) -> Response:
        reviewer = await clinician(request)
        if isinstance(reviewer, Response):
            return reviewer
        ctx = context()
        requested = request.query_params.get("status", "pending")
        status = next((s for s in STATUSES if s == requested), None)
        if status is None:
            return operation_outcome(400, "invalid", f"status must be one of {list(STATUSES)}")
        listed = await ctx.queue.list(reviewer.organization, status, patient=reviewer.patient)
        drafts = [d for d in listed if reviewer.may_see(d.draft.patient)]
        if drafts:
            patients = {d.draft.patient for d in drafts}
            await ctx.publishers.auditor.record(
                "review.viewed",
                organization=reviewer.organization,
                actor=reviewer.user or "review-key",
                outcome="success",
                patient=next(iter(patients)) if len(patients) == 1 else None,
                drafts=[d.draft.draft_id for d in drafts],
            )
        return JSONResponse(
            {"organization": reviewer.organization, "status": status, "drafts": [d.view() for d in drafts]}
        )

    async def get_draft(request: Request) -> Response:
        reviewer = await clinician(request)
        if isinstance(reviewer, Response):
            return reviewer
        ctx = context()
        queued = await ctx.queue.get(reviewer.organization, request.path_params["draft_id"])
        if queued is None or not reviewer.may_see(queued.draft.patient):
            return operation_outcome(404, "not-found", "no such draft for this organization and patient")
        await ctx.publishers.auditor.record(
            "review.viewed",
            organization=reviewer.organization,
            actor=reviewer.user or "review-key",
            outcome="success",
            patient=queued.draft.patient,
            drafts=(queued.draft.draft_id,),
            correlation_id=queued.draft.correlation_id,
        )
        return JSONResponse(queued.view())

    async def decide(request: Request) -> Response:
        reviewer = await clinician(request)
        if isinstance(reviewer, Response):
            return reviewer
        ctx, org = context(), reviewer.organization
        draft_id, action = request.path_params["draft_id"], request.path_params["action"]
        if action not in ("approve", "reject"):
            return operation_outcome(404, "not-found", "action must be approve or reject")
        verdict: Literal["approved", "rejected"] = "approved" if action == "approve" else "rejected"
        try:
            body = Decision.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            err = exc.errors()[0]
            return operation_outcome(400, "invalid", f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
        who = reviewer.user or body.reviewer
        if who is None:
            return operation_outcome(400, "invalid", "reviewer: required with a review key")
        queued = await ctx.queue.get(org, draft_id)
        if queued is None or not reviewer.may_see(queued.draft.patient):
            return operation_outcome(404, "not-found", "no such draft for this organization and patient")
        if verdict == "rejected" and body.text is not None:
            return operation_outcome(400, "invalid", "text: only an approval carries an edit")
        recorded = await publish_decision(
            ctx.publishers,
            queued,
            verdict=verdict,
            reviewer=who,
            roles=reviewer.roles,
            reason=body.reason,
            reason_code=body.reason_code,
            edited_text=body.text,
            timeout_s=ctx.publish_timeout_s,
        )
        if isinstance(recorded, Refused):
            headers = {"Retry-After": "5"} if recorded.status == 503 else None
            return operation_outcome(recorded.status, recorded.code, recorded.message, headers=headers)
        return JSONResponse({"draft_id": draft_id, "decision": verdict, "reviewer": who}, status_code=202)

    return [
        Route("/v1/orgs/{org}/drafts", list_drafts, methods=["GET"]),
        Route("/v1/orgs/{org}/drafts/{draft_id}", get_draft, methods=["GET"]),
        Route("/v1/orgs/{org}/drafts/{draft_id}/{action:str}", decide, methods=["POST"]),
    ]
