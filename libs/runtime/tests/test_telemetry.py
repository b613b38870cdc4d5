"""Tracing set-up: the SDK only when spans are exported; an incoming trace context passes through either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.propagate import extract, inject

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PROBE = (
    "from opentelemetry.sdk.trace import TracerProvider\n"
    "from ehrflow_runtime.telemetry import configure_telemetry, traced\n"
    "installed = isinstance(configure_telemetry('probe'), TracerProvider)\n"
    "print(installed, traced({}), traced({'traceparent': 'x'}))\n"
)


@pytest.mark.parametrize(
    ("env", "sdk"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_sdk_is_installed_only_when_spans_are_exported(env: dict[str, str], sdk: bool) -> None:
    """A fresh interpreter each: the global tracer provider can be set once per process. A request gets a
    span when the SDK is installed, or when it brought a trace context of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    probe = [sys.executable, "-c", PROBE]  # our own interpreter and code
    out = subprocess.run(probe, env={**clean, **env}, capture_output=True, text=True)  # noqa: S603
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(sdk), str(sdk), "True"]


def test_without_the_sdk_an_incoming_trace_context_is_passed_on_unchanged() -> None:
    tracer = trace.NoOpTracer()
    with tracer.start_as_current_span("webhook", context=extract({"traceparent": TRACEPARENT})):
        carrier: dict[str, str] = {}
        inject(carrier)
    assert carrier["traceparent"] == TRACEPARENT
