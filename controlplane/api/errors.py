"""The one place where the error tree becomes gRPC status codes (with google.rpc details)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from controlplane import errors
from controlplane.observability.grpc_calls import GrpcCalls, MethodCalls
from controlplane.observability.loop_errors import LogThrottle
from controlplane.store.transient import storage_full_reason, unavailable_reason

logger = logging.getLogger(__name__)

DOMAIN = "meshplane.dev"
STORAGE_FULL_LOG_EVERY = 60.0  # seconds between the operator's lines about calls refused for want of space


# Calls refused because the database is full are the client's error, but the operator must hear of it: one
# WARNING line, then at most one a minute, counting the refusals in between.
_storage_full_lines = LogThrottle(STORAGE_FULL_LOG_EVERY)

_CODES: dict[type[errors.MeshplaneError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: errors.MeshplaneError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(error: errors.MeshplaneError) -> status_pb2.Status:
    code = status_code(error)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if isinstance(error, errors.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, errors.FailedPrecondition) and error.violations:
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, errors.NotFound):
        details.append(
            _pack(error_details_pb2.ResourceInfo(resource_type=error.resource_type, resource_name=error.name))
        )
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext, error: errors.MeshplaneError) -> None:
    status = rich_status(error)
    await context.abort(
        status_code(error),
        error.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


async def _abort_internal(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    logger.error("unexpected error in %s", method, exc_info=exc)
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the control plane logs")
    await context.abort(
        grpc.StatusCode.INTERNAL,
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


def backing_service_error(exc: Exception) -> errors.MeshplaneError | None:
    """What a backing service's failure means to the client, when it is not a bug.

    A lost or refused connection is transient (UNAVAILABLE: retry); a database out of space is
    RESOURCE_EXHAUSTED (the call's transaction was rolled back; retrying will not help until space is freed).
    """
    reason = unavailable_reason(exc)
    if reason is not None:
        return errors.Unavailable(f"{reason}; retry")
    reason = storage_full_reason(exc)
    if reason is not None:
        held_back = _storage_full_lines.due()
        if held_back is not None:
            more = f" ({held_back} more since the last line)" if held_back else ""
            logger.warning("refusing calls that write: %s%s", reason, more)
        return errors.ResourceExhausted(f"{reason}; nothing of this call was stored")
    return None


class _Undecodable:
    """A request whose bytes did not decode (e.g. JSON nested past protobuf's depth limit): the handler
    answers INVALID_ARGUMENT instead of grpc's UNKNOWN with a Python class name."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument.of("request", f"cannot be decoded: {self.reason}")


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(str(exc) or "not a valid protobuf message")

    return decode


def _wrap_unary(
    method: str, behavior: Callable[..., Awaitable[Any]], calls: MethodCalls
) -> Callable[..., Awaitable[Any]]:
    """`behavior` with its errors mapped, and each call counted by its status code and timed (for a stream
    handled as a coroutine, `calls` is untimed: it counts the stream's end)."""

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = perf_counter()
        code = "OK"
        try:
            if type(request) is _Undecodable:
                raise request.error()
            return await behavior(request, context)
        except errors.MeshplaneError as error:
            code = status_code(error).name
            await abort_with(context, error)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError) or _is_abort(exc):
                code = _aborted_code(context)
                raise
            known = backing_service_error(exc)
            if known is not None:
                code = status_code(known).name
                await abort_with(context, known)
            code = "INTERNAL"
            await _abort_internal(context, method, exc)
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client went away, or its deadline passed
            raise
        finally:
            calls.handled(code, perf_counter() - started)
        return None

    return wrapper


def _wrap_streaming(method: str, behavior: Callable[..., Any], calls: MethodCalls) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            code = "OK"
            try:
                if type(request) is _Undecodable:
                    raise request.error()
                async for item in behavior(request, context):
                    yield item
            except errors.MeshplaneError as error:
                code = status_code(error).name
                await abort_with(context, error)
            except Exception as exc:
                if _is_abort(exc):
                    code = _aborted_code(context)
                    raise
                known = backing_service_error(exc)
                if known is not None:
                    code = status_code(known).name
                    await abort_with(context, known)
                code = "INTERNAL"
                await _abort_internal(context, method, exc)
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"  # the client went away, or its deadline passed
                raise
            finally:
                calls.ended(code)

        return generator
    return _wrap_unary(method, behavior, calls)


def _aborted_code(context: grpc.aio.ServicerContext) -> str:
    """The status a handler's own `context.abort` set."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _is_abort(exc: BaseException) -> bool:
    return type(exc).__name__ == "AbortError"


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps MeshplaneError subclasses to status codes; anything else becomes INTERNAL (and is logged).

    Every call the servicers answer passes through here, so here each is counted in `calls` (by method and
    status code; unary calls timed too): see observability.grpc_calls. The listeners' servers share one.
    """

    def __init__(self, calls: GrpcCalls | None = None) -> None:
        self._calls = calls if calls is not None else GrpcCalls()
        # method -> (the service's handler, its wrapped form): wrapped once, not on every call
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, _wrap(method, handler, self._calls))
        return cached[1]


def _wrap(method: str, handler: grpc.RpcMethodHandler, calls: GrpcCalls) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(method, handler.unary_unary, calls.method(method, timed=True)),
            request_deserializer=_decoding(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_streaming(method, handler.unary_stream, calls.method(method, timed=False)),
            request_deserializer=_decoding(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_streaming(method, handler.stream_stream, calls.method(method, timed=False)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
