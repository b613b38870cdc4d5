"""The errors of model calls, and what adapters share to raise them."""

from __future__ import annotations

import httpx

from ehrflow_inference.contract import Model
from ehrflow_runtime.errors import PermanentError, RetryableError
from ehrflow_runtime.retry_tiers import retry_after_s


class ModelUnavailable(RetryableError):
    """The model could not answer now (timeout, refused, overloaded, circuit open)."""


class InvalidModelOutput(PermanentError):
    """The model answered something the contract does not allow: an outcome, never a draft."""


class RetryableCall(Exception):
    """Raised by an adapter's single attempt when another attempt may succeed (429, 5xx, timeout)."""

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (capped at a minute: a model call waits for it in place)."""
    return retry_after_s(response.headers.get("retry-after"), cap_s=60.0)


def secret_header(spec: Model) -> dict[str, str]:
    """``Authorization: Bearer …`` from the contract's ``credentials_file``, read at each call so a rotated
    file takes effect at once; nothing when there is none."""
    if spec.credentials_file is None:
        return {}
    return {"Authorization": f"Bearer {spec.credentials_file.read_text(encoding='utf-8').strip()}"}
