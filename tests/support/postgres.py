"""Throwaway PostgreSQL for tests (the implementation lives in controlplane.devtools, shared with `meshplane bench`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from controlplane.devtools.postgres import PostgresServer, find_pg_bin
from tests.support.toolchain import toolchain_missing

__all__ = ["PostgresServer", "find_pg_bin", "throwaway_postgres"]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A started server on a free port, stopped and deleted at the end (a toolchain failure without binaries)."""
    if find_pg_bin() is None:
        toolchain_missing("PostgreSQL server binaries (initdb/postgres) not found: apt-get install postgresql")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
