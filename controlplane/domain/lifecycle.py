"""What happens to a task after an attempt ends badly: retry, fail, dead-letter or time out.

Pure functions, so the rules can be read (and tested) in one place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from controlplane.domain.tasks import RetryPolicy, TaskError, TaskEventType, TaskState


class Verdict(Enum):
    RETRY = "retry"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    retry_at: float = 0.0  # when the next attempt may start (RETRY)

    @property
    def state(self) -> TaskState:
        return _STATE[self.verdict]

    @property
    def event_type(self) -> TaskEventType:
        return _EVENT[self.verdict]


_STATE = {
    Verdict.RETRY: TaskState.QUEUED,
    Verdict.FAILED: TaskState.FAILED,
    Verdict.DEAD_LETTER: TaskState.DEAD_LETTER,
    Verdict.TIMED_OUT: TaskState.TIMED_OUT,
}
_EVENT = {
    Verdict.RETRY: TaskEventType.RETRYING,
    Verdict.FAILED: TaskEventType.FAILED,
    Verdict.DEAD_LETTER: TaskEventType.DEAD_LETTERED,
    Verdict.TIMED_OUT: TaskEventType.TIMED_OUT,
}


def after_failed_attempt(
    *,
    attempt: int,
    policy: RetryPolicy,
    error: TaskError,
    now: float,
    deadline: float | None,
    rng: random.Random | None = None,
) -> Decision:
    """Decide the task's fate after `attempt` ended with `error` (a handler error, timeout or lost lease)."""
    if not error.retryable or error.code in policy.non_retryable_error_codes:
        return Decision(Verdict.FAILED)
    if attempt >= policy.max_attempts:
        return Decision(Verdict.DEAD_LETTER)
    retry_at = now + policy.backoff_before(attempt + 1, rng)
    if deadline is not None and retry_at >= deadline:
        return Decision(Verdict.TIMED_OUT)
    return Decision(Verdict.RETRY, retry_at)


# Errors the control plane records on a task's behalf.
def lease_lost_error(instance_id: str) -> TaskError:
    return TaskError("lease_expired", f"agent instance {instance_id!r} stopped answering; lease expired", True)


def attempt_timeout_error(seconds: float) -> TaskError:
    return TaskError("start_to_close_timeout", f"attempt ran longer than start_to_close ({seconds:g}s)", True)


def heartbeat_timeout_error(seconds: float) -> TaskError:
    return TaskError("heartbeat_timeout", f"no progress or heartbeat for {seconds:g}s", True)


def schedule_to_start_error(seconds: float) -> TaskError:
    return TaskError("schedule_to_start_timeout", f"no agent started the task within {seconds:g}s", False)


def schedule_to_close_error(seconds: float) -> TaskError:
    return TaskError("schedule_to_close_timeout", f"task did not finish within {seconds:g}s of submission", False)


def agent_forgot_error(instance_id: str) -> TaskError:
    return TaskError("attempt_lost", f"agent instance {instance_id!r} reconnected without this attempt", True)
