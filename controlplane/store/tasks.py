"""Task rows: insert, read, claim, lock for a transition, and write transitions back — in batches.

`TaskRows` is the hot path (submit, claim, transitions): plain set-based SQL through `store.sql.Sql`, so it
runs on a bare driver connection too. `TaskRepository` adds the rest (reads, sweeps) on SQLAlchemy.
Repositories only execute statements on the connection they are given; the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.domain.payload import Payload
from controlplane.domain.scheduling import Strategy
from controlplane.domain.tasks import (
    TERMINAL_STATES,
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
from controlplane.ids import lowest_id_at
from controlplane.store.bulk import Bulk, Col
from controlplane.store.schema import task_attempts, task_events, tasks
from controlplane.store.sql import AlchemySql, Sql

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
        actor=row.actor,
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
    create_time: float  # when it was submitted (the task metrics' start: see services.transitions)
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
    tasks.c.create_time,
]


@dataclass(frozen=True, slots=True)
class StickyKind:
    """Sticky tasks alike in all their placement looks at (routing key, agent name, label selector and
    strategy, as stored): one owner for them all, so one answer whether it can take them now."""

    routing_key: str
    agent_name: str
    label_selector: tuple[tuple[str, str], ...]  # in the order stored
    strategy: str | None

    @classmethod
    def of(cls, task: QueuedTask) -> StickyKind:
        strategy = task.strategy.value if task.strategy else None
        return cls(task.routing_key, task.agent_name, tuple(task.label_selector.items()), strategy)


@dataclass(frozen=True, slots=True)
class Takers:
    """Who could take a claimed task now: the agent names and label sets of the sessions with room, and the
    kinds of sticky task whose owner cannot (full, or connected to another replica).

    A claim passes over tasks none of them could take, in the database (without reading or locking
    them). Names and labels are checked apart, so a task may still come back that no one session could
    take (placement decides); none comes back that one of them could have taken is left out.
    """

    agent_names: tuple[str, ...]
    label_sets: tuple[Mapping[str, str], ...]
    owner_cannot_take: tuple[StickyKind, ...] = ()


@dataclass(slots=True)
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
    create_time: float  # when it was submitted (its queue wait's start: see services.transitions)


@dataclass(slots=True)
class AttemptStart:
    task_id: str
    attempt: int
    start_time: float


@dataclass(slots=True)
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


@dataclass(slots=True)
class NewAttempt:
    task_id: str
    attempt: int
    agent_name: str
    agent_instance_id: str
    session_id: str
    assign_time: float


@dataclass(slots=True)
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


# ---------------------------------------------------------------- hot-path column shapes

_T, _I, _S, _F, _B, _J, _TM = "text", "int", "smallint", "float", "bytes", "json", "time"

TASK_INSERT_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("id", _T), ("capability", _T), ("agent_name", _T), ("label_selector", _J), ("routing_key", _T),
        ("strategy", _T), ("input_data", _B), ("input_content_type", _T), ("priority", _I),
        ("idempotency_key", _T), ("max_attempts", _I), ("initial_backoff", _F), ("max_backoff", _F),
        ("backoff_multiplier", _F), ("non_retryable_error_codes", _J), ("schedule_to_start", _F),
        ("start_to_close", _F), ("heartbeat_timeout", _F), ("schedule_to_close", _F), ("correlation_id", _T),
        ("metadata", _J), ("traceparent", _T), ("tracestate", _T), ("state", _S), ("attempt", _I),
        ("resubmitted_from", _T), ("create_time", _TM), ("update_time", _TM), ("scheduled_time", _TM),
        ("start_deadline", _TM), ("deadline", _TM), ("event_seq", _I), ("session_id", _T),
        ("agent_instance_id", _T), ("replica_id", _T), ("attempt_deadline", _TM),
    ]
)  # fmt: skip
_INSERT_INDEX = {col.name: index for index, col in enumerate(TASK_INSERT_COLS)}
EVENT_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("task_id", _T), ("sequence", _I), ("type", _S), ("state", _S), ("attempt", _I), ("time", _TM),
        ("actor", _T), ("agent_instance_id", _T), ("progress", _F), ("message", _T), ("error", _J),
    ]
)  # fmt: skip
ATTEMPT_INSERT_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("task_id", _T), ("attempt", _I), ("agent_name", _T), ("agent_instance_id", _T), ("session_id", _T),
        ("outcome", _S), ("assign_time", _TM),
    ]
)  # fmt: skip
TASK_COLS = (
    *TASK_INSERT_COLS,
    *(
        Col(name, kind)
        for name, kind in [
            ("output_data", _B), ("output_content_type", _T), ("error", _J), ("progress", _F),
            ("progress_message", _T), ("cancel_reason", _T), ("end_time", _TM),
        ]
    ),
)  # fmt: skip
_KEY = (Col("id", _T),)
_ATTEMPT_KEY = (Col("task_id", _T), Col("attempt", _I))
ASSIGN_SETS = tuple(
    Col(name, kind)
    for name, kind in [
        ("state", _S), ("attempt", _I), ("session_id", _T), ("agent_instance_id", _T), ("replica_id", _T),
        ("attempt_deadline", _TM), ("start_deadline", _TM), ("progress", _F), ("progress_message", _T),
        ("update_time", _TM), ("event_seq", _I),
    ]
)  # fmt: skip
LIVE_SETS = tuple(
    Col(name, kind)
    for name, kind in [
        ("state", _S), ("attempt", _I), ("error", _J), ("progress", _F), ("progress_message", _T),
        ("cancel_reason", _T), ("update_time", _TM), ("end_time", _TM), ("scheduled_time", _TM),
        ("start_deadline", _TM), ("attempt_deadline", _TM), ("session_id", _T), ("agent_instance_id", _T),
        ("replica_id", _T), ("event_seq", _I),
    ]
)  # fmt: skip
LIVE_WITH_OUTPUT_SETS = (*LIVE_SETS, Col("output_data", _B), Col("output_content_type", _T))
ATTEMPT_START_SETS = (Col("start_time", _TM),)
ATTEMPT_END_SETS = (Col("outcome", _S), Col("error", _J), Col("end_time", _TM))
ATTEMPT_FULL_END_SETS = (Col("start_time", _TM), Col("outcome", _S), Col("error", _J), Col("end_time", _TM))
CLAIM_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("id", _T), ("capability", _T), ("agent_name", _T), ("label_selector", _J), ("routing_key", _T),
        ("strategy", _T), ("priority", _I), ("input_data", _B), ("input_content_type", _T),
        ("correlation_id", _T), ("metadata", _J), ("traceparent", _T), ("tracestate", _T), ("attempt", _I),
        ("max_attempts", _I), ("start_to_close", _F), ("heartbeat_timeout", _F), ("deadline", _TM),
        ("event_seq", _I), ("create_time", _TM),
    ]
)  # fmt: skip
LIVE_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("id", _T), ("capability", _T), ("state", _S), ("attempt", _I), ("max_attempts", _I),
        ("initial_backoff", _F), ("max_backoff", _F), ("backoff_multiplier", _F),
        ("non_retryable_error_codes", _J), ("schedule_to_start", _F), ("start_to_close", _F),
        ("heartbeat_timeout", _F), ("schedule_to_close", _F), ("deadline", _TM), ("event_seq", _I),
        ("session_id", _T), ("agent_instance_id", _T), ("replica_id", _T), ("correlation_id", _T),
        ("error", _J), ("progress", _F), ("progress_message", _T), ("cancel_reason", _T),
        ("update_time", _TM), ("end_time", _TM), ("scheduled_time", _TM), ("start_deadline", _TM),
        ("attempt_deadline", _TM), ("create_time", _TM),
    ]
)  # fmt: skip


def _insert_values(task: Task) -> tuple[Any, ...]:
    spec = task.spec
    policy = spec.retry_policy
    timeouts = spec.timeouts
    created = task.create_time
    return (
        task.id,
        spec.target.capability,
        spec.target.agent_name,
        spec.target.label_selector or None,
        spec.target.routing_key,
        spec.target.strategy.value if spec.target.strategy else None,
        spec.input.data,
        spec.input.content_type,
        spec.priority,
        spec.idempotency_key or None,
        policy.max_attempts,
        policy.initial_backoff,
        policy.max_backoff,
        policy.backoff_multiplier,
        list(policy.non_retryable_error_codes) or None,
        timeouts.schedule_to_start,
        timeouts.start_to_close,
        timeouts.heartbeat,
        timeouts.schedule_to_close,
        spec.correlation_id,
        spec.metadata or None,
        spec.traceparent,
        spec.tracestate,
        int(task.state),
        task.attempt,
        task.resubmitted_from,
        created,
        task.update_time,
        task.scheduled_time if task.scheduled_time is not None else created,
        created + timeouts.schedule_to_start if timeouts.schedule_to_start else None,
        created + timeouts.schedule_to_close if timeouts.schedule_to_close else None,
        1,  # the CREATED event
        "",
        "",
        "",
        None,
    )


def _assigned_insert_values(queued: tuple[Any, ...], assigned: Assigned) -> tuple[Any, ...]:
    """A new task's row, bound at once to the session its submit placed it on (see TaskRows.insert)."""
    values = list(queued)
    for name, value in (
        ("state", int(TaskState.ASSIGNED)),
        ("attempt", assigned.attempt),
        ("update_time", assigned.time),
        ("start_deadline", None),
        ("event_seq", assigned.event_seq),
        ("session_id", assigned.session_id),
        ("agent_instance_id", assigned.agent_instance_id),
        ("replica_id", assigned.replica_id),
        ("attempt_deadline", assigned.attempt_deadline),
    ):
        values[_INSERT_INDEX[name]] = value
    return tuple(values)


def _new_attempt_values(a: NewAttempt) -> tuple[Any, ...]:
    return (
        a.task_id,
        a.attempt,
        a.agent_name,
        a.agent_instance_id,
        a.session_id,
        int(AttemptOutcome.RUNNING),
        a.assign_time,
    )


def _event_values(e: NewEvent) -> tuple[Any, ...]:
    return (
        e.task_id,
        e.sequence,
        int(e.type),
        int(e.state),
        e.attempt,
        e.time,
        e.actor,
        e.agent_instance_id,
        e.progress,
        e.message[:1000],
        error_to_json(e.error),
    )


_STATES = {int(state): state for state in TaskState}
# Tasks mostly share a few retry policies and deadline sets: rows reuse one (immutable) value object each
# rather than building two per row read on the hot path. Bounded: cleared when it grows past _MAX_SHARED.
_POLICIES: dict[tuple[Any, ...], RetryPolicy] = {}
_TIMEOUTS: dict[tuple[Any, ...], Timeouts] = {}
_MAX_SHARED = 4096
_V = TypeVar("_V")


def _shared(cache: dict[tuple[Any, ...], _V], key: tuple[Any, ...], build: Callable[..., _V]) -> _V:
    """The value `build(*key)`, made once per distinct key."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= _MAX_SHARED:
            cache.clear()
        value = cache[key] = build(*key)
    return value


def _live_from_dict(row: Mapping[Any, Any]) -> LiveTask:
    return LiveTask(
        id=row["id"],
        capability=row["capability"],
        state=_STATES[row["state"]],
        attempt=row["attempt"],
        policy=_shared(
            _POLICIES,
            (
                row["max_attempts"],
                row["initial_backoff"],
                row["max_backoff"],
                row["backoff_multiplier"],
                tuple(row["non_retryable_error_codes"] or ()),
            ),
            RetryPolicy,
        ),
        timeouts=_shared(
            _TIMEOUTS,
            (row["schedule_to_start"], row["start_to_close"], row["heartbeat_timeout"], row["schedule_to_close"]),
            Timeouts,
        ),
        deadline=row["deadline"],
        event_seq=row["event_seq"],
        session_id=row["session_id"],
        agent_instance_id=row["agent_instance_id"],
        replica_id=row["replica_id"],
        correlation_id=row["correlation_id"],
        error=error_from_json(row["error"]),
        progress=row["progress"],
        progress_message=row["progress_message"],
        cancel_reason=row["cancel_reason"],
        update_time=row["update_time"],
        end_time=row["end_time"],
        scheduled_time=row["scheduled_time"],
        start_deadline=row["start_deadline"],
        attempt_deadline=row["attempt_deadline"],
        create_time=row["create_time"],
    )


def _taken_by(takers: Takers, param: Callable[[Any], str], *, postgres: bool) -> list[str]:
    """Conditions on `t` keeping the tasks that some agent name and some label set of `takers` admit."""
    names = list(takers.agent_names)
    label_sets = [json.dumps(dict(labels), separators=(",", ":")) for labels in takers.label_sets]
    if postgres:
        return [
            f"(t.agent_name = '' OR t.agent_name = ANY({param(names)}::text[]))",
            f"(t.label_selector IS NULL OR t.label_selector <@ ANY({param(label_sets)}::text[]::jsonb[]))",
        ]
    # SQLite: every selector entry is among some label set's entries (json_each over both).
    return [
        f"(t.agent_name = '' OR t.agent_name IN (SELECT value FROM json_each({param(json.dumps(names))})))",
        f"(t.label_selector IS NULL OR EXISTS (SELECT 1 FROM json_each({param('[' + ','.join(label_sets) + ']')}) AS ls"
        " WHERE NOT EXISTS (SELECT 1 FROM json_each(t.label_selector) AS e WHERE NOT EXISTS"
        " (SELECT 1 FROM json_each(ls.value) AS l WHERE l.key = e.key AND l.value = e.value))))",
    ]


def _not_of_kinds(kinds: Sequence[StickyKind], param: Callable[[Any], str], *, postgres: bool) -> str:
    """A condition on `t` leaving out the tasks of these sticky kinds.

    PostgreSQL compares label selectors as jsonb (by value). SQLite compares them as the text stored, a kind's
    selector written back the way the store writes it: a selector stored with its labels in another order is
    not left out (it is then read, and placement passes over it).
    """
    selectors = [json.dumps(dict(kind.label_selector), separators=(",", ":")) for kind in kinds]
    if postgres:
        keys = param([kind.routing_key for kind in kinds])
        names = param([kind.agent_name for kind in kinds])
        strategies = param([kind.strategy for kind in kinds])
        return (
            f"NOT EXISTS (SELECT 1 FROM unnest({keys}::text[], {names}::text[], {param(selectors)}::text[]::jsonb[],"
            f" {strategies}::text[]) AS k(routing_key, agent_name, label_selector, strategy)"
            " WHERE t.routing_key = k.routing_key AND t.agent_name = k.agent_name"
            " AND coalesce(t.label_selector, '{}'::jsonb) = k.label_selector"
            " AND t.strategy IS NOT DISTINCT FROM k.strategy)"
        )
    rows = [
        [kind.routing_key, kind.agent_name, selector, kind.strategy]
        for kind, selector in zip(kinds, selectors, strict=True)
    ]
    return (
        f"NOT EXISTS (SELECT 1 FROM json_each({param(json.dumps(rows))}) AS k"
        " WHERE t.routing_key = json_extract(k.value, '$[0]') AND t.agent_name = json_extract(k.value, '$[1]')"
        " AND coalesce(t.label_selector, '{}') = json_extract(k.value, '$[2]')"
        " AND t.strategy IS json_extract(k.value, '$[3]'))"
    )


# ---------------------------------------------------------------- repository


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


class TaskRows:
    """The hot path's statements on task rows: set-based, plain SQL (see store.sql)."""

    def __init__(self, sql: Sql, *, postgres: bool) -> None:
        self._postgres = postgres
        self._bulk = Bulk(sql, postgres=postgres)

    # -- creation

    async def find_by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        for row in await self._fetch_where_in("idempotency_key", sorted(set(keys)), TASK_COLS):
            found[row["idempotency_key"]] = task_from_row(SimpleNamespace(**row))
        return found

    async def insert(
        self, new_tasks: Sequence[Task], *, actors: Mapping[str, str], placed: TaskWrites | None = None
    ) -> None:
        """Insert new tasks and their CREATED events (one statement on PostgreSQL); `actors`: task id -> actor.

        `placed`: the assignments the submit made itself (only `assigned`, `new_attempts` and their ASSIGNED
        `events`): those tasks are inserted already ASSIGNED, with their attempt, instead of QUEUED.
        """
        if not new_tasks:
            return
        assigned = {a.task_id: a for a in placed.assigned} if placed else {}
        rows = []
        for task in new_tasks:
            values = _insert_values(task)
            binding = assigned.get(task.id)
            rows.append(values if binding is None else _assigned_insert_values(values, binding))
        batch = self._bulk.batch()
        batch.insert("tasks", TASK_INSERT_COLS, rows)
        events = [
            NewEvent(t.id, 1, TaskEventType.CREATED, TaskState.QUEUED, 0, t.create_time, actor=actors[t.id])
            for t in new_tasks
        ]
        if placed:
            events += placed.events
            batch.insert("task_attempts", ATTEMPT_INSERT_COLS, [_new_attempt_values(a) for a in placed.new_attempts])
        batch.insert("task_events", EVENT_COLS, [_event_values(e) for e in events])
        await batch.execute()

    # -- claims

    async def claim_queued(
        self,
        capability: str,
        *,
        now: float,
        limit: int,
        after: tuple[int, str] | None = None,
        takers: Takers | None = None,
    ) -> list[QueuedTask]:
        """Lock up to `limit` due, queued tasks of one capability: priority first, then FIFO; `after`: only
        those queued behind the task with this (priority, id); `takers`: only those they could take.

        Walks the partial index ix_tasks_queue (queued rows only) in order. On PostgreSQL, rows locked by
        another replica's claim are skipped (FOR UPDATE SKIP LOCKED).
        """
        bulk = self._bulk
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return bulk.placeholder(len(params))

        pg = self._postgres
        conditions = [
            "t.state = 1",
            f"t.capability = {param(capability)}",
            f"t.scheduled_time <= to_timestamp({param(now)})"
            if pg
            else f"t.scheduled_time <= {param(round(now * 1_000_000))}",
        ]
        if after is not None:
            priority, task_id = after
            conditions.append(
                f"t.priority <= {param(priority)} AND (t.priority < {param(priority)} OR t.id > {param(task_id)})"
            )
        if takers is not None:
            conditions += _taken_by(takers, param, postgres=pg)
            if takers.owner_cannot_take:
                conditions.append(_not_of_kinds(takers.owner_cannot_take, param, postgres=pg))
        select = f"SELECT {bulk.select_list('t', CLAIM_COLS)} FROM tasks AS t WHERE {' AND '.join(conditions)}"
        sql = f"{select} ORDER BY t.priority DESC, t.id LIMIT {param(limit)}"
        if pg:
            sql += " FOR UPDATE SKIP LOCKED"
        return [
            QueuedTask(
                id=r["id"],
                capability=r["capability"],
                agent_name=r["agent_name"],
                label_selector=r["label_selector"] or {},
                routing_key=r["routing_key"],
                strategy=Strategy(r["strategy"]) if r["strategy"] else None,
                priority=r["priority"],
                input=Payload(r["input_data"], r["input_content_type"]),
                correlation_id=r["correlation_id"],
                metadata=r["metadata"] or {},
                traceparent=r["traceparent"],
                tracestate=r["tracestate"],
                attempt=r["attempt"],
                max_attempts=r["max_attempts"],
                start_to_close=r["start_to_close"],
                heartbeat_timeout=r["heartbeat_timeout"],
                deadline=r["deadline"],
                event_seq=r["event_seq"],
                create_time=r["create_time"],
            )
            for r in await bulk.fetch(sql, params, CLAIM_COLS)
        ]

    # -- transitions

    async def lock_live(self, task_ids: Iterable[str]) -> dict[str, LiveTask]:
        """Read (and on PostgreSQL lock) these tasks for a transition."""
        ids = sorted(set(task_ids))  # a stable order avoids deadlocks between concurrent batches
        rows = await self._fetch_where_in("id", ids, LIVE_COLS, lock=True)
        return {row["id"]: _live_from_dict(row) for row in rows}

    async def deadline_passed(self, now: float) -> bool:
        """Whether some live task's overall, schedule-to-start or attempt deadline is at or before `now`
        (one statement probing the three partial deadline indexes)."""
        probes = (
            "SELECT 1 FROM tasks WHERE state IN (1, 2, 3) AND deadline <= {p}",
            "SELECT 1 FROM tasks WHERE state = 1 AND start_deadline <= {p}",
            "SELECT 1 FROM tasks WHERE state IN (2, 3) AND attempt_deadline <= {p}",
        )
        if self._postgres:
            placeholder, params = "to_timestamp($1)", [now]
        else:
            placeholder, params = "?", [round(now * 1_000_000)] * len(probes)
        sql = "SELECT " + " OR ".join(f"EXISTS ({probe.format(p=placeholder)})" for probe in probes)
        [[found]] = await self._bulk.fetch_raw(sql, params)
        return bool(found)

    async def attempts_of(self, task_ids: Sequence[str]) -> dict[str, tuple[TaskState, int, str]]:
        """id -> (state, current attempt, cancel reason) of those of these tasks that exist."""
        select = "SELECT id, state, attempt, cancel_reason FROM tasks WHERE "
        found: dict[str, tuple[TaskState, int, str]] = {}
        for condition, params in self._one_of("id", sorted(set(task_ids))):
            for row in await self._bulk.fetch_raw(select + condition, params):
                found[row[0]] = (TaskState(row[1]), int(row[2]), str(row[3] or ""))
        return found

    async def instances_owning_active(self, instance_ids: Sequence[str]) -> set[str]:
        """Which of these agent instances own assigned or running tasks."""
        select = "SELECT DISTINCT agent_instance_id FROM tasks WHERE state IN (2, 3) AND "
        owning: set[str] = set()
        for condition, params in self._one_of("agent_instance_id", sorted(set(instance_ids))):
            owning.update(row[0] for row in await self._bulk.fetch_raw(select + condition, params))
        return owning

    async def _fetch_where_in(
        self, column: str, values: Sequence[str], cols: Sequence[Col], *, lock: bool = False
    ) -> list[dict[str, Any]]:
        """Rows whose text `column` is one of `values` (locked FOR UPDATE on PostgreSQL if `lock`)."""
        select = f"SELECT {self._bulk.select_list('t', cols)} FROM tasks AS t WHERE "
        locking = " ORDER BY t.id FOR UPDATE" if lock and self._postgres else ""
        rows: list[dict[str, Any]] = []
        for condition, params in self._one_of(f"t.{column}", values):
            rows += await self._bulk.fetch(select + condition + locking, params, cols)
        return rows

    def _one_of(self, column: str, values: Sequence[str]) -> list[tuple[str, list[Any]]]:
        """`column` is one of `values`, as (condition, parameters): one condition on PostgreSQL, one per
        500 values on SQLite (its bound-parameter limit); none for no values."""
        if not values:
            return []
        if self._postgres:
            return [(f"{column} = ANY($1::text[])", [list(values)])]
        chunks = [list(values[start : start + 500]) for start in range(0, len(values), 500)]
        return [(f"{column} IN ({', '.join('?' for _ in chunk)})", chunk) for chunk in chunks]

    async def write(self, writes: TaskWrites) -> None:
        """Apply a batch of transitions: one set-based statement per kind, all sent together."""
        bulk = self._bulk.batch()
        bulk.update(
            "tasks",
            _KEY,
            ASSIGN_SETS,
            [
                (
                    a.task_id,
                    int(TaskState.ASSIGNED),
                    a.attempt,
                    a.session_id,
                    a.agent_instance_id,
                    a.replica_id,
                    a.attempt_deadline,
                    None,
                    0.0,
                    "",
                    a.time,
                    a.event_seq,
                )
                for a in writes.assigned
            ],
        )  # the claim locked these rows as QUEUED in this same transaction
        # Each changed task is updated once; a success carries its output in the same statement.
        plain, with_output = [], []
        for t in writes.live.values():
            values = (
                t.id,
                int(t.state),
                t.attempt,
                error_to_json(t.error),
                t.progress,
                t.progress_message,
                t.cancel_reason,
                t.update_time,
                t.end_time,
                t.scheduled_time,
                t.start_deadline,
                t.attempt_deadline,
                t.session_id,
                t.agent_instance_id,
                t.replica_id,
                t.event_seq,
            )
            output = writes.outputs.get(t.id)
            if output is None:
                plain.append(values)
            else:
                with_output.append((*values, output.data, output.content_type))
        bulk.update("tasks", _KEY, LIVE_SETS, plain)
        bulk.update("tasks", _KEY, LIVE_WITH_OUTPUT_SETS, with_output)
        bulk.insert("task_attempts", ATTEMPT_INSERT_COLS, [_new_attempt_values(a) for a in writes.new_attempts])
        # An attempt that started and ended in the same batch is written once.
        ends = {(e.task_id, e.attempt): e for e in writes.attempt_ends}
        starts_only = [s for s in writes.attempt_starts if (s.task_id, s.attempt) not in ends]
        started_at = {(s.task_id, s.attempt): s.start_time for s in writes.attempt_starts}
        bulk.update(
            "task_attempts",
            _ATTEMPT_KEY,
            ATTEMPT_START_SETS,
            [(s.task_id, s.attempt, s.start_time) for s in starts_only],
        )
        full, end_only = [], []
        for key, e in ends.items():
            outcome = (int(e.outcome), error_to_json(e.error), e.end_time)
            if key in started_at:
                full.append((e.task_id, e.attempt, started_at[key], *outcome))
            else:
                end_only.append((e.task_id, e.attempt, *outcome))
        # Attempts end once: only the current attempt of a locked task is ever ended.
        bulk.update("task_attempts", _ATTEMPT_KEY, ATTEMPT_FULL_END_SETS, full)
        bulk.update("task_attempts", _ATTEMPT_KEY, ATTEMPT_END_SETS, end_only)
        bulk.insert("task_events", EVENT_COLS, [_event_values(e) for e in writes.events])
        await bulk.execute()

    async def append_events(self, events: Sequence[NewEvent]) -> None:
        await self._bulk.insert("task_events", EVENT_COLS, [_event_values(e) for e in events])


class TaskRepository(TaskRows):
    """Task rows on an SQLAlchemy connection: the hot path's statements, plus reads and sweeps."""

    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        super().__init__(AlchemySql(conn), postgres=postgres)
        self._conn = conn

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

    async def queued_by_capability(self) -> dict[str, int]:
        """How many tasks wait in the queue, per capability (the queue's partial index answers it)."""
        query = (
            sa.select(tasks.c.capability, sa.func.count())
            .where(tasks.c.state == int(TaskState.QUEUED))
            .group_by(tasks.c.capability)
        )
        return {row[0]: int(row[1]) for row in await self._conn.execute(query)}

    # -- retention

    async def purge_ended(self, *, ended_before: float, limit: int) -> int:
        """Delete up to `limit` tasks that ended before `ended_before`, with their events and attempts.

        A task ends after it was created and ids are creation-ordered, so only ids below the cutoff's can
        qualify: the (state, id) index bounds the scan. On PostgreSQL, rows another replica is purging are
        skipped.
        """
        ended = [int(state) for state in TERMINAL_STATES]
        query = (
            sa.select(tasks.c.id)
            .where(
                tasks.c.state.in_(ended),
                tasks.c.id < lowest_id_at(ended_before),
                tasks.c.end_time < ended_before,
            )
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        ids = list((await self._conn.scalars(query)).all())
        if ids:
            await self._conn.execute(task_events.delete().where(task_events.c.task_id.in_(ids)))
            await self._conn.execute(task_attempts.delete().where(task_attempts.c.task_id.in_(ids)))
            await self._conn.execute(tasks.delete().where(tasks.c.id.in_(ids)))
        return len(ids)

    # -- claims

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

    async def lock_live_where(
        self, condition: sa.ColumnElement[bool], *, limit: int, skip_locked: bool = True
    ) -> list[LiveTask]:
        query = sa.select(*_LIVE_COLUMNS).where(condition).order_by(tasks.c.id).limit(limit)
        if self._postgres:
            query = query.with_for_update(skip_locked=skip_locked)
        return [_live_from_dict(row._mapping) for row in await self._conn.execute(query)]

    async def last_due_later(self, now: float) -> dict[str, float]:
        """Per capability, when the last queued task not yet due at `now` comes due (retries in their backoff)."""
        query = (
            sa.select(tasks.c.capability, sa.func.max(tasks.c.scheduled_time))
            .where(tasks.c.state == int(TaskState.QUEUED), tasks.c.scheduled_time > now)
            .group_by(tasks.c.capability)
        )
        return {capability: float(due) for capability, due in await self._conn.execute(query)}

    # -- sweeps

    async def active_on_replica(self, replica_id: str, *, exclude_sessions: Sequence[str] = ()) -> list[str]:
        query = sa.select(tasks.c.id).where(
            tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]), tasks.c.replica_id == replica_id
        )
        if exclude_sessions:
            query = query.where(tasks.c.session_id.not_in(list(exclude_sessions)))
        return list((await self._conn.scalars(query)).all())

    async def sessions_holding_active(self, replica_id: str, *, updated_before: float) -> set[str]:
        """Sessions of this replica with assigned/running tasks last changed before `updated_before`."""
        query = (
            sa.select(tasks.c.session_id)
            .where(
                tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]),
                tasks.c.replica_id == replica_id,
                tasks.c.update_time < updated_before,
            )
            .distinct()
        )
        return set((await self._conn.scalars(query)).all())

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
