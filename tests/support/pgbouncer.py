"""A PgBouncer in front of a throwaway PostgreSQL, on a free port, for tests.

As root (CI containers) it runs as the `postgres` user: PgBouncer refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from controlplane.devtools.postgres import PostgresServer
from tests.support.ports import free_port


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (str(p) for p in (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")) if p.is_file()), None
    )


class PgBouncer:
    def __init__(self, binary: str, server: PostgresServer, *, pool_mode: str = "session") -> None:
        self.binary = binary
        self.server = server
        self.pool_mode = pool_mode
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="meshplane-pgbouncer-"))
        self._as_user = "postgres" if os.geteuid() == 0 else None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> PgBouncer:
        config = self.root / "pgbouncer.ini"
        (self.root / "users.txt").write_text(f'"{self.server.user}" ""\n')
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.root / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\nmax_client_conn = 500\ndefault_pool_size = 40\n"
            # One database per test: idle server connections go soon, or they would add up to the server's limit.
            "server_idle_timeout = 3\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
        )
        command = [self.binary, str(config)]
        if self._as_user:
            pw = pwd.getpwnam(self._as_user)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            command = ["runuser", "-u", self._as_user, "--", *command]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "pgbouncer.log").read_text() if (self.root / "pgbouncer.log").exists() else ""
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start: {log[-2000:]}") from None
                time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.server.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: runuser and pgbouncer both
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
