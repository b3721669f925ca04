"""A background loop's failures in the log: bugs with their traceback every time; an outage in one line when it
starts, again at most once a minute while it lasts, and one line when it is over."""

from __future__ import annotations

import logging

import pytest

from controlplane.errors import Unavailable
from controlplane.observability.loop_errors import LoopErrors

logger = logging.getLogger("tests.loop_errors")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, bool]]:
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == logger.name]
    caplog.clear()
    return lines


def test_an_outage_is_logged_when_it_starts_once_a_minute_while_it_lasts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    clock = Clock()
    errors = LoopErrors(logger, "the sweeper", clock=clock)
    down = Unavailable("the database connection was lost")

    errors.succeeded()  # nothing was wrong: nothing to say
    errors.failed("sweep step deadlines", down)
    assert _lines(caplog) == [("WARNING", "sweep step deadlines skipped: the database connection was lost", False)]

    for _ in range(3):  # every sweep, each step, for 57 s
        clock.now += 19.0
        errors.failed("sweep step deadlines", down)
        errors.failed("sweep step liveness", down)
    assert _lines(caplog) == []
    assert errors.in_outage

    clock.now += 4.0  # a minute since the last line
    errors.failed("sweep step liveness", down)
    assert _lines(caplog) == [
        (
            "WARNING",
            "sweep step liveness skipped: the database connection was lost "
            "(still, for 61s; 6 more failure(s) since the last line)",
            False,
        )
    ]

    clock.now += 4.0  # 65 s after it started
    errors.succeeded()
    assert _lines(caplog) == [("INFO", "the sweeper works again after 65s of outage", False)]
    assert not errors.in_outage

    clock.now += 1.0
    errors.failed("sweep step deadlines", down)  # a new outage is news again
    assert _lines(caplog) == [("WARNING", "sweep step deadlines skipped: the database connection was lost", False)]


def test_a_bug_is_logged_with_its_traceback_every_time_even_during_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    errors = LoopErrors(logger, "dispatch", clock=Clock())
    errors.failed("a dispatch round", Unavailable("the database connection was lost"))
    _lines(caplog)

    for _ in range(2):
        try:
            raise KeyError("session")
        except KeyError as bug:
            errors.failed("a dispatch round", bug)
    assert _lines(caplog) == [("ERROR", "a dispatch round failed", True)] * 2


def test_a_full_database_is_an_outage_not_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    caplog.set_level(logging.INFO, logger=logger.name)
    errors = LoopErrors(logger, "the dispatcher", clock=Clock())
    full = sqlite3.OperationalError("database or disk is full")
    errors.failed("dispatch round", full)
    errors.failed("dispatch round", full)
    assert _lines(caplog) == [
        ("WARNING", "dispatch round skipped: the SQLite database is out of space (database or disk is full)", False)
    ]
