"""How a background loop (the sweeper, the dispatcher, NATS reconnecting) logs what goes wrong in it.

A bug is logged with its traceback every time. An outage of a backing service (the database down or refusing
connections, or out of space: store.transient's unavailable_reason and storage_full_reason) is not a bug, and a
loop that runs every second would otherwise log it every second for as long as it lasts: it is logged in one
line when it starts, again at most once a minute while it lasts (with how many failures went unlogged
meanwhile), and once when the loop's work goes through again. A loop of several parts (the sweeper's steps)
names the part that failed: its outage is over once every part that failed has gone through again (parts that
only write, or run now and then, fail in a database that still reads, and must not make it look over in
between).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from controlplane.store.transient import backing_service_reason

REPEAT_EVERY = 60.0  # seconds between the lines of one outage


class LogThrottle:
    """At most one line per `every` seconds about one ongoing thing, counting the lines held back between."""

    def __init__(self, every: float = REPEAT_EVERY, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last_line: float | None = None
        self.held_back = 0  # since the last line

    def due(self) -> int | None:
        """None if a line now would come too soon (it is counted as held back); else a line is due, and this is
        how many were held back since the last one."""
        now = self._clock()
        if self._last_line is not None and now - self._last_line < self._every:
            self.held_back += 1
            return None
        held_back, self.held_back, self._last_line = self.held_back, 0, now
        return held_back

    def reset(self) -> None:
        """The thing is over: the next line is due at once."""
        self._last_line = None
        self.held_back = 0


class LoopErrors:
    def __init__(
        self,
        logger: logging.Logger,
        loop: str,
        *,
        repeat_every: float = REPEAT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._loop = loop
        self._clock = clock
        self._lines = LogThrottle(repeat_every, clock=clock)
        self._outage_since: float | None = None
        self._failing: set[str] = set()  # parts whose last run failed

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    @property
    def unlogged(self) -> int:
        """Failures of the outage in progress since its last line."""
        return self._lines.held_back

    def failed(self, what: str, exc: Exception, *, outcome: str = "skipped", part: str = "") -> None:
        """`what` (e.g. "sweep step deadlines") failed with `exc`: an outage ("`what` `outcome`: why"), or a bug."""
        self._failing.add(part)
        reason = backing_service_reason(exc)
        if reason is None:
            self._logger.error("%s failed", what, exc_info=exc)
        else:
            self.unavailable(f"{what} {outcome}", reason)

    def unavailable(self, line: str, reason: str) -> None:
        """A failure known to be an outage: `line: reason`, unless the outage in progress was logged lately."""
        held_back = self._lines.due()
        if held_back is None:
            return
        if self._outage_since is None:
            self._outage_since = self._clock()
            self._logger.warning("%s: %s", line, reason)
        else:
            self._logger.warning(
                "%s: %s (still, for %.0fs; %d more failure(s) since the last line)",
                line,
                reason,
                self._clock() - self._outage_since,
                held_back,
            )

    def succeeded(self, part: str = "") -> None:
        """The loop's work (or `part` of it) went through: an outage in progress is over once no part fails."""
        self._failing.discard(part)
        if self._outage_since is None or self._failing:
            return
        self._logger.info("%s works again after %.0fs of outage", self._loop, self._clock() - self._outage_since)
        self._outage_since = None
        self._lines.reset()
