"""The error interceptor wraps each method's handler once, and the wrapper maps domain errors."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from controlplane.api.errors import ErrorInterceptor
from controlplane.errors import NotFound

pytestmark = pytest.mark.timeout(10)


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self.code = code
        raise _Aborted(details)


async def _missing(_request: object, _context: object) -> None:
    raise NotFound("task", "t-1")


async def test_each_method_is_wrapped_once_and_rewrapped_if_its_handler_changes() -> None:
    interceptor = ErrorInterceptor()
    handler = grpc.unary_unary_rpc_method_handler(_missing)

    async def service(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    first = await interceptor.intercept_service(service, _Details("/svc/Get"))
    again = await interceptor.intercept_service(service, _Details("/svc/Get"))
    assert first is again and first is not handler

    context = _Context()
    with pytest.raises(_Aborted):
        await again.unary_unary(object(), context)
    assert context.code is grpc.StatusCode.NOT_FOUND

    handler = grpc.unary_unary_rpc_method_handler(_missing)
    assert await interceptor.intercept_service(service, _Details("/svc/Get")) is not first
