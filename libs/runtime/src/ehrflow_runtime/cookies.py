"""Cookies that work where EHRs show SMART apps: inside a frame of the EHR's page, on another site.

Browsers that block third-party cookies still keep a *partitioned* one (CHIPS: ``Partitioned``, which needs
``Secure`` and ``SameSite=None``): it is stored per top-level site, so the app in the EHR's frame gets its
cookie back, and the same app in another EHR's frame (or at top level) gets another jar. ``SameSite=None``
means the browser also sends it on cross-site requests: every state-changing request must therefore carry a
second secret that a cookie alone does not provide (a bearer session id, a CSRF token).

Starlette writes ``Partitioned`` only on Python 3.14+ (``http.cookies`` learnt the attribute then), so it is
appended here.
"""

from __future__ import annotations

from starlette.responses import Response


def set_app_cookie(response: Response, name: str, value: str, *, max_age: int, path: str) -> None:
    """A ``Secure; HttpOnly; SameSite=None; Partitioned`` cookie (``max_age`` 0 deletes it)."""
    response.set_cookie(name, value, max_age=max_age, path=path, secure=True, httponly=True, samesite="none")
    name_, header = response.raw_headers[-1]
    assert name_ == b"set-cookie"
    response.raw_headers[-1] = (name_, header + b"; Partitioned")


def delete_app_cookie(response: Response, name: str, *, path: str) -> None:
    set_app_cookie(response, name, "", max_age=0, path=path)
