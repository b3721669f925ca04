"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, start on a free port, remove on stop.

When running as root (CI containers), the server runs as the `postgres` user, as PostgreSQL requires.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from controlplane.devtools.ports import free_port


def find_pg_bin() -> Path | None:
    """Directory with initdb/pg_ctl/postgres, or None if PostgreSQL's server is not installed."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "postgres").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and Path(initdb).with_name("postgres").exists():
        return Path(initdb).parent
    return None


class PostgresServer:
    def __init__(self, *, fsync: bool = False, max_connections: int = 300, tls_only: bool = False) -> None:
        """`tls_only`: TCP clients must use TLS (a self-signed certificate); plain connections are rejected."""
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, postgres) not found")
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="meshplane-pg-"))
        self.data_dir = self.root / "data"
        self._fsync = fsync
        self._max_connections = max_connections
        self._tls_only = tls_only
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None
        self.user = "postgres" if self._as_user else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_user:
            command = ["runuser", "-u", self._as_user, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        if self._as_user:
            pw = pwd.getpwnam(self._as_user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if self._tls_only:
            self._require_tls()
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on its data directory (again, after `halt`), and wait until it accepts connections."""
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            f"-c max_connections={self._max_connections}",
            f"-c fsync={'on' if self._fsync else 'off'}",
            "-c synchronous_commit=on",
            "-c shared_buffers=128MB",
        ]
        if self._tls_only:
            options.append("-c ssl=on")
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )

    def halt(self) -> None:
        """Stop the server as an outage would (connections cut, nothing flushed), keeping its data for `resume`."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def _require_tls(self) -> None:
        """A self-signed certificate for the server, and pg_hba rules that turn plain TCP away."""
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                "-keyout", str(self.data_dir / "server.key"), "-out", str(self.data_dir / "server.crt"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
        )
        for name in ("server.key", "server.crt", "pg_hba.conf"):
            path = self.data_dir / name
            path.chmod(0o600)
            if self._as_user:
                pw = pwd.getpwnam(self._as_user)
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run(
            str(self.bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'CREATE DATABASE "{name}"',
        )
        return self.url(name)
