"""HTTP surface of clinician launches and sessions.

- ``GET  /launch/{org}``: EHR launch (``iss`` and ``launch`` given) or standalone launch (neither);
- ``GET  /launch/{org}/callback``: the authorization server's redirect; ends at the review screen with
  ``#session=<id>`` and the session's binding cookie;
- ``GET  /v1/session``, ``POST /v1/session/logout``: the page's own session (``Authorization: Bearer <id>``
  plus the cookie);
- ``POST /internal/v1/sessions/introspect``: for services the policy allows (session id and binding).
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ehrflow_auth.launch import LaunchError, Launches
from ehrflow_auth.live import LiveConfig
from ehrflow_auth.policy import ServicePolicy
from ehrflow_auth.sessions import SessionStore
from ehrflow_runtime.audit import Auditor
from ehrflow_runtime.cookies import delete_app_cookie, set_app_cookie
from ehrflow_runtime.sessions import session_cookie_name as cookie_name


class Introspection(BaseModel):
    session: str
    binding: str


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value if scheme.lower() == "bearer" and value else None


def launch_routes(
    live: LiveConfig, launches: Launches, sessions: SessionStore, policy: ServicePolicy, auditor: Auditor
) -> list[Route]:
    async def failed(org: str, stage: str, exc: LaunchError) -> Response:
        # Anyone can cause a failed launch at any rate: counted and audited as a periodic summary, by the
        # reason without what a caller put in it (``… (error code)``), so the counts stay few.
        auditor.count(
            f"launch.{stage}-failed", organization=org, actor=None, outcome="failure", reason=exc.reason.split(" (")[0]
        )
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers={"Cache-Control": "no-store"})

    async def start(request: Request) -> Response:
        org_id = request.path_params["org"]
        org = live.registry.get(org_id)
        if org is None:
            return JSONResponse({"error": "unknown organization"}, status_code=404)
        try:
            if not await launches.admit(org):
                auditor.count("launch.start-failed", organization=org_id, actor=None, outcome="failure", reason="rate")
                return JSONResponse(
                    {"error": "too many launches at this organization; retry in a minute"},
                    status_code=429,
                    headers={"Retry-After": "60", "Cache-Control": "no-store"},
                )
            started = await launches.start(
                org, iss=request.query_params.get("iss"), launch=request.query_params.get("launch")
            )
        except LaunchError as exc:
            return await failed(org_id, "start", exc)
        auditor.count(  # a start is not yet anyone's: counted; the session it leads to is audited on its own
            "launch.started",
            organization=org_id,
            actor=None,
            outcome="success",
            kind="ehr" if request.query_params.get("launch") else "standalone",
        )
        response = RedirectResponse(started.authorize_url, status_code=302, headers={"Cache-Control": "no-store"})
        # Partitioned and SameSite=None: a launch inside the EHR's frame gets it back at the callback
        # (ehrflow_runtime.cookies); the state it binds is single-use and PKCE guards the code.
        set_app_cookie(response, started.cookie_name, started.cookie_value, max_age=600, path=started.cookie_path)
        return response

    async def callback(request: Request) -> Response:
        org_id = request.path_params["org"]
        org = live.registry.get(org_id)
        if org is None:
            return JSONResponse({"error": "unknown organization"}, status_code=404)
        try:
            done = await launches.finish(org, dict(request.query_params), dict(request.cookies))
        except LaunchError as exc:
            return await failed(org_id, "callback", exc)
        await auditor.record(
            "session.started",
            organization=org_id,
            actor=done.session.user,
            outcome="success",
            details={"iss": done.session.iss},
            patient=f"Patient/{done.session.patient}" if done.session.patient else None,
        )
        response = RedirectResponse(
            f"{done.return_url}#session={done.session_id}", status_code=302, headers={"Cache-Control": "no-store"}
        )
        set_app_cookie(  # the API also needs the session id as a bearer: a cookie alone opens nothing
            response,
            cookie_name(done.session_id),
            done.binding,
            max_age=org.launch.session_ttl_s if org.launch else 0,
            path="/",
        )
        return response

    async def current(request: Request) -> Response:
        session_id = _bearer(request)
        session = await sessions.get(session_id, request.cookies.get(cookie_name(session_id or "")))
        if session is None:
            return JSONResponse({"error": "no such session"}, status_code=401)
        return JSONResponse(session.view(), headers={"Cache-Control": "no-store"})

    async def logout(request: Request) -> Response:
        session_id = _bearer(request)
        session = await sessions.get(session_id, request.cookies.get(cookie_name(session_id or "")))
        if session is None or session_id is None:
            return JSONResponse({"error": "no such session"}, status_code=401)
        await sessions.end(session_id)
        await auditor.record(
            "session.ended",
            organization=session.organization_id,
            actor=session.user,
            outcome="success",
            patient=f"Patient/{session.patient}" if session.patient else None,
        )
        response = JSONResponse({"status": "logged out"})
        delete_app_cookie(response, cookie_name(session_id), path="/")
        return response

    async def introspect(request: Request) -> Response:
        service = request.headers.get("x-ehrflow-service")
        grant = policy.authenticate(service, _bearer(request))
        if grant is None or not grant.introspect_sessions:
            return JSONResponse({"error": "not allowed"}, status_code=403 if grant else 401)
        try:
            body = Introspection.model_validate_json(await request.body())
        except ValueError:
            return JSONResponse({"error": "session and binding required"}, status_code=400)
        session = await sessions.get(body.session, body.binding)
        if session is None:
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, **session.view()}, headers={"Cache-Control": "no-store"})

    return [
        Route("/launch/{org}", start, methods=["GET"]),
        Route("/launch/{org}/callback", callback, methods=["GET"]),
        Route("/v1/session", current, methods=["GET"]),
        Route("/v1/session/logout", logout, methods=["POST"]),
        Route("/internal/v1/sessions/introspect", introspect, methods=["POST"]),
    ]
