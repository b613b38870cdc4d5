"""The headers each record carries to Kafka."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

from ehrflow_ingest.sink import headers


def test_a_record_outside_any_trace_carries_its_content_type_only() -> None:
    assert headers() == [("content-type", b"application/json")]


def test_a_record_inside_a_trace_carries_it_on() -> None:
    with TracerProvider().get_tracer("test").start_as_current_span("notification") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        carried = dict(headers())
    assert carried["content-type"] == b"application/json"
    assert carried["traceparent"].decode().split("-")[1] == trace_id
