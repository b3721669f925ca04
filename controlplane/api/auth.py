"""Bearer-token authentication for every RPC (when tokens are configured)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import grpc

from controlplane.api.context import current_principal
from controlplane.api.errors import abort_with
from controlplane.credentials import credential
from controlplane.errors import Unauthenticated

# Probes and discovery stay open: Kubernetes and grpcurl must reach them without a token.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_DENIED = "missing or invalid bearer token (authorization header)"


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, entries: Sequence[str]) -> None:
        """`entries`: the token list as configured (`name:token` or bare tokens; see controlplane.credentials)."""
        self._tokens = [(c.token.encode(), c.principal) for c in map(credential, entries)]

    def _principal(self, presented: str) -> str | None:
        """Who presents this token, or None if it is not one of ours (every token compared in constant time)."""
        candidate = presented.encode()
        found = None
        for token, principal in self._tokens:
            if hmac.compare_digest(candidate, token):
                found = principal
        return found

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
        principal = self._principal(token.strip()) if scheme.lower() == "bearer" and token else None
        if principal is not None:
            current_principal.set(principal)
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
