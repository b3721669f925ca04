"""Bearer-token authentication for every RPC (when tokens are configured)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence

import grpc

from controlplane.api.context import current_principal
from controlplane.api.errors import abort_with
from controlplane.errors import Unauthenticated

# Probes and discovery stay open: Kubernetes and grpcurl must reach them without a token.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_DENIED = "missing or invalid bearer token (authorization header)"


def principal_of(token: str) -> str:
    """A stable, non-secret name for a token (for audit trails)."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    def _valid(self, presented: str) -> bool:
        candidate = presented.encode()
        return any(hmac.compare_digest(candidate, token) for token in self._tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not self._tokens or handler_call_details.method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token and self._valid(token.strip()):
            current_principal.set(principal_of(token.strip()))
            return await continuation(handler_call_details)
        return _deny(await continuation(handler_call_details))


def _deny(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    if handler is None:
        return None

    async def unary(_request: object, context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, Unauthenticated(_DENIED))

    async def streaming(_request: object, context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, Unauthenticated(_DENIED))

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.stream_unary_rpc_method_handler(streaming, **kwargs)
