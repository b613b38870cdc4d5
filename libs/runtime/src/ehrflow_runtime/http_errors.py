"""Exception handlers every service installs: a dependency failing is a 503 with a reason, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from ehrflow_runtime.errors import RetryableError
from ehrflow_runtime.outcomes import operation_outcome

log = logging.getLogger("ehrflow.http")


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.error("dependency unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
    return operation_outcome(
        503, "transient", f"a dependency is unavailable ({type(exc).__name__}); retry", headers={"Retry-After": "5"}
    )


DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (RedisError, RetryableError, ConnectionError, TimeoutError)
"""What a dependency failing raises: answered 503, never 500."""


def exception_handlers() -> Mapping[type[Exception], ExceptionHandler]:
    return dict.fromkeys(DEPENDENCY_ERRORS, _unavailable)
