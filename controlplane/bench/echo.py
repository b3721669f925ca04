"""The machine's ceilings: a bare grpc.aio bidirectional echo stream and a bare unary echo call, ~100-byte
messages, no work at all (the first bounds streamed work such as batches, the second single submits).

The echo listens as the plane does (`accept_loops` servers on one port), and concurrent unary callers spread
over the same number of connections as the single-submit load, so the two are compared like for like."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import grpc

from controlplane.api.listeners import Listeners
from controlplane.bench.load import open_channels
from controlplane.runtime import run_event_loop

_METHOD = "/bench.Echo/Stream"
_UNARY_METHOD = "/bench.Echo/Unary"
_MESSAGE = b"x" * 100


async def _serve(port_holder: list[int], ready: asyncio.Event, stop: asyncio.Event, accept_loops: int) -> None:
    async def echo(requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    async def echo_one(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Stream": grpc.stream_stream_rpc_method_handler(echo),
            "Unary": grpc.unary_unary_rpc_method_handler(echo_one),
        },
    )

    def build(reuse_port: bool) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        server.add_generic_rpc_handlers((handler,))
        return server

    listeners = Listeners(build, "127.0.0.1:0", accept_loops)
    port_holder.append(listeners.port)
    await listeners.start()
    ready.set()
    await stop.wait()
    await listeners.stop(0)


def serve_echo(connection: object, accept_loops: int = 1) -> None:
    """Process entry point: serve echo, send the port back over `connection`, stop when it sends anything."""
    from multiprocessing.connection import Connection

    assert isinstance(connection, Connection)

    async def main() -> None:
        port: list[int] = []
        ready, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.ensure_future(_serve(port, ready, stop, accept_loops))
        await ready.wait()
        connection.send(port[0])
        await asyncio.get_running_loop().run_in_executor(None, connection.recv)
        stop.set()
        await server

    run_event_loop(main())


async def _round_trips(target: str, streams: int, seconds: float, window: int) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        call_factory = channel.stream_stream(_METHOD)
        counts = [0] * streams
        deadline = time.perf_counter() + seconds

        async def one(index: int) -> None:
            call = call_factory()
            for _ in range(window):  # keep `window` messages in flight
                await call.write(_MESSAGE)
            while time.perf_counter() < deadline:
                await call.read()
                counts[index] += 1
                await call.write(_MESSAGE)
            await call.done_writing()
            call.cancel()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(streams)))
        return sum(counts) / (time.perf_counter() - started)


def measure_echo(target: str, streams: int, seconds: float, window: int = 32) -> float:
    """Process entry point: round trips per second over `streams` streams."""
    result: list[float] = []

    async def main() -> None:
        result.append(await _round_trips(target, streams, seconds, window))

    run_event_loop(main())
    return result[0]


async def _unary_calls(target: str, callers: int, seconds: float, connections: int) -> tuple[float, float]:
    async with open_channels(target, connections) as channels:
        calls = [channel.unary_unary(_UNARY_METHOD) for channel in channels]
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def one(number: int) -> None:
            call = calls[number % len(calls)]
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                await call(_MESSAGE)
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(one(number) for number in range(callers)))
        return len(latencies) / (time.perf_counter() - started), statistics.median(latencies) * 1000


def measure_unary(target: str, callers: int, seconds: float, connections: int = 1) -> tuple[float, float]:
    """Process entry point: (calls per second, p50 ms) of `callers` concurrent callers of a bare unary echo,
    spread over `connections` connections."""
    result: list[tuple[float, float]] = []

    async def main() -> None:
        result.append(await _unary_calls(target, callers, seconds, connections))

    run_event_loop(main())
    return result[0]
