"""A tiny TCP proxy that sends each new connection to the next backend in turn, as a TCP load balancer or a
Kubernetes Service address does: only a new connection can reach another backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence


class RoundRobinProxy:
    """Listens on 127.0.0.1 (an ephemeral port); connection n goes to ``backends[n % len(backends)]``.

    ``connections`` lists the backend each accepted connection went to, in order.
    """

    def __init__(self, backends: Sequence[str]) -> None:
        if not backends:
            raise ValueError("no backend")
        self.backends = list(backends)
        self.connections: list[str] = []
        self.address = ""
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> RoundRobinProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backends[len(self.connections) % len(self.backends)]
        self.connections.append(backend)
        host, port = backend.rsplit(":", 1)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        for pipe in (_pipe(reader, upstream_writer), _pipe(upstream_reader, writer)):
            task = asyncio.ensure_future(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        pipes = list(self._pipes)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until either side ends, then close the sink (the other direction's pipe sees it end too)."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        sink.close()


@contextlib.asynccontextmanager
async def round_robin_proxy(backends: Sequence[str]) -> AsyncIterator[RoundRobinProxy]:
    proxy = await RoundRobinProxy(backends).start()
    try:
        yield proxy
    finally:
        await proxy.close()
