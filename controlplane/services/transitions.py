"""Every change of a task's state, in one place.

Functions here mutate a locked `LiveTask`, record what must be written in `TaskWrites`, and return what
must happen after commit (cancellations to send, doorbells to ring). They never touch the database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from controlplane.domain.lifecycle import Decision, Verdict, after_failed_attempt
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import (
    AttemptOutcome,
    TaskError,
    TaskEventType,
    TaskRef,
    TaskState,
)
from controlplane.errors import FailedPrecondition
from controlplane.store.tasks import (
    Assigned,
    AttemptEnd,
    AttemptStart,
    LiveTask,
    NewAttempt,
    NewEvent,
    QueuedTask,
    TaskWrites,
)


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Tell the agent holding an attempt to stop it."""

    session_id: str
    replica_id: str
    ref: TaskRef
    reason: str  # the agent link's code: "cancelled", "timed_out"
    message: str = ""  # what the CancelTask caller gave as its reason ("" otherwise), for the handler to see


@dataclass(slots=True)
class AfterCommit:
    """Side effects a transaction's caller performs once it has committed."""

    changed: set[str] = field(default_factory=set)  # tasks with new events (wake watchers)
    cancels: list[CancelOrder] = field(default_factory=list)
    requeued: dict[str, float] = field(default_factory=dict)  # capability -> earliest due time
    retries: dict[str, float] = field(default_factory=dict)  # capability -> latest retry's due time
    ended: dict[str, int] = field(default_factory=dict)  # terminal state name -> tasks that reached it
    notable: list[tuple[str, str, str, str]] = field(default_factory=list)  # (task, correlation, what, why)
    # For the task latency metrics, from the times stored (see since_submit):
    queue_waits: list[float] = field(default_factory=list)  # per first assignment: seconds since submit
    lifetimes: list[tuple[str, float]] = field(default_factory=list)  # per task ended: (state name, seconds)


def since_submit(create_time: float, now: float) -> float:
    """Seconds from a task's submit to `now`, both as stored. Never negative: the submit may have been
    stamped by another replica, whose clock can be a little ahead of this one's."""
    return max(0.0, now - create_time)


@dataclass(slots=True)
class Transition:
    """One transaction's worth of task changes."""

    now: float
    actor: str
    writes: TaskWrites = field(default_factory=TaskWrites)
    after: AfterCommit = field(default_factory=AfterCommit)
    rng: random.Random | None = None

    # -- helpers

    def _event(self, task: LiveTask, kind: TaskEventType, **fields: object) -> None:
        if task.state.is_terminal:
            name = task.state.name
            self.after.ended[name] = self.after.ended.get(name, 0) + 1
            self.after.lifetimes.append((name, since_submit(task.create_time, self.now)))
            if task.state is not TaskState.SUCCEEDED:
                why = task.error.message if task.error else task.cancel_reason
                self.after.notable.append((task.id, task.correlation_id, name, why))
        task.event_seq += 1
        task.update_time = self.now
        self.writes.live[task.id] = task
        self.writes.events.append(
            NewEvent(
                task_id=task.id,
                sequence=task.event_seq,
                type=kind,
                state=task.state,
                attempt=task.attempt,
                time=self.now,
                actor=self.actor,
                agent_instance_id=task.agent_instance_id,
                **fields,  # type: ignore[arg-type]
            )
        )
        self.after.changed.add(task.id)

    def _end_attempt(self, task: LiveTask, outcome: AttemptOutcome, error: TaskError | None) -> None:
        self.writes.attempt_ends.append(AttemptEnd(task.id, task.attempt, outcome, error, self.now))

    def _order_cancel(self, task: LiveTask, reason: str, message: str = "") -> None:
        if task.session_id:
            self.after.cancels.append(
                CancelOrder(task.session_id, task.replica_id, TaskRef(task.id, task.attempt), reason, message)
            )

    def _release(self, task: LiveTask) -> None:
        task.session_id = ""
        task.replica_id = ""
        task.attempt_deadline = None

    @staticmethod
    def is_current(task: LiveTask, ref: TaskRef) -> bool:
        """Whether `ref` names the attempt the task is running now (anything else is stale)."""
        return task.state.is_active and task.attempt == ref.attempt

    # -- agent-driven

    def assign(self, task: QueuedTask, *, session_id: str, agent_name: str, instance_id: str, replica_id: str) -> int:
        """QUEUED -> ASSIGNED on a session. Returns the new attempt number."""
        attempt = task.attempt + 1
        if attempt == 1:
            self.after.queue_waits.append(since_submit(task.create_time, self.now))
        seq = task.event_seq + 1
        deadline_candidates = [d for d in (task.deadline,) if d is not None]
        if task.start_to_close:
            deadline_candidates.append(self.now + task.start_to_close)
        attempt_deadline = min(deadline_candidates) if deadline_candidates else None
        self.writes.assigned.append(
            Assigned(task.id, attempt, session_id, instance_id, replica_id, attempt_deadline, seq, self.now)
        )
        self.writes.new_attempts.append(NewAttempt(task.id, attempt, agent_name, instance_id, session_id, self.now))
        self.writes.events.append(
            NewEvent(
                task.id,
                seq,
                TaskEventType.ASSIGNED,
                TaskState.ASSIGNED,
                attempt,
                self.now,
                actor=self.actor,
                agent_instance_id=instance_id,
            )
        )
        self.after.changed.add(task.id)
        return attempt

    def start(self, task: LiveTask, ref: TaskRef) -> bool:
        """ASSIGNED -> RUNNING when the agent says the handler began."""
        if task.state is not TaskState.ASSIGNED or task.attempt != ref.attempt:
            return False
        task.state = TaskState.RUNNING
        self.writes.attempt_starts.append(AttemptStart(task.id, task.attempt, self.now))
        self._event(task, TaskEventType.STARTED)
        return True

    def progress(self, task: LiveTask, ref: TaskRef, progress: float, message: str, *, as_event: bool = True) -> bool:
        """The task's progress; also a PROGRESS event unless `as_event` is False (a flood being thinned)."""
        if not self.is_current(task, ref):
            return False
        if task.state is TaskState.ASSIGNED:
            self.start(task, ref)
        task.progress = progress
        task.progress_message = message[:1000]
        if as_event:
            self._event(task, TaskEventType.PROGRESS, progress=progress, message=task.progress_message)
        else:
            task.update_time = self.now
            self.writes.live[task.id] = task
        return True

    def succeed(self, task: LiveTask, ref: TaskRef, output: Payload) -> bool:
        if not self.is_current(task, ref):
            return False
        if task.state is TaskState.ASSIGNED:
            self.start(task, ref)
        task.state = TaskState.SUCCEEDED
        task.end_time = self.now
        task.error = None
        task.progress = 1.0
        task.attempt_deadline = None
        self.writes.outputs[task.id] = output
        self._end_attempt(task, AttemptOutcome.SUCCEEDED, None)
        self._event(task, TaskEventType.SUCCEEDED, progress=1.0)
        return True

    def fail_attempt(
        self, task: LiveTask, error: TaskError, outcome: AttemptOutcome = AttemptOutcome.FAILED
    ) -> Decision:
        """End the current attempt badly; retry with backoff, or end the task per its retry policy."""
        decision = after_failed_attempt(
            attempt=task.attempt,
            policy=task.policy,
            error=error,
            now=self.now,
            deadline=task.deadline,
            rng=self.rng,
        )
        self._end_attempt(task, outcome, error)
        task.error = error
        if outcome is not AttemptOutcome.FAILED:
            self._order_cancel(task, "timed_out")  # the agent may still be running it
        self._release(task)
        task.state = decision.state
        if decision.verdict is Verdict.RETRY:
            task.scheduled_time = decision.retry_at
            sts = task.timeouts.schedule_to_start
            task.start_deadline = decision.retry_at + sts if sts else None
            due = self.after.requeued.get(task.capability)
            self.after.requeued[task.capability] = decision.retry_at if due is None else min(due, decision.retry_at)
            last = self.after.retries.get(task.capability)
            self.after.retries[task.capability] = decision.retry_at if last is None else max(last, decision.retry_at)
        else:
            task.end_time = self.now
        self._event(task, decision.event_type, error=error, message=error.message)
        return decision

    # -- client- and clock-driven

    def cancel(self, task: LiveTask, reason: str, *, message: str = "") -> None:
        """End the task CANCELLED with `reason` recorded; the agent running it is told to stop, with `message`
        (the caller's own words, empty when it gave none) passed on to its handler."""
        if task.state.is_terminal:
            raise FailedPrecondition(f"task {task.id!r} already ended ({task.state.name}); it cannot be cancelled")
        if task.state.is_active:
            self._end_attempt(task, AttemptOutcome.CANCELLED, None)
            self._order_cancel(task, "cancelled", message[:1000])
        task.state = TaskState.CANCELLED
        task.cancel_reason = reason[:1000]
        task.end_time = self.now
        task.attempt_deadline = None
        self._event(task, TaskEventType.CANCELLED, message=task.cancel_reason)

    def time_out(self, task: LiveTask, error: TaskError) -> None:
        """End the task TIMED_OUT (schedule-to-start or overall deadline passed)."""
        if task.state.is_terminal:
            return
        if task.state.is_active:
            self._end_attempt(task, AttemptOutcome.TIMED_OUT, error)
            self._order_cancel(task, "timed_out")
        task.state = TaskState.TIMED_OUT
        task.error = error
        task.end_time = self.now
        task.attempt_deadline = None
        self._event(task, TaskEventType.TIMED_OUT, error=error, message=error.message)

    def lose(self, task: LiveTask, error: TaskError) -> Decision | None:
        """The agent holding the task is gone (lease expired): treat as a retryable failed attempt."""
        if not task.state.is_active:
            return None
        return self.fail_attempt(task, error, AttemptOutcome.LOST)

    def rebind(self, task: LiveTask, ref: TaskRef, *, session_id: str, replica_id: str) -> bool:
        """A reconnected agent still holds this attempt: move it to the new session."""
        if not self.is_current(task, ref):
            return False
        task.session_id = session_id
        task.replica_id = replica_id
        task.update_time = self.now
        self.writes.live[task.id] = task
        return True
