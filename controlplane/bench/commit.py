"""The database's share of one submit: a lone single-row INSERT, committed with synchronous commit.

Together with the bare unary call's median it is the floor under one caller's submit latency: a submit
is at least one unary call and one commit.

Measured twice: back to back, and each after an idle gap. One caller's submits arrive milliseconds apart,
and on a virtual machine a commit that wakes an idle database (its backend, the WAL flush, the caller) costs
several times one that follows the last at once; the second figure is that commit.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from controlplane.store.database import asyncpg_dsn

_BODY = b"x" * 64
IDLE_GAP = 0.002  # seconds before each paced commit: one caller at the latency target's pace


async def measure_commit(database_url: str, samples: int, *, idle_gap: float = IDLE_GAP) -> dict[str, float]:
    """Median and p99 of `samples` sequential autocommitted INSERTs into a scratch table (dropped after), and
    the median of a quarter as many, each sent after `idle_gap` seconds of idleness."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    table = f"meshplane_bench_commit_{uuid.uuid4().hex[:12]}"
    try:
        await connection.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        insert = f"INSERT INTO {table} (body) VALUES ($1)"
        await connection.execute(insert, _BODY)  # prepared once, as the plane's statements are
        back_to_back = await _time_inserts(connection, insert, samples, gap=0.0)
        after_idle = await _time_inserts(connection, insert, max(1, samples // 4), gap=idle_gap)
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(back_to_back), 3),
        "p99_ms": round(back_to_back[min(len(back_to_back) - 1, int(len(back_to_back) * 0.99))], 3),
        "idle_gap_ms": round(idle_gap * 1000, 3),
        "p50_after_idle_ms": round(statistics.median(after_idle), 3),
    }


async def _time_inserts(connection: asyncpg.Connection, insert: str, count: int, *, gap: float) -> list[float]:
    latencies: list[float] = []
    for _ in range(count):
        if gap:
            await asyncio.sleep(gap)
        started = time.perf_counter()
        await connection.execute(insert, _BODY)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return latencies
