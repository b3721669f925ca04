"""Throwaway PostgreSQL for tests (the implementation lives in controlplane.devtools, shared with `meshplane bench`)."""

from controlplane.devtools.postgres import PostgresServer, find_pg_bin

__all__ = ["PostgresServer", "find_pg_bin"]
