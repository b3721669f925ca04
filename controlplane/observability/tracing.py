"""Trace context from client to agent: the submit joins the caller's trace, the assignment carries it on.

Spans are created through the OpenTelemetry API; they are recorded when the host process configures an
OpenTelemetry SDK (e.g. `opentelemetry-instrument meshplane up`) and are free no-ops otherwise. Either
way the W3C `traceparent` reaches the agent, so an agent's spans join the client's trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace

_tracer = trace.get_tracer("meshplane.controlplane")


@contextmanager
def submit_span(name: str, metadata: Mapping[str, str], **attributes: str | int) -> Iterator[tuple[str, str]]:
    """A server span for a submit, child of the caller's context; yields (traceparent, tracestate) to store."""
    if "traceparent" not in metadata and not _sdk_configured():
        # No caller's trace and nothing records spans: the span would be invalid and carry nothing on.
        yield "", ""
        return
    parent = propagate.extract(dict(metadata))
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier.get("traceparent", ""), carrier.get("tracestate", "")


def _sdk_configured() -> bool:
    """Whether a tracer provider that may record spans is installed (the API's defaults never do)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)
