"""The database's share of one submit: a lone single-row INSERT, committed with synchronous commit.

Together with the bare unary call's median it is the floor under one caller's submit latency: a submit
is at least one unary call and one commit.
"""

from __future__ import annotations

import statistics
import time
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from controlplane.store.database import asyncpg_dsn

_BODY = b"x" * 64


async def measure_commit(database_url: str, samples: int) -> dict[str, float]:
    """Median and p99 of `samples` sequential autocommitted INSERTs into a scratch table (dropped after)."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    table = f"meshplane_bench_commit_{uuid.uuid4().hex[:12]}"
    try:
        await connection.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        insert = f"INSERT INTO {table} (body) VALUES ($1)"
        await connection.execute(insert, _BODY)  # prepared once, as the plane's statements are
        latencies: list[float] = []
        for _ in range(samples):
            started = time.perf_counter()
            await connection.execute(insert, _BODY)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()
    latencies.sort()
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
    }
