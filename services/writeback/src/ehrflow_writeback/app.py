"""The review API: list an organization's drafts, approve or reject one.

Callers authenticate with their organization's review key (``Authorization: Bearer``). A key opens only
its own organization's queue: another organization's path answers 401, another organization's draft id
answers 404. Clinician SMART-launch sessions replace the key as the review screen's credential (issue 3).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ehrflow_contracts import ReviewDecided
from ehrflow_runtime.organizations import Registry
from ehrflow_runtime.outcomes import operation_outcome
from ehrflow_runtime.settings import read_secret_file
from ehrflow_writeback.handlers import Publishers
from ehrflow_writeback.queue import STATUSES, ReviewQueue

audit = logging.getLogger("ehrflow.writeback.audit")

REVIEWER = re.compile(r"^(Practitioner|PractitionerRole)/[A-Za-z0-9\-.]{1,64}$")


class Decision(BaseModel):
    reviewer: str = Field(pattern=REVIEWER.pattern, description="FHIR reference of the deciding clinician.")
    reason: str | None = Field(default=None, max_length=1000)


@dataclass(frozen=True)
class ReviewContext:
    registry: Registry
    queue: ReviewQueue
    publishers: Publishers
    publish_timeout_s: float


class ReviewKeys:
    def __init__(self, registry: Registry) -> None:
        self._keys = {org.id: read_secret_file(org.review.api_key_file) for org in registry}

    def verify(self, org_id: str, authorization: str) -> bool:
        scheme, _, presented = authorization.partition(" ")
        expected = self._keys.get(org_id)
        if expected is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


def routes(ctx: ReviewContext, keys: ReviewKeys) -> list[Route]:
    def _authorized(request: Request) -> str | None:
        org_id = request.path_params["org"]
        return org_id if keys.verify(org_id, request.headers.get("authorization", "")) else None

    async def list_drafts(request: Request) -> Response:
        org = _authorized(request)
        if org is None:
            return operation_outcome(401, "security", "review key required for this organization")
        requested = request.query_params.get("status", "pending")
        status = next((s for s in STATUSES if s == requested), None)
        if status is None:
            return operation_outcome(400, "invalid", f"status must be one of {list(STATUSES)}")
        drafts = await ctx.queue.list(org, status)
        return JSONResponse({"organization": org, "status": status, "drafts": [d.view() for d in drafts]})

    async def get_draft(request: Request) -> Response:
        org = _authorized(request)
        if org is None:
            return operation_outcome(401, "security", "review key required for this organization")
        queued = await ctx.queue.get(org, request.path_params["draft_id"])
        if queued is None:
            return operation_outcome(404, "not-found", "no such draft in this organization")
        return JSONResponse(queued.view())

    async def decide(request: Request) -> Response:
        org = _authorized(request)
        if org is None:
            return operation_outcome(401, "security", "review key required for this organization")
        draft_id, action = request.path_params["draft_id"], request.path_params["action"]
        if action not in ("approve", "reject"):
            return operation_outcome(404, "not-found", "action must be approve or reject")
        verdict: Literal["approved", "rejected"] = "approved" if action == "approve" else "rejected"
        try:
            body = Decision.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            err = exc.errors()[0]
            return operation_outcome(400, "invalid", f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
        queued = await ctx.queue.get(org, draft_id)
        if queued is None:
            return operation_outcome(404, "not-found", "no such draft in this organization")
        done, status = await ctx.queue.transition(
            org,
            draft_id,
            "pending",
            verdict,
            reviewer=body.reviewer,
            **({"reason": body.reason} if body.reason else {}),
        )
        if not done:
            return operation_outcome(409, "conflict", f"draft is already {status}")
        decision = ReviewDecided(
            organization_id=org,
            correlation_id=queued.draft.correlation_id,
            draft_id=draft_id,
            decision=verdict,
            reviewer=body.reviewer,
            decided_at=datetime.now(UTC),
            reason=body.reason,
        )
        try:
            await asyncio.wait_for(
                ctx.publishers.decisions.publish(decision, key=f"{org}|{queued.draft.patient}".encode()),
                ctx.publish_timeout_s,
            )
        except Exception:
            await ctx.queue.transition(org, draft_id, verdict, "pending")  # not recorded: let them decide again
            return operation_outcome(
                503, "transient", "decision could not be recorded; retry", headers={"Retry-After": "5"}
            )
        audit.info(
            "review decided", extra={"org": org, "draft_id": draft_id, "decision": verdict, "reviewer": body.reviewer}
        )
        return JSONResponse({"draft_id": draft_id, "status": verdict}, status_code=202)

    return [
        Route("/v1/orgs/{org}/drafts", list_drafts, methods=["GET"]),
        Route("/v1/orgs/{org}/drafts/{draft_id}", get_draft, methods=["GET"]),
        Route("/v1/orgs/{org}/drafts/{draft_id}/{action:str}", decide, methods=["POST"]),
    ]
