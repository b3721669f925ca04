"""Who is calling, and the trace context they brought, read from gRPC metadata."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import grpc

# Set by the auth interceptor for the duration of a call.
current_principal: contextvars.ContextVar[str] = contextvars.ContextVar("meshplane_principal", default="anonymous")


# The column's width (audit_events.correlation_id).
MAX_CORRELATION_ID = 200


@dataclass(frozen=True, slots=True)
class CallContext:
    actor: str
    metadata: dict[str, str]
    correlation_id: str  # from `x-correlation-id` (or `x-request-id`): recorded with what the call changes


def call_context(context: grpc.aio.ServicerContext) -> CallContext:
    metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    principal = current_principal.get()
    correlation_id = metadata.get("x-correlation-id") or metadata.get("x-request-id", "")
    actor = f"client/{principal}"
    return CallContext(actor=actor, metadata=metadata, correlation_id=correlation_id[:MAX_CORRELATION_ID])
