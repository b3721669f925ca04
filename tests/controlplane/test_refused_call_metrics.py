"""Calls the auth interceptor refuses (no valid bearer token) are counted with the others, as UNAUTHENTICATED:
an operator watching the call metrics sees a brute force or a misconfigured client. The auth interceptor used to
come first and answer them itself, out of sight of the error interceptor, where calls are counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from controlplane.api.auth import AuthInterceptor
from controlplane.api.errors import ErrorInterceptor
from controlplane.observability.grpc_calls import GrpcCalls
from meshplane.v1 import task_service_pb2
from tests.controlplane.helpers import submit_request, tasks_stub
from tests.controlplane.test_metrics_operator import CONNECT, GET, SUBMIT, WATCH, sample, scrape
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

HANDLED = "meshplane_grpc_server_handled_total"
SECONDS = "meshplane_grpc_server_handling_seconds"
WRONG = (("authorization", "Bearer wrong"),)
RIGHT = (("authorization", "Bearer s3cret"),)


async def test_refused_calls_are_counted_as_unauthenticated_by_method(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, auth_tokens=["s3cret"], metrics_listen="127.0.0.1:0") as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        tasks = tasks_stub(channel)
        for metadata in (WRONG, WRONG, None):  # a wrong token twice, then none at all
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await tasks.SubmitTask(submit_request(), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=""), metadata=WRONG)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, "refused before its request is looked at"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [_ async for _ in tasks.WatchTask(task_service_pb2.WatchTaskRequest(task_id="t-1"), metadata=WRONG)]
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        intruder = LinkAgent(plane.address, token="wrong")  # a bidirectional stream
        await intruder.connect(wait=False)
        await asyncio.wait_for(intruder.ended.wait(), 10)
        assert intruder.end_code == grpc.StatusCode.UNAUTHENTICATED
        accepted = await tasks.SubmitTask(submit_request(), metadata=RIGHT)
        assert accepted.task.id
        samples = scrape(plane)
        await intruder.kill()

    assert sample(samples, HANDLED, method=SUBMIT, code="UNAUTHENTICATED") == 3
    assert sample(samples, HANDLED, method=SUBMIT, code="OK") == 1, "an accepted call is counted once"
    assert sample(samples, HANDLED, method=GET, code="UNAUTHENTICATED") == 1
    assert sample(samples, HANDLED, method=GET, code="INVALID_ARGUMENT") is None
    assert sample(samples, HANDLED, method=WATCH, code="UNAUTHENTICATED") == 1
    assert sample(samples, HANDLED, method=CONNECT, code="UNAUTHENTICATED") == 1
    assert sample(samples, f"{SECONDS}_count", method=SUBMIT) == 4, "refused unary calls are timed, none twice"
    assert sample(samples, f"{SECONDS}_count", method=WATCH) is None, "streams are not timed"


# ---------------------------------------------------------------- the interceptors alone, without a server


class _Details:
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class _AbortError(Exception):
    """Named as grpc.aio's own, which is how the error interceptor recognises a handler's abort."""


_AbortError.__name__ = "AbortError"


class _Context:
    def __init__(self) -> None:
        self.status: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self.status = code
        raise _AbortError(details)

    def code(self) -> grpc.StatusCode | None:
        return self.status


async def _served(_request: object, _context: object) -> str:
    return "served"


async def _service(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(_served)


async def _call(handler: grpc.RpcMethodHandler) -> grpc.StatusCode | str:
    context = _Context()
    try:
        return await handler.unary_unary(b"\xff not a request", context)
    except _AbortError:
        assert context.status is not None
        return context.status


async def _through(
    calls: GrpcCalls, metadata: tuple[tuple[str, str], ...], service: Any = _service
) -> grpc.RpcMethodHandler:
    """The handler a server with both interceptors (the error interceptor first, as the plane orders them) finds
    for a call."""
    auth, errors = AuthInterceptor(["s3cret"]), ErrorInterceptor(calls)

    async def inner(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return await auth.intercept_service(service, details)

    return await errors.intercept_service(inner, _Details("/svc/Get", metadata))


async def test_the_error_interceptor_answers_and_counts_a_refusal_once() -> None:
    calls = GrpcCalls()
    assert await _call(await _through(calls, WRONG)) is grpc.StatusCode.UNAUTHENTICATED
    assert await _call(await _through(calls, RIGHT)) == "served"
    assert calls.handled_total() == {("svc/Get", "UNAUTHENTICATED"): 1, ("svc/Get", "OK"): 1}


async def test_without_an_error_interceptor_a_refusal_is_still_answered() -> None:
    """The auth interceptor answers a refusal itself: it does not depend on the error interceptor."""
    handler = await AuthInterceptor(["s3cret"]).intercept_service(_service, _Details("/svc/Get", WRONG))
    assert await _call(handler) is grpc.StatusCode.UNAUTHENTICATED
