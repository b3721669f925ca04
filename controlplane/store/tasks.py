"""Task rows: insert, read, claim, lock for a transition, and write transitions back — in batches.

Repositories only execute statements on the connection they are given; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.domain.payload import Payload
from controlplane.domain.scheduling import Strategy
from controlplane.domain.tasks import (
    Attempt,
    AttemptOutcome,
    RetryPolicy,
    Task,
    TaskError,
    TaskEvent,
    TaskEventType,
    TaskFilter,
    TaskSpec,
    TaskState,
    TaskTarget,
    Timeouts,
)
from controlplane.store.schema import task_attempts, task_events, tasks

# ---------------------------------------------------------------- row <-> domain


def error_to_json(error: TaskError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    data: dict[str, Any] = {"code": error.code, "message": error.message, "retryable": error.retryable}
    if error.details:
        data["details"] = error.details
    return data


def error_from_json(data: dict[str, Any] | None) -> TaskError | None:
    if not data:
        return None
    return TaskError(
        code=str(data.get("code", "")),
        message=str(data.get("message", "")),
        retryable=bool(data.get("retryable", True)),
        details=data.get("details"),
    )


def _spec_from_row(row: Any) -> TaskSpec:
    return TaskSpec(
        target=TaskTarget(
            capability=row.capability,
            agent_name=row.agent_name,
            label_selector=dict(row.label_selector or {}),
            routing_key=row.routing_key,
            strategy=Strategy(row.strategy) if row.strategy else None,
        ),
        input=Payload(bytes(row.input_data), row.input_content_type),
        retry_policy=RetryPolicy(
            max_attempts=row.max_attempts,
            initial_backoff=row.initial_backoff,
            max_backoff=row.max_backoff,
            backoff_multiplier=row.backoff_multiplier,
            non_retryable_error_codes=tuple(row.non_retryable_error_codes or ()),
        ),
        timeouts=Timeouts(
            schedule_to_start=row.schedule_to_start,
            start_to_close=row.start_to_close,
            heartbeat=row.heartbeat_timeout,
            schedule_to_close=row.schedule_to_close,
        ),
        priority=row.priority,
        idempotency_key=row.idempotency_key or "",
        correlation_id=row.correlation_id,
        metadata=dict(row.metadata or {}),
        traceparent=row.traceparent,
        tracestate=row.tracestate,
    )


def task_from_row(row: Any, attempts: list[Attempt] | None = None) -> Task:
    return Task(
        id=row.id,
        spec=_spec_from_row(row),
        state=TaskState(row.state),
        create_time=row.create_time,
        update_time=row.update_time,
        attempt=row.attempt,
        attempts=attempts or [],
        output=Payload(bytes(row.output_data), row.output_content_type or "") if row.output_data is not None else None,
        error=error_from_json(row.error),
        progress=row.progress,
        progress_message=row.progress_message,
        resubmitted_from=row.resubmitted_from,
        cancel_reason=row.cancel_reason,
        end_time=row.end_time,
        scheduled_time=row.scheduled_time,
        session_id=row.session_id,
        agent_instance_id=row.agent_instance_id,
        replica_id=row.replica_id,
    )


def task_to_row(task: Task) -> dict[str, Any]:
    spec = task.spec
    policy = spec.retry_policy
    timeouts = spec.timeouts
    return {
        "id": task.id,
        "capability": spec.target.capability,
        "agent_name": spec.target.agent_name,
        "label_selector": spec.target.label_selector or None,
        "routing_key": spec.target.routing_key,
        "strategy": spec.target.strategy.value if spec.target.strategy else None,
        "input_data": spec.input.data,
        "input_content_type": spec.input.content_type,
        "priority": spec.priority,
        "idempotency_key": spec.idempotency_key or None,
        "max_attempts": policy.max_attempts,
        "initial_backoff": policy.initial_backoff,
        "max_backoff": policy.max_backoff,
        "backoff_multiplier": policy.backoff_multiplier,
        "non_retryable_error_codes": list(policy.non_retryable_error_codes) or None,
        "schedule_to_start": timeouts.schedule_to_start,
        "start_to_close": timeouts.start_to_close,
        "heartbeat_timeout": timeouts.heartbeat,
        "schedule_to_close": timeouts.schedule_to_close,
        "correlation_id": spec.correlation_id,
        "metadata": spec.metadata or None,
        "traceparent": spec.traceparent,
        "tracestate": spec.tracestate,
        "state": int(task.state),
        "attempt": task.attempt,
        "output_data": None,
        "output_content_type": None,
        "error": None,
        "progress": 0.0,
        "progress_message": "",
        "resubmitted_from": task.resubmitted_from,
        "cancel_reason": "",
        "create_time": task.create_time,
        "update_time": task.update_time,
        "end_time": None,
        "scheduled_time": task.scheduled_time if task.scheduled_time is not None else task.create_time,
        "start_deadline": (task.create_time + timeouts.schedule_to_start) if timeouts.schedule_to_start else None,
        "deadline": (task.create_time + timeouts.schedule_to_close) if timeouts.schedule_to_close else None,
        "attempt_deadline": None,
        "session_id": "",
        "agent_instance_id": "",
        "replica_id": "",
        "event_seq": 1,  # the CREATED event
    }


def _attempt_from_row(row: Any) -> Attempt:
    return Attempt(
        attempt=row.attempt,
        agent_name=row.agent_name,
        agent_instance_id=row.agent_instance_id,
        session_id=row.session_id,
        outcome=AttemptOutcome(row.outcome),
        assign_time=row.assign_time,
        error=error_from_json(row.error),
        start_time=row.start_time,
        end_time=row.end_time,
    )


def event_from_row(row: Any, output: Payload | None = None) -> TaskEvent:
    return TaskEvent(
        task_id=row.task_id,
        sequence=row.sequence,
        type=TaskEventType(row.type),
        state=TaskState(row.state),
        attempt=row.attempt,
        time=row.time,
        agent_instance_id=row.agent_instance_id,
        progress=row.progress,
        message=row.message,
        error=error_from_json(row.error),
        output=output,
    )


# ---------------------------------------------------------------- working rows


@dataclass(slots=True)
class LiveTask:
    """The part of a task row that transitions read and change; written back by `write_live`."""

    id: str
    capability: str
    state: TaskState
    attempt: int
    policy: RetryPolicy
    timeouts: Timeouts
    deadline: float | None
    event_seq: int
    session_id: str
    agent_instance_id: str
    replica_id: str
    correlation_id: str
    error: TaskError | None
    progress: float
    progress_message: str
    cancel_reason: str
    update_time: float
    end_time: float | None
    scheduled_time: float
    start_deadline: float | None
    attempt_deadline: float | None
    output: Payload | None = None


_LIVE_COLUMNS = [
    tasks.c.id,
    tasks.c.capability,
    tasks.c.state,
    tasks.c.attempt,
    tasks.c.max_attempts,
    tasks.c.initial_backoff,
    tasks.c.max_backoff,
    tasks.c.backoff_multiplier,
    tasks.c.non_retryable_error_codes,
    tasks.c.schedule_to_start,
    tasks.c.start_to_close,
    tasks.c.heartbeat_timeout,
    tasks.c.schedule_to_close,
    tasks.c.deadline,
    tasks.c.event_seq,
    tasks.c.session_id,
    tasks.c.agent_instance_id,
    tasks.c.replica_id,
    tasks.c.correlation_id,
    tasks.c.error,
    tasks.c.progress,
    tasks.c.progress_message,
    tasks.c.cancel_reason,
    tasks.c.update_time,
    tasks.c.end_time,
    tasks.c.scheduled_time,
    tasks.c.start_deadline,
    tasks.c.attempt_deadline,
]


def _live_from_row(row: Any) -> LiveTask:
    return LiveTask(
        id=row.id,
        capability=row.capability,
        state=TaskState(row.state),
        attempt=row.attempt,
        policy=RetryPolicy(
            max_attempts=row.max_attempts,
            initial_backoff=row.initial_backoff,
            max_backoff=row.max_backoff,
            backoff_multiplier=row.backoff_multiplier,
            non_retryable_error_codes=tuple(row.non_retryable_error_codes or ()),
        ),
        timeouts=Timeouts(
            schedule_to_start=row.schedule_to_start,
            start_to_close=row.start_to_close,
            heartbeat=row.heartbeat_timeout,
            schedule_to_close=row.schedule_to_close,
        ),
        deadline=row.deadline,
        event_seq=row.event_seq,
        session_id=row.session_id,
        agent_instance_id=row.agent_instance_id,
        replica_id=row.replica_id,
        correlation_id=row.correlation_id,
        error=error_from_json(row.error),
        progress=row.progress,
        progress_message=row.progress_message,
        cancel_reason=row.cancel_reason,
        update_time=row.update_time,
        end_time=row.end_time,
        scheduled_time=row.scheduled_time,
        start_deadline=row.start_deadline,
        attempt_deadline=row.attempt_deadline,
    )


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """A queued task as the scheduler sees it when claiming."""

    id: str
    capability: str
    agent_name: str
    label_selector: dict[str, str]
    routing_key: str
    strategy: Strategy | None
    priority: int
    input: Payload
    correlation_id: str
    metadata: dict[str, str]
    traceparent: str
    tracestate: str
    attempt: int
    max_attempts: int
    start_to_close: float
    heartbeat_timeout: float
    deadline: float | None
    event_seq: int


@dataclass(frozen=True, slots=True)
class AttemptStart:
    task_id: str
    attempt: int
    start_time: float


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    task_id: str
    attempt: int
    outcome: AttemptOutcome
    error: TaskError | None
    end_time: float


@dataclass(slots=True)
class NewEvent:
    task_id: str
    sequence: int
    type: TaskEventType
    state: TaskState
    attempt: int
    time: float
    actor: str = ""
    agent_instance_id: str = ""
    progress: float = 0.0
    message: str = ""
    error: TaskError | None = None


@dataclass(frozen=True, slots=True)
class NewAttempt:
    task_id: str
    attempt: int
    agent_name: str
    agent_instance_id: str
    session_id: str
    assign_time: float


@dataclass(frozen=True, slots=True)
class Assigned:
    """A claimed task bound to a session (QUEUED -> ASSIGNED)."""

    task_id: str
    attempt: int
    session_id: str
    agent_instance_id: str
    replica_id: str
    attempt_deadline: float | None
    event_seq: int
    time: float


@dataclass(slots=True)
class TaskWrites:
    """Everything one transaction changes about tasks, written with one statement per kind."""

    assigned: list[Assigned] = field(default_factory=list)
    live: dict[str, LiveTask] = field(default_factory=dict)
    outputs: dict[str, Payload] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    new_attempts: list[NewAttempt] = field(default_factory=list)
    attempt_starts: list[AttemptStart] = field(default_factory=list)
    attempt_ends: list[AttemptEnd] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.assigned
            or self.live
            or self.outputs
            or self.events
            or self.new_attempts
            or self.attempt_starts
            or self.attempt_ends
        )


# ---------------------------------------------------------------- repository


def _bind_names(columns: Iterable[str]) -> dict[str, Any]:
    return {name: sa.bindparam(f"p_{name}") for name in columns}


_LIVE_WRITE_FIELDS = [
    "state",
    "attempt",
    "error",
    "progress",
    "progress_message",
    "cancel_reason",
    "update_time",
    "end_time",
    "scheduled_time",
    "start_deadline",
    "attempt_deadline",
    "session_id",
    "agent_instance_id",
    "replica_id",
    "event_seq",
]

_WRITE_LIVE = tasks.update().where(tasks.c.id == sa.bindparam("p_key")).values(**_bind_names(_LIVE_WRITE_FIELDS))
_WRITE_OUTPUT = (
    tasks.update()
    .where(tasks.c.id == sa.bindparam("p_key"))
    .values(output_data=sa.bindparam("p_output_data"), output_content_type=sa.bindparam("p_output_content_type"))
)
_ASSIGN = (
    tasks.update()
    .where(tasks.c.id == sa.bindparam("p_key"), tasks.c.state == int(TaskState.QUEUED))
    .values(
        state=int(TaskState.ASSIGNED),
        attempt=sa.bindparam("p_attempt"),
        session_id=sa.bindparam("p_session_id"),
        agent_instance_id=sa.bindparam("p_agent_instance_id"),
        replica_id=sa.bindparam("p_replica_id"),
        attempt_deadline=sa.bindparam("p_attempt_deadline"),
        start_deadline=None,
        progress=0.0,
        progress_message="",
        update_time=sa.bindparam("p_update_time"),
        event_seq=sa.bindparam("p_event_seq"),
    )
)
_START_ATTEMPT = (
    task_attempts.update()
    .where(task_attempts.c.task_id == sa.bindparam("p_task_id"), task_attempts.c.attempt == sa.bindparam("p_attempt"))
    .values(start_time=sa.bindparam("p_start_time"))
)
_END_ATTEMPT = (
    task_attempts.update()
    .where(
        task_attempts.c.task_id == sa.bindparam("p_task_id"),
        task_attempts.c.attempt == sa.bindparam("p_attempt"),
        task_attempts.c.end_time.is_(None),
    )
    .values(outcome=sa.bindparam("p_outcome"), error=sa.bindparam("p_error"), end_time=sa.bindparam("p_end_time"))
)


class TaskRepository:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    # -- creation

    async def find_by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, Task]:
        if not keys:
            return {}
        result = await self._conn.execute(sa.select(tasks).where(tasks.c.idempotency_key.in_(list(keys))))
        return {row.idempotency_key: task_from_row(row) for row in result}

    async def insert(self, new_tasks: Sequence[Task], *, actor: str) -> None:
        if not new_tasks:
            return
        await self._conn.execute(tasks.insert(), [task_to_row(t) for t in new_tasks])
        await self.append_events(
            [
                NewEvent(t.id, 1, TaskEventType.CREATED, TaskState.QUEUED, 0, t.create_time, actor=actor)
                for t in new_tasks
            ]
        )

    # -- reads

    async def get(self, task_id: str) -> Task | None:
        row = (await self._conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).first()
        if row is None:
            return None
        attempts = await self._conn.execute(
            sa.select(task_attempts).where(task_attempts.c.task_id == task_id).order_by(task_attempts.c.attempt)
        )
        return task_from_row(row, [_attempt_from_row(a) for a in attempts])

    async def list_page(self, task_filter: TaskFilter, *, limit: int, before_id: str | None) -> list[Task]:
        query = sa.select(tasks).order_by(tasks.c.id.desc()).limit(limit)
        if task_filter.state is not None:
            query = query.where(tasks.c.state == int(task_filter.state))
        if task_filter.capability:
            query = query.where(tasks.c.capability == task_filter.capability)
        if task_filter.correlation_id:
            query = query.where(tasks.c.correlation_id == task_filter.correlation_id)
        if before_id:
            query = query.where(tasks.c.id < before_id)
        return [task_from_row(row) for row in await self._conn.execute(query)]

    async def events_after(self, task_id: str, after_sequence: int, limit: int = 1000) -> list[TaskEvent]:
        result = await self._conn.execute(
            sa.select(task_events)
            .where(task_events.c.task_id == task_id, task_events.c.sequence > after_sequence)
            .order_by(task_events.c.sequence)
            .limit(limit)
        )
        return [event_from_row(row) for row in result]

    async def output_of(self, task_id: str) -> Payload | None:
        row = (
            await self._conn.execute(
                sa.select(tasks.c.output_data, tasks.c.output_content_type).where(tasks.c.id == task_id)
            )
        ).first()
        if row is None or row.output_data is None:
            return None
        return Payload(bytes(row.output_data), row.output_content_type or "")

    async def exists(self, task_id: str) -> bool:
        row = (await self._conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_id))).first()
        return row is not None

    # -- claims

    async def claim_queued(
        self, capabilities: Sequence[str], *, now: float, limit: int, exclude: Sequence[str] = ()
    ) -> list[QueuedTask]:
        """Lock up to `limit` due, queued tasks for these capabilities: priority first, then FIFO.

        On PostgreSQL, rows locked by another replica's claim are skipped (FOR UPDATE SKIP LOCKED).
        """
        query = (
            sa.select(
                tasks.c.id,
                tasks.c.capability,
                tasks.c.agent_name,
                tasks.c.label_selector,
                tasks.c.routing_key,
                tasks.c.strategy,
                tasks.c.priority,
                tasks.c.input_data,
                tasks.c.input_content_type,
                tasks.c.correlation_id,
                tasks.c.metadata,
                tasks.c.traceparent,
                tasks.c.tracestate,
                tasks.c.attempt,
                tasks.c.max_attempts,
                tasks.c.start_to_close,
                tasks.c.heartbeat_timeout,
                tasks.c.deadline,
                tasks.c.event_seq,
            )
            .where(
                tasks.c.state == int(TaskState.QUEUED),
                tasks.c.capability.in_(list(capabilities)),
                tasks.c.scheduled_time <= now,
            )
            .order_by(tasks.c.priority.desc(), tasks.c.id)
            .limit(limit)
        )
        if exclude:
            query = query.where(tasks.c.id.not_in(list(exclude)))
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        result = await self._conn.execute(query)
        return [
            QueuedTask(
                id=row.id,
                capability=row.capability,
                agent_name=row.agent_name,
                label_selector=dict(row.label_selector or {}),
                routing_key=row.routing_key,
                strategy=Strategy(row.strategy) if row.strategy else None,
                priority=row.priority,
                input=Payload(bytes(row.input_data), row.input_content_type),
                correlation_id=row.correlation_id,
                metadata=dict(row.metadata or {}),
                traceparent=row.traceparent,
                tracestate=row.tracestate,
                attempt=row.attempt,
                max_attempts=row.max_attempts,
                start_to_close=row.start_to_close,
                heartbeat_timeout=row.heartbeat_timeout,
                deadline=row.deadline,
                event_seq=row.event_seq,
            )
            for row in result
        ]

    async def next_due_time(self, capabilities: Sequence[str]) -> float | None:
        """The earliest scheduled_time among queued tasks for these capabilities."""
        if not capabilities:
            return None
        value = await self._conn.scalar(
            sa.select(sa.func.min(tasks.c.scheduled_time)).where(
                tasks.c.state == int(TaskState.QUEUED), tasks.c.capability.in_(list(capabilities))
            )
        )
        return float(value) if value is not None else None

    # -- transitions

    async def lock_live(self, task_ids: Iterable[str]) -> dict[str, LiveTask]:
        """Read (and on PostgreSQL lock) these tasks for a transition."""
        ids = sorted(set(task_ids))  # a stable order avoids deadlocks between concurrent batches
        if not ids:
            return {}
        query = sa.select(*_LIVE_COLUMNS).where(tasks.c.id.in_(ids)).order_by(tasks.c.id)
        if self._postgres:
            query = query.with_for_update()
        return {row.id: _live_from_row(row) for row in await self._conn.execute(query)}

    async def lock_live_where(
        self, condition: sa.ColumnElement[bool], *, limit: int, skip_locked: bool = True
    ) -> list[LiveTask]:
        query = sa.select(*_LIVE_COLUMNS).where(condition).order_by(tasks.c.id).limit(limit)
        if self._postgres:
            query = query.with_for_update(skip_locked=skip_locked)
        return [_live_from_row(row) for row in await self._conn.execute(query)]

    async def write(self, writes: TaskWrites) -> None:
        """Apply a batch of transitions: one executemany per statement kind."""
        if writes.assigned:
            await self._conn.execute(
                _ASSIGN,
                [
                    {
                        "p_key": a.task_id,
                        "p_attempt": a.attempt,
                        "p_session_id": a.session_id,
                        "p_agent_instance_id": a.agent_instance_id,
                        "p_replica_id": a.replica_id,
                        "p_attempt_deadline": a.attempt_deadline,
                        "p_update_time": a.time,
                        "p_event_seq": a.event_seq,
                    }
                    for a in writes.assigned
                ],
            )
        if writes.live:
            await self._conn.execute(
                _WRITE_LIVE,
                [
                    {
                        "p_key": t.id,
                        "p_state": int(t.state),
                        "p_attempt": t.attempt,
                        "p_error": error_to_json(t.error),
                        "p_progress": t.progress,
                        "p_progress_message": t.progress_message,
                        "p_cancel_reason": t.cancel_reason,
                        "p_update_time": t.update_time,
                        "p_end_time": t.end_time,
                        "p_scheduled_time": t.scheduled_time,
                        "p_start_deadline": t.start_deadline,
                        "p_attempt_deadline": t.attempt_deadline,
                        "p_session_id": t.session_id,
                        "p_agent_instance_id": t.agent_instance_id,
                        "p_replica_id": t.replica_id,
                        "p_event_seq": t.event_seq,
                    }
                    for t in writes.live.values()
                ],
            )
        if writes.outputs:
            await self._conn.execute(
                _WRITE_OUTPUT,
                [
                    {"p_key": task_id, "p_output_data": p.data, "p_output_content_type": p.content_type}
                    for task_id, p in writes.outputs.items()
                ],
            )
        if writes.new_attempts:
            await self._conn.execute(
                task_attempts.insert(),
                [
                    {
                        "task_id": a.task_id,
                        "attempt": a.attempt,
                        "agent_name": a.agent_name,
                        "agent_instance_id": a.agent_instance_id,
                        "session_id": a.session_id,
                        "outcome": int(AttemptOutcome.RUNNING),
                        "error": None,
                        "assign_time": a.assign_time,
                        "start_time": None,
                        "end_time": None,
                    }
                    for a in writes.new_attempts
                ],
            )
        if writes.attempt_starts:
            await self._conn.execute(
                _START_ATTEMPT,
                [
                    {"p_task_id": s.task_id, "p_attempt": s.attempt, "p_start_time": s.start_time}
                    for s in writes.attempt_starts
                ],
            )
        if writes.attempt_ends:
            await self._conn.execute(
                _END_ATTEMPT,
                [
                    {
                        "p_task_id": e.task_id,
                        "p_attempt": e.attempt,
                        "p_outcome": int(e.outcome),
                        "p_error": error_to_json(e.error),
                        "p_end_time": e.end_time,
                    }
                    for e in writes.attempt_ends
                ],
            )
        await self.append_events(writes.events)

    async def append_events(self, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        await self._conn.execute(
            task_events.insert(),
            [
                {
                    "task_id": e.task_id,
                    "sequence": e.sequence,
                    "type": int(e.type),
                    "state": int(e.state),
                    "attempt": e.attempt,
                    "time": e.time,
                    "actor": e.actor,
                    "agent_instance_id": e.agent_instance_id,
                    "progress": e.progress,
                    "message": e.message[:1000],
                    "error": error_to_json(e.error),
                }
                for e in events
            ],
        )

    # -- sweeps

    async def active_on_replica(self, replica_id: str, *, exclude_sessions: Sequence[str] = ()) -> list[str]:
        query = sa.select(tasks.c.id).where(
            tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]), tasks.c.replica_id == replica_id
        )
        if exclude_sessions:
            query = query.where(tasks.c.session_id.not_in(list(exclude_sessions)))
        return list((await self._conn.scalars(query)).all())

    async def active_ids_of_instance(self, instance_id: str) -> list[str]:
        query = sa.select(tasks.c.id).where(
            tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]),
            tasks.c.agent_instance_id == instance_id,
        )
        return list((await self._conn.scalars(query)).all())

    async def active_ids_of_session(self, session_id: str) -> list[str]:
        query = sa.select(tasks.c.id).where(
            tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]), tasks.c.session_id == session_id
        )
        return list((await self._conn.scalars(query)).all())
