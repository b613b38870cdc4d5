"""OpenTelemetry set-up from the standard ``OTEL_*`` variables. Export is off unless asked for.

- ``OTEL_TRACES_EXPORTER``: ``none`` (default here), ``console``, or ``otlp`` (needs the
  ``opentelemetry-exporter-otlp`` package, configured by its own ``OTEL_EXPORTER_OTLP_*`` variables).
- ``OTEL_SDK_DISABLED=true``: no SDK at all, whatever the exporter.
- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``: read by the SDK's Resource; ``OTEL_TRACES_SAMPLER``
  and ``OTEL_TRACES_SAMPLER_ARG`` by its sampler.

Without an exporter the SDK is not installed: its spans would be recorded for nobody, and recording one
per webhook cost ingest about 60 µs of CPU per notification (docs/benchmarks.md). The API's no-op tracer still
carries an incoming ``traceparent`` through to the records a service publishes, so a trace that an EHR
or a caller started continues downstream either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

log = logging.getLogger(__name__)

_sdk = False
"""Whether this process records spans: an SDK provider was installed, here or before us (the
``opentelemetry-instrument`` launcher). Kept as a flag: asking the API each time reads the environment."""


def configure_telemetry(service_name: str) -> trace.TracerProvider:
    """Install (once per process) and return the global tracer provider."""
    global _sdk
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _sdk = True
        return current
    exporters = [e.strip() for e in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if e.strip()]
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or set(exporters) <= {"none"}:
        return current
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"ehrflow-{service_name}"}))
    for name in exporters:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp but opentelemetry-exporter-otlp is not installed")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name != "none":
            log.warning("unknown OTEL_TRACES_EXPORTER", extra={"exporter": name})
    trace.set_tracer_provider(provider)
    _sdk = True
    return provider


def traced(headers: Mapping[str, str]) -> bool:
    """Whether a request needs a span: an SDK is installed (tracing is on), or the caller sent a trace
    context that the records published for it should carry on. Otherwise a hot path skips the span
    and the context extraction, which cost a few µs even as no-ops."""
    return _sdk or "traceparent" in headers
