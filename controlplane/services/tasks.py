"""Task use cases: submit (group-committed), read, list, cancel, resubmit, history."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane import paging
from controlplane.batching import Batcher, FlushGate
from controlplane.clock import wall_clock
from controlplane.domain.tasks import (
    Attempt,
    AttemptOutcome,
    RetryPolicy,
    RetryRequest,
    SubmitRequest,
    Submitted,
    Task,
    TaskEvent,
    TaskEventType,
    TaskFilter,
    TaskSpec,
    TaskState,
    TaskTarget,
    Timeouts,
    TimeoutsRequest,
)
from controlplane.errors import FailedPrecondition, NotFound, PreconditionViolation, ResourceExhausted
from controlplane.ids import new_id
from controlplane.lifecycle import Component, run_to_completion
from controlplane.services.effects import Effects
from controlplane.services.transitions import AfterCommit, Transition
from controlplane.settings import Settings
from controlplane.store.sql import DuplicateKey
from controlplane.store.tasks import TaskWrites
from controlplane.store.unit_of_work import Store, UnitOfWork
from controlplane.validation import Violations

logger = logging.getLogger(__name__)

MAX_BATCH_SUBMIT = 1000
MAX_CANCEL_REASON = 1000  # characters
MAX_DURATION_SECONDS = 366 * 24 * 3600  # timeouts and backoffs: a year at most (a deadline stays a date)
MAX_BACKOFF_MULTIPLIER = 100
EVENTS_PAGE = 1000  # events read at once (WatchTask reads page after page)


class PlacedWork(Protocol):
    """Assignments a submit made itself: written with its tasks, sent once it commits."""

    writes: TaskWrites

    def send(self) -> None: ...

    def release(self) -> None: ...


class SyncMatch(Protocol):
    def place_new(self, tasks: Sequence[Task], now: float) -> PlacedWork | None:
        """Bind some of `tasks` (being submitted) to sessions with room; None if none can be placed now."""
        ...


def _show_assigned(tasks: Sequence[Task], writes: TaskWrites) -> None:
    """The submit's answer shows the tasks it placed as they were committed: ASSIGNED, with their attempt."""
    by_id = {task.id: task for task in tasks}
    attempts = {a.task_id: a for a in writes.new_attempts}
    for assigned in writes.assigned:
        task = by_id[assigned.task_id]
        new = attempts[assigned.task_id]
        task.state = TaskState.ASSIGNED
        task.attempt = assigned.attempt
        task.update_time = assigned.time
        task.session_id = assigned.session_id
        task.agent_instance_id = assigned.agent_instance_id
        task.replica_id = assigned.replica_id
        task.attempts = [
            Attempt(
                new.attempt,
                new.agent_name,
                new.agent_instance_id,
                new.session_id,
                AttemptOutcome.RUNNING,
                new.assign_time,
            )
        ]


@dataclass(frozen=True, slots=True)
class _SubmitBatch:
    specs: list[TaskSpec]
    actor: str
    resubmitted_from: str = ""


# What one submit call gets from a flush: its tasks, or why its idempotency keys were refused.
_Outcome = list[Submitted] | FailedPrecondition


def _submitted(outcome: _Outcome) -> list[Submitted]:
    if isinstance(outcome, FailedPrecondition):
        raise outcome
    return outcome


def _reused_keys(specs: Sequence[TaskSpec], by_key: dict[str, Task]) -> FailedPrecondition | None:
    """Refuse a call that gives an idempotency key already standing for other work (stored, earlier in this
    flush, or earlier in the same call): the caller would otherwise get back a task that is not theirs."""
    problems: list[PreconditionViolation] = []
    in_call: dict[str, tuple[int, TaskSpec]] = {}
    for index, spec in enumerate(specs):
        key = spec.idempotency_key
        if not key:
            continue
        subject = f"requests[{index}].idempotency_key" if len(specs) > 1 else "idempotency_key"
        earlier = in_call.setdefault(key, (index, spec))
        if earlier[0] != index:
            differ = earlier[1].differences(spec)
            holder = f"requests[{earlier[0]}] of this call"
        elif (existing := by_key.get(key)) is not None:
            differ = existing.spec.differences(spec)
            holder = f"task {existing.id}"
        else:
            continue
        if differ:
            verb = "differs" if len(differ) == 1 else "differ"
            description = f"{key!r} already stands for {holder}, whose {', '.join(differ)} {verb} from this request's"
            problems.append(PreconditionViolation("IDEMPOTENCY_KEY_REUSED", subject, description))
    if not problems:
        return None
    return FailedPrecondition("; ".join(f"{p.subject}: {p.description}" for p in problems), problems)


class TaskService(Component):
    name = "task-service"

    def __init__(
        self, store: Store, settings: Settings, effects: Effects, *, clock: Callable[[], float] = wall_clock
    ) -> None:
        super().__init__()
        self._store = store
        self._settings = settings
        self._effects = effects
        self._clock = clock
        self._sync_match: SyncMatch | None = None
        self.submitted = 0
        self.deduplicated = 0
        self._target_checks: dict[tuple[object, ...], list[tuple[str, str]]] = {}
        self._limits: dict[
            tuple[RetryRequest, TimeoutsRequest], tuple[RetryPolicy, Timeouts] | list[tuple[str, str]]
        ] = {}
        self.submit_batcher: Batcher[_SubmitBatch, _Outcome] = Batcher(
            "submit-batcher",
            self._flush_submits,
            max_items=settings.batch_max_size * 4,
            weight=lambda batch: len(batch.specs),
            concurrency=4 if store.is_postgres else 1,
            linger=settings.batch_linger.total_seconds(),
            gate=FlushGate(parallel_weight=max(1, settings.batch_max_size // 2)),
        )

    async def _start(self) -> None:
        await self.submit_batcher.start()

    async def _stop(self) -> None:
        await self.submit_batcher.stop()

    # ------------------------------------------------------------ submit

    def prepare(self, request: SubmitRequest, violations: Violations) -> TaskSpec | None:
        """Validate a request and fill in defaults. Adds violations instead of raising."""
        before = len(violations.items)
        target_problems = self._target_problems(request.target)
        for field_path, description in target_problems:
            violations.add(field_path, description)
        violations.range("priority", request.priority, low=-1000, high=1000)
        violations.text("idempotency_key", request.idempotency_key, max_length=200)
        violations.text("correlation_id", request.correlation_id, max_length=200)
        if request.metadata:
            violations.string_map("metadata", request.metadata, max_value=4096)
        resolved = self._resolve_limits(request.retry, request.timeouts)
        if isinstance(resolved, list):
            for field_path, description in resolved:
                violations.add(field_path, description)
        if request.input.is_json:
            problem = request.input.json_problem()
            if problem is not None:
                violations.add("input", problem)
        if len(violations.items) > before or isinstance(resolved, list):
            return None
        policy, timeouts = resolved
        return TaskSpec(
            target=request.target,
            input=request.input,
            retry_policy=policy,
            timeouts=timeouts,
            priority=request.priority,
            idempotency_key=request.idempotency_key,
            correlation_id=request.correlation_id,
            metadata=request.metadata,
            traceparent=request.traceparent,
            tracestate=request.tracestate,
        )

    def _target_problems(self, target: TaskTarget) -> list[tuple[str, str]]:
        """Violations of a target (cached: a batch's tasks usually share theirs)."""
        key = (target.capability, target.agent_name, tuple(sorted(target.label_selector.items())), target.routing_key)
        cached = self._target_checks.get(key)
        if cached is None:
            check = Violations()
            check.capability("target.capability", target.capability)
            check.name("target.agent_name", target.agent_name, required=False, what="agent name")
            check.string_map("target.label_selector", target.label_selector)
            check.text("target.routing_key", target.routing_key, max_length=512)
            cached = [(v.field, v.description) for v in check.items]
            if len(self._target_checks) > 4096:
                self._target_checks.clear()
            self._target_checks[key] = cached
        return cached

    def _resolve_limits(
        self, retry: RetryRequest, timeouts: TimeoutsRequest
    ) -> tuple[RetryPolicy, Timeouts] | list[tuple[str, str]]:
        """The retry policy and deadlines with defaults filled in, or their violations (cached per value)."""
        cached = self._limits.get((retry, timeouts))
        if cached is not None:
            return cached
        check = Violations()
        check.range("retry_policy.max_attempts", retry.max_attempts, low=0, high=100)
        check.range("retry_policy.initial_backoff", retry.initial_backoff, low=0, high=MAX_DURATION_SECONDS)
        check.range("retry_policy.max_backoff", retry.max_backoff, low=0, high=MAX_DURATION_SECONDS)
        if retry.backoff_multiplier and not 1 <= retry.backoff_multiplier <= MAX_BACKOFF_MULTIPLIER:
            check.add(
                "retry_policy.backoff_multiplier",
                f"must be between 1 and {MAX_BACKOFF_MULTIPLIER} (or 0 for the default)",
            )
        for name in ("schedule_to_start", "start_to_close", "heartbeat", "schedule_to_close"):
            check.range(f"timeouts.{name}", getattr(timeouts, name), low=0, high=MAX_DURATION_SECONDS)
        s = self._settings
        initial = retry.initial_backoff or s.default_initial_backoff.total_seconds()
        maximum = retry.max_backoff or max(s.default_max_backoff.total_seconds(), initial)
        if not check.items and maximum < initial:
            check.add("retry_policy.max_backoff", "must be at least the initial backoff")
        result: tuple[RetryPolicy, Timeouts] | list[tuple[str, str]]
        if check.items:
            result = [(v.field, v.description) for v in check.items]
        else:
            result = (
                RetryPolicy(
                    max_attempts=retry.max_attempts or s.default_max_attempts,
                    initial_backoff=initial,
                    max_backoff=maximum,
                    backoff_multiplier=retry.backoff_multiplier or s.default_backoff_multiplier,
                    non_retryable_error_codes=retry.non_retryable_error_codes,
                ),
                Timeouts(
                    schedule_to_start=timeouts.schedule_to_start or s.default_schedule_to_start.total_seconds(),
                    start_to_close=timeouts.start_to_close or s.default_start_to_close.total_seconds(),
                    heartbeat=timeouts.heartbeat,
                    schedule_to_close=timeouts.schedule_to_close or s.default_schedule_to_close.total_seconds(),
                ),
            )
        if len(self._limits) > 4096:
            self._limits.clear()
        self._limits[(retry, timeouts)] = result
        return result

    def check_payload_size(self, field_path: str, size: int) -> None:
        limit = self._settings.max_payload_bytes
        if size > limit:
            raise ResourceExhausted(f"{field_path} is {size} bytes; the limit is {limit} bytes (max_payload_bytes)")

    async def submit(self, requests: Sequence[SubmitRequest], *, actor: str) -> list[Submitted]:
        """Validate every request, then persist them all in one transaction (or none)."""
        if not requests:
            violations = Violations()
            violations.add("requests", "at least one task is required")
            violations.raise_if_any()
        if len(requests) > MAX_BATCH_SUBMIT:
            violations = Violations()
            violations.add("requests", f"at most {MAX_BATCH_SUBMIT} tasks per call (got {len(requests)})")
            violations.raise_if_any()
        batch_prefix = len(requests) > 1
        violations = Violations()
        specs: list[TaskSpec] = []
        for index, request in enumerate(requests):
            prefix = f"requests[{index}]." if batch_prefix else ""
            self.check_payload_size(f"{prefix}input", len(request.input))
            spec = self.prepare(request, violations.nested(prefix))
            if spec is not None:
                specs.append(spec)
        violations.raise_if_any()
        return _submitted(await self.submit_batcher.call(_SubmitBatch(specs, actor)))

    async def _flush_submits(self, batches: list[_SubmitBatch]) -> list[_Outcome]:
        for attempt in range(3):
            try:
                return await self._persist_submits(batches)
            except DuplicateKey:
                # Another replica inserted one of our idempotency keys between our lookup and insert.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def connect_sync_match(self, sync_match: SyncMatch) -> None:
        """Let submits place their tasks on sessions with room at once (the dispatcher's place_new)."""
        self._sync_match = sync_match

    async def _persist_submits(self, batches: list[_SubmitBatch]) -> list[_Outcome]:
        now = self._clock()
        keys = sorted({spec.idempotency_key for b in batches for spec in b.specs if spec.idempotency_key})
        results: list[_Outcome] = []
        new_tasks: list[Task] = []
        actors: dict[str, str] = {}
        placed: PlacedWork | None = None
        try:
            # Without idempotency keys the flush is one INSERT statement: no transaction around it needed.
            async with self._store.hot_transaction(single_statement=not keys) as uow:
                by_key = await uow.tasks.find_by_idempotency_keys(keys)
                for batch in batches:
                    reused = _reused_keys(batch.specs, by_key)
                    if reused is not None:
                        results.append(reused)  # this caller's error; the other callers' tasks go in
                        continue
                    submitted: list[Submitted] = []
                    for spec in batch.specs:
                        existing = by_key.get(spec.idempotency_key) if spec.idempotency_key else None
                        if existing is not None:
                            submitted.append(Submitted(existing, deduplicated=True))
                            continue
                        task = Task(
                            id=new_id(),
                            spec=spec,
                            state=TaskState.QUEUED,
                            create_time=now,
                            update_time=now,
                            resubmitted_from=batch.resubmitted_from,
                            scheduled_time=now,
                        )
                        if spec.idempotency_key:
                            by_key[spec.idempotency_key] = task
                        new_tasks.append(task)
                        actors[task.id] = batch.actor
                        submitted.append(Submitted(task, deduplicated=False))
                    results.append(submitted)
                if new_tasks and self._sync_match is not None:
                    placed = self._sync_match.place_new(new_tasks, now)
                await uow.tasks.insert(new_tasks, actors=actors, placed=placed.writes if placed else None)
        except BaseException:
            if placed is not None:
                placed.release()
            raise
        self.submitted += len(new_tasks)
        self.deduplicated += sum(len(r) for r in results if isinstance(r, list)) - len(new_tasks)
        if placed is not None:
            placed.send()  # committed: now the agents may hear about it
            _show_assigned(new_tasks, placed.writes)
        if new_tasks:
            after = AfterCommit(changed={t.id for t in new_tasks})
            for task in new_tasks:
                if task.state is TaskState.QUEUED:
                    after.requeued.setdefault(task.spec.target.capability, now)
            await self._effects.after_commit(after)
        return results

    # ------------------------------------------------------------ reads

    async def get(self, task_id: str) -> Task:
        async with self._store.reader() as uow:
            task = await uow.tasks.get(task_id)
        if task is None:
            raise NotFound("task", task_id)
        return task

    async def list_page(self, task_filter: TaskFilter, *, page_size: int, page_token: str) -> paging.Page[Task]:
        size = paging.page_size(page_size)
        filters = [task_filter.state, task_filter.capability, task_filter.correlation_id]
        before = paging.decode(page_token, filters)
        async with self._store.reader() as uow:
            tasks = await uow.tasks.list_page(task_filter, limit=size + 1, before_id=before)

        def token_after(task: Task) -> str:
            return paging.encode(task.id, filters)

        return paging.Page(tasks[:size], token_after(tasks[size - 1]) if len(tasks) > size else "", token_after)

    async def events_after(self, task_id: str, after_sequence: int, *, check_exists: bool = True) -> list[TaskEvent]:
        """Stored events after `after_sequence`, oldest first, at most EVENTS_PAGE of them; the SUCCEEDED event
        carries the output."""
        async with self._store.reader() as uow:
            events = await uow.tasks.events_after(task_id, after_sequence, limit=EVENTS_PAGE)
            if check_exists and not events and not await uow.tasks.exists(task_id):
                raise NotFound("task", task_id)
            if any(e.type is TaskEventType.SUCCEEDED for e in events):
                output = await uow.tasks.output_of(task_id)
                events = [
                    dataclasses.replace(e, output=output) if e.type is TaskEventType.SUCCEEDED else e for e in events
                ]
        return events

    # ------------------------------------------------------------ changes

    async def cancel(self, task_id: str, *, reason: str, actor: str) -> Task:
        violations = Violations()
        violations.text("reason", reason, max_length=MAX_CANCEL_REASON)
        violations.raise_if_any()
        # Commit and the cancellation sent to the agent happen together, even if the caller goes away.
        await run_to_completion(self._cancel(task_id, reason=reason, actor=actor))
        return await self.get(task_id)

    async def _cancel(self, task_id: str, *, reason: str, actor: str) -> None:
        transition = Transition(now=self._clock(), actor=actor)
        async with self._store.transaction() as uow:
            live = (await uow.tasks.lock_live([task_id])).get(task_id)
            if live is None:
                raise NotFound("task", task_id)
            transition.cancel(live, reason or "cancelled by client", message=reason)
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        logger.info("task %s cancelled by %s", task_id, actor, extra={"task_id": task_id})

    async def resubmit(self, task_id: str, *, actor: str) -> Task:
        original = await self.get(task_id)
        if not original.state.is_terminal:
            raise FailedPrecondition(f"task {task_id!r} is {original.state.name}; only ended tasks can be re-submitted")
        spec = original.spec
        copy = TaskSpec(
            target=spec.target,
            input=spec.input,
            retry_policy=spec.retry_policy,
            timeouts=spec.timeouts,
            priority=spec.priority,
            idempotency_key="",  # the key belongs to the original
            correlation_id=spec.correlation_id,
            metadata=spec.metadata,
            traceparent=spec.traceparent,
            tracestate=spec.tracestate,
        )
        [submitted] = _submitted(await self.submit_batcher.call(_SubmitBatch([copy], actor, resubmitted_from=task_id)))

        async def audit(uow: UnitOfWork) -> None:
            await uow.audit.record(
                actor=actor,
                action="task.resubmit",
                resource=f"tasks/{task_id}",
                now=self._clock(),
                correlation_id=spec.correlation_id,
                details={"new_task_id": submitted.task.id},
            )

        await self._store.run(audit)
        return submitted.task
