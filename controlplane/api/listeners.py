"""The plane's gRPC listeners: several grpc.aio servers sharing one TCP port.

A grpc.aio server accepts calls one at a time: it asks the core for the next call only once the event loop has
handed it the last one, a few loop turns later. On a busy plane, whose loop turns are long, calls then wait to
be accepted far longer than they take (the benchmark's 64 single-submit callers spent ~90% of each call there).
Servers bound to the same port (SO_REUSEPORT) each accept on their own, and the kernel spreads connections over
them; calls that share one connection still share one server.

SO_REUSEPORT would also let another process bind the port we listen on and take part of our traffic. So before
binding, the port is probed without it: a port someone listens on is refused, as with a single server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable

import grpc


class PortInUse(OSError):
    pass


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a TCP listen address such as `0.0.0.0:50051` or `[::]:0`; None for anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:  # unix:/path, unix:///path
        return None
    return host.strip("[]"), int(port)


def ensure_port_free(host: str, port: int) -> None:
    """Raise PortInUse when some socket already listens on (host, port)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # the servers' own bind reports an unknown host
    for family, kind, proto, _, sockaddr in addresses:
        with contextlib.closing(socket.socket(family, kind, proto)) as probe:
            # SO_REUSEADDR, as gRPC's own sockets: only a listening socket (not TIME_WAIT leftovers) conflicts.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(f"{host}:{port} is already in use (another control plane?)") from exc
                # Another failure (an address family this host lacks): gRPC skips it as well.


class Listeners:
    """`count` servers made by `build(reuse_port)`, listening on `address` (one for a non-TCP address)."""

    def __init__(
        self,
        build: Callable[[bool], grpc.aio.Server],
        address: str,
        count: int,
        credentials: Callable[[], grpc.ServerCredentials] | None = None,
    ) -> None:
        """`credentials` makes each server's TLS credentials (see api.tls); None serves plaintext."""
        tcp = split_address(address)
        if tcp is not None and tcp[1]:
            ensure_port_free(*tcp)

        def bind(server: grpc.aio.Server, where: str) -> int:
            port: int = (
                server.add_insecure_port(where) if credentials is None else server.add_secure_port(where, credentials())
            )
            return port

        first = build(tcp is not None and count > 1)
        self.port = bind(first, address)
        if self.port == 0:
            raise OSError(f"could not listen on {address}")
        self._servers = [first]
        if tcp is None or count <= 1:
            return
        host = tcp[0]
        bound = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        for _ in range(count - 1):
            server = build(True)
            if bind(server, bound) != self.port:
                raise OSError(f"could not share {bound} with another gRPC server")
            self._servers.append(server)

    def __len__(self) -> int:
        return len(self._servers)

    async def start(self) -> None:
        """Start every server, or none: when one fails to start, those already serving are stopped."""
        started: list[grpc.aio.Server] = []
        try:
            for server in self._servers:
                await server.start()
                started.append(server)
        except BaseException:
            await asyncio.gather(*(server.stop(None) for server in started), return_exceptions=True)
            raise

    async def stop(self, grace: float | None) -> None:
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
