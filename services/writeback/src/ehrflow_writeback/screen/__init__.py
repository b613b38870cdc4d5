"""The review screen: server-rendered HTML where a clinician approves, edits or rejects a patient's AI drafts.

It opens behind the SMART launch (``ehrflow_auth``): the launch ends at ``/review/{org}/#session=…``, a small
script hands the session to ``POST /review/{org}/session``, and the screen keeps it in a sealed, partitioned
cookie (``security``). From there the pages are plain HTML forms (they work without scripts): the session's
patient's drafts with their evidence (``view``), and one form per decision. Decisions take the same path as
the review API (``ehrflow_writeback.decisions``): published to ``review.decided``, carried out by the
consumer. Served on the same public origin as the launch endpoints (an ingress routes ``/launch`` to auth
and ``/review`` to writeback), so the session's binding cookie reaches both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ehrflow_contracts.events import OVERRIDE_REASONS, OverrideReason
from ehrflow_runtime.cookies import set_app_cookie
from ehrflow_runtime.outcomes import operation_outcome
from ehrflow_runtime.sessions import session_cookie_name
from ehrflow_writeback.app import NOT_A_CLINICIAN, REVIEWER, ReviewAccess, ReviewContext, Reviewer
from ehrflow_writeback.decisions import Refused, publish_decision
from ehrflow_writeback.queue import STATUSES, QueuedDraft
from ehrflow_writeback.screen.security import COOKIE, ScreenCookie, csrf_ok, csrf_token, frame_ancestors, headers
from ehrflow_writeback.screen.security import screen_path as base_path
from ehrflow_writeback.screen.view import draft_view

audit = logging.getLogger("ehrflow.writeback.audit")
HERE = Path(__file__).parent
MAX_FORM_BYTES = 256 * 1024
COOKIE_MAX_AGE_S = 8 * 3600
REASON_CODES: frozenset[str] = frozenset(get_args(OverrideReason))

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
)


@dataclass(frozen=True)
class Opened:
    reviewer: Reviewer
    session_id: str
    binding: str


def screen_routes(
    context: Callable[[], ReviewContext], access: Callable[[], ReviewAccess], cookie: ScreenCookie
) -> list[Route | Mount]:
    def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        org = context().registry.get(request.path_params.get("org", ""))
        html = templates.get_template(template).render(**values)
        return HTMLResponse(html, status, headers=headers(frame_ancestors(org)))

    def problem(request: Request, status: int, heading: str, message: str) -> HTMLResponse:
        return page(request, "problem.html", status, heading=heading, message=message)

    async def opened(request: Request) -> Opened | HTMLResponse:
        """The clinician behind the screen's cookie, or the page that says why not."""
        org_id = request.path_params["org"]
        if context().registry.get(org_id) is None:
            return problem(request, 404, "Unknown organization", "There is no such organization here.")
        found = cookie.open(org_id, request.cookies.get(COOKIE))
        reviewer = await access().from_session(org_id, *found) if found else None
        if found is None or reviewer is None:
            return problem(
                request, 401, "Launch from your EHR", "No open session: launch ehrflow from the patient's chart."
            )
        if reviewer.user is None or not REVIEWER.match(reviewer.user) or reviewer.patient is None:
            audit.warning("review screen refused: not a clinician", extra={"org": org_id})
            return problem(request, 403, "Not available", f"This screen is for clinicians: {NOT_A_CLINICIAN}.")
        return Opened(reviewer, *found)

    async def start(request: Request) -> Response:
        org_id = request.path_params["org"]
        if context().registry.get(org_id) is None:
            return problem(request, 404, "Unknown organization", "There is no such organization here.")
        base = base_path(org_id)
        return page(request, "start.html", session_url=f"{base}session", next_url=f"{base}drafts")

    async def open_session(request: Request) -> Response:
        """Take the launch's session (its id from the page, its binding cookie from the browser) into the
        screen's own cookie."""
        org_id = request.path_params["org"]
        try:
            session_id = str(json.loads(await request.body())["session"])
        except (ValueError, KeyError, TypeError):
            return operation_outcome(400, "invalid", "session: required")
        binding = request.cookies.get(session_cookie_name(session_id))
        reviewer = await access().from_session(org_id, session_id, binding)
        if reviewer is None or binding is None:
            return operation_outcome(401, "security", "no such session for this organization; launch again")
        if reviewer.user is None or not REVIEWER.match(reviewer.user):
            audit.warning("review screen refused: not a clinician", extra={"org": org_id})
            return operation_outcome(403, "forbidden", NOT_A_CLINICIAN)
        response = Response(status_code=204, headers={"Cache-Control": "no-store"})
        sealed = cookie.seal(org_id, session_id, binding)
        set_app_cookie(response, COOKIE, sealed, max_age=COOKIE_MAX_AGE_S, path=base_path(org_id))
        return response

    async def render(request: Request, who: Opened, status: int = 200, **values: Any) -> HTMLResponse:
        org_id, patient = who.reviewer.organization, who.reviewer.patient
        ctx, now = context(), datetime.now(UTC)
        found: dict[str, QueuedDraft] = {}
        for state in STATUSES:  # a draft decided between two reads is in two lists: the later read is newer
            for q in await ctx.queue.list(org_id, state, patient=patient):
                if q.draft.patient == patient:
                    found[q.draft.draft_id] = q
        drafts = sorted(found.values(), key=lambda q: (q.status != "pending", q.draft.received_at))
        if drafts:
            await ctx.publishers.auditor.record(
                "review.viewed",
                organization=org_id,
                actor=who.reviewer.user,
                outcome="success",
                patient=patient,
                drafts=[q.draft.draft_id for q in drafts],
            )
        return page(
            request,
            "drafts.html",
            status,
            drafts=[draft_view(q, now, roles=who.reviewer.roles) for q in drafts],
            patient=patient,
            reviewer=who.reviewer.user,
            base=base_path(org_id),
            csrf=csrf_token(org_id, who.session_id, who.binding),
            reasons=list(OVERRIDE_REASONS.items()),
            **values,
        )

    async def drafts(request: Request) -> Response:
        who = await opened(request)
        if isinstance(who, Response):
            return who
        decided = request.query_params.get("decided")
        return await render(request, who, notice="Decision recorded." if decided else None, awaiting=decided)

    async def decide(request: Request) -> Response:
        who = await opened(request)
        if isinstance(who, Response):
            return who
        org_id, draft_id = who.reviewer.organization, request.path_params["draft_id"]
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return problem(request, 413, "Too long", "The form is larger than a review needs.")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items()}
        if not csrf_ok(form.get("csrf"), org_id, who.session_id, who.binding):
            audit.warning("review screen refused: bad form token", extra={"org": org_id})
            return problem(request, 403, "Expired form", "This form is no longer valid: reload the page.")
        ctx = context()
        queued = await ctx.queue.get(org_id, draft_id)
        if queued is None or queued.draft.patient != who.reviewer.patient:
            return problem(request, 404, "No such draft", "There is no such draft for this patient.")
        action = form.get("action")
        code = form.get("reason_code") or None
        comment = (form.get("comment") or "").strip()[:1000] or None
        text = form.get("text")
        if action not in ("approve", "edit", "reject"):
            return await render(request, who, 400, problem="Choose approve, approve with edits, or reject.")
        if action == "reject" and code not in REASON_CODES:
            return await render(request, who, 400, problem="Choose a reason for rejecting the draft.")
        if action == "edit" and not (text or "").strip():
            return await render(request, who, 400, problem="An edited summary cannot be empty.")
        recorded = await publish_decision(
            ctx.publishers,
            queued,
            verdict="rejected" if action == "reject" else "approved",
            reviewer=str(who.reviewer.user),
            roles=who.reviewer.roles,
            reason=comment,
            reason_code=code if action == "reject" else None,  # type: ignore[arg-type]
            edited_text=text.replace("\r\n", "\n") if action == "edit" and text else None,
            timeout_s=ctx.publish_timeout_s,
        )
        if isinstance(recorded, Refused):
            return await render(request, who, recorded.status, problem=recorded.message)
        return RedirectResponse(f"{base_path(org_id)}drafts?decided={draft_id}#draft-{draft_id}", status_code=303)

    return [
        Mount("/review/static", app=StaticFiles(directory=HERE / "static"), name="review-static"),
        Route("/review/{org}/", start, methods=["GET"]),
        Route("/review/{org}/session", open_session, methods=["POST"]),
        Route("/review/{org}/drafts", drafts, methods=["GET"]),
        Route("/review/{org}/drafts/{draft_id}", decide, methods=["POST"]),
    ]
