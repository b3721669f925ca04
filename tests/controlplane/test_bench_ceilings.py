"""`meshplane bench`'s ceilings: the bare echo server answers streamed and unary calls, and the figures are
set against the bare call they are made of. (Counts only, never speeds: no wall-clock assertions.)"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest

from controlplane.bench import add_ratios, echo

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
        "one_caller_latency": {"p50_ms": 3.0},
    }
    add_ratios(figures)
    assert figures["batch_submit"]["ratio_to_one_stream_echo"] == 0.5
    assert figures["single_submit"]["ratio_to_64_caller_unary_echo"] == 0.25
    assert figures["one_caller_latency"]["bare_unary_p50_ms"] == 1.1
