"""ehrflow's error tree. Consumers map the two branches in one place: retry vs dead-letter.

EhrflowError
 ├── RetryableError            transient: try the same thing again later
 │    └── UpstreamUnavailable  an EHR, the auth service or the broker did not answer in time / 5xx
 └── PermanentError            the same input will fail the same way: dead-letter it
      ├── ConfigurationError   an organization record or setting is wrong
      └── UpstreamRejected     an upstream said no (4xx); ``status`` tells which
"""

from __future__ import annotations


class EhrflowError(Exception):
    """Root of every error ehrflow raises on purpose."""


class RetryableError(EhrflowError):
    """Transient: the same call may succeed later."""


class UpstreamUnavailable(RetryableError):
    """An upstream (EHR, auth service, broker) was unreachable, timed out or answered 5xx or 429."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """How long the upstream asked us to wait (its ``Retry-After``), when it said."""


class PermanentError(EhrflowError):
    """The same input will fail again: do not retry."""


class ConfigurationError(PermanentError):
    """Configuration (organization registry, settings) is invalid."""


class UpstreamRejected(PermanentError):
    """An upstream refused the request with a 4xx status; ``resource_type`` is the FHIR type it addressed,
    when known (a 403 on it names the scope that is missing)."""

    def __init__(self, message: str, *, status: int, resource_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.resource_type = resource_type
