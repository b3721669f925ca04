"""A standalone nats-server for multi-replica tests (the real binary, on a random port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from controlplane.bus.embedded import EmbeddedNats, find_nats_server
from controlplane.devtools.ports import free_port
from tests.support.eventually import eventually


@asynccontextmanager
async def nats_server(work_dir: Path) -> AsyncIterator[str]:
    server = EmbeddedNats(work_dir)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@asynccontextmanager
async def tls_nats_server(
    work_dir: Path, cert: Path, key: Path, client_ca: Path | None = None, port: int | None = None
) -> AsyncIterator[str]:
    """The real nats-server serving TLS only with `cert`/`key` (and requiring client certificates `client_ca`
    signed, if given) on `port` (default: a free one): its tls:// URL."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-l", str(work_dir / "nats-server.log")]
    args += ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    if client_ca is not None:
        args += ["--tlsverify", "--tlscacert", str(client_ca)]
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )

    async def listening() -> bool:
        assert process.returncode is None, (work_dir / "nats-server.log").read_text(errors="replace")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    try:
        await eventually(listening, timeout=15, message="the TLS nats-server listens")
        yield f"tls://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
