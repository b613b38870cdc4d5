"""Public names of the error tree (see ``_exceptions`` for the drawing)."""

from ehrflow_runtime._exceptions import (
    ConfigurationError,
    EhrflowError,
    PermanentError,
    RetryableError,
    UpstreamRejected,
    UpstreamUnavailable,
)

__all__ = [
    "ConfigurationError",
    "EhrflowError",
    "PermanentError",
    "RetryableError",
    "UpstreamRejected",
    "UpstreamUnavailable",
]
