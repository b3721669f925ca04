"""The submit span: what trace context a submitted task stores, with and without a recording SDK."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.observability import tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def test_without_a_caller_trace_or_an_sdk_nothing_is_stored() -> None:
    with tracing.submit_span("meshplane.SubmitTask", {"x-request-id": "r1"}) as (traceparent, tracestate):
        assert (traceparent, tracestate) == ("", "")


def test_a_caller_trace_is_carried_on_without_an_sdk() -> None:
    metadata = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    with tracing.submit_span("meshplane.SubmitTask", metadata) as (traceparent, tracestate):
        assert traceparent == TRACEPARENT
        assert tracestate == "vendor=1"


def test_a_malformed_caller_trace_is_dropped() -> None:
    with tracing.submit_span("meshplane.SubmitTask", {"traceparent": "00-nonsense"}) as (traceparent, _):
        assert traceparent == ""


@pytest.fixture
def recording_sdk(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


def test_with_an_sdk_a_span_is_recorded_even_without_a_caller_trace(recording_sdk: InMemorySpanExporter) -> None:
    with tracing.submit_span("meshplane.SubmitTask", {}, capability="echo") as (traceparent, _):
        pass
    [span] = recording_sdk.get_finished_spans()
    assert span.name == "meshplane.SubmitTask"
    assert span.attributes == {"capability": "echo"}
    assert traceparent.split("-")[1] == format(span.context.trace_id, "032x"), "the agent joins the plane's span"


def test_with_an_sdk_the_span_is_the_callers_child(recording_sdk: InMemorySpanExporter) -> None:
    with tracing.submit_span("meshplane.SubmitTask", {"traceparent": TRACEPARENT}) as (traceparent, _):
        pass
    [span] = recording_sdk.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert traceparent.split("-")[2] == format(span.context.span_id, "016x"), "the task carries the plane's span"
