"""Telling the plane's own stalls from its agents' silence."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StallGrace:
    """Whether silence may be judged yet, after the plane's own event loop stalled.

    The plane hears its agents only while its event loop runs. While the process is paused (SIGSTOP, a VM
    freeze) or the loop is blocked, heartbeats wait unread in the sockets, and the first sweep after it would
    find every session silent and every attempt's heartbeat overdue: healthy agents would be cut off for the
    plane's own stall.

    The rule: a timer (the sweep; a closed session's lease, whose agent may be reconnecting) asks to be woken
    `interval` seconds after it went to sleep; waking more than `tolerance` later means the loop did not run
    for that long (a shorter lag is within the slack a lease already leaves a heartbeat). No session, attempt
    or lease is then judged until `grace` after that
    wake-up, when the frames that waited have been read and agents that were frozen too have beaten again;
    then each is judged by its last sign of life as usual (a really dead one is found at most `grace` late).
    """

    tolerance: float
    grace: float
    judge_from: float = 0.0  # monotonic: nothing is judged silent before this

    def woke(self, *, asleep_since: float, interval: float, now: float) -> float:
        """Note a wake-up of the sweep; how long the loop stalled (0.0: no longer than `tolerance`)."""
        stalled_for = now - asleep_since - interval
        if stalled_for <= self.tolerance:
            return 0.0
        self.judge_from = now + self.grace
        return stalled_for

    def may_judge(self, now: float) -> bool:
        return now >= self.judge_from
