"""`meshplane bench`'s ceilings: the bare echo server answers streamed and unary calls, and the figures are
set against the bare call they are made of, and a lone commit is measured for the latency floor. (Counts
only, never speeds: no wall-clock assertions.)"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from controlplane.bench import add_ratios, commit, echo
from controlplane.store.database import asyncpg_dsn
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def echo_target() -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=echo.serve_echo, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        yield f"127.0.0.1:{port}"
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.kill()


def test_the_echo_stream_round_trips(echo_target: str) -> None:
    assert echo.measure_echo(echo_target, streams=2, seconds=0.3, window=4) > 0


def test_unary_echo_calls_are_counted_with_their_median(echo_target: str) -> None:
    calls_per_second, p50_ms = echo.measure_unary(echo_target, callers=4, seconds=0.3)
    assert calls_per_second > 0
    assert p50_ms > 0


def test_each_figure_is_set_against_its_own_ceiling() -> None:
    figures = {
        "echo_ceiling": {
            "one_stream_round_trips_per_second": 5000,
            "unary_64_callers_calls_per_second": 4000,
            "unary_one_caller_p50_ms": 1.1,
        },
        "batch_submit": {"tasks_per_second": 2500},
        "single_submit": {"tasks_per_second": 1000},
        "single_submit_via_gateway": {"tasks_per_second": 2000},
        "one_caller_latency": {"p50_ms": 3.0},
        "database_commit": {"p50_ms": 0.4, "p50_after_idle_ms": 0.7},
    }
    add_ratios(figures)
    assert figures["batch_submit"]["ratio_to_one_stream_echo"] == 0.5
    assert figures["single_submit"]["ratio_to_64_caller_unary_echo"] == 0.25
    assert figures["single_submit_via_gateway"]["ratio_to_64_caller_unary_echo"] == 0.5
    assert figures["one_caller_latency"]["bare_unary_p50_ms"] == 1.1
    assert figures["one_caller_latency"]["floor_p50_ms"] == 1.5
    assert figures["one_caller_latency"]["floor_after_idle_p50_ms"] == 1.8


@pytest.mark.postgres
async def test_a_lone_commit_is_measured_on_a_scratch_table_that_is_dropped(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    figures = await commit.measure_commit(url, samples=20, idle_gap=0.001)
    assert figures["samples"] == 20
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["idle_gap_ms"] == 1.0
    assert figures["p50_after_idle_ms"] > 0
    connection = await asyncpg.connect(asyncpg_dsn(make_url(url)))
    try:
        left = await connection.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'meshplane_bench_commit_%'")
    finally:
        await connection.close()
    assert left == []
