"""Who is calling, and the trace context they brought, read from gRPC metadata."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import grpc

# Set by the auth interceptor for the duration of a call.
current_principal: contextvars.ContextVar[str] = contextvars.ContextVar("meshplane_principal", default="anonymous")


@dataclass(frozen=True, slots=True)
class CallContext:
    actor: str
    metadata: dict[str, str]
    request_id: str


def call_context(context: grpc.aio.ServicerContext) -> CallContext:
    metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    principal = current_principal.get()
    request_id = metadata.get("x-request-id", "")
    actor = f"client/{principal}"
    return CallContext(actor=actor, metadata=metadata, request_id=request_id)
