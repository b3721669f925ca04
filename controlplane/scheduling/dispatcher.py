"""Places queued tasks on this replica's live sessions.

Woken by doorbells (a submit or retry on any replica, a session serving a capability new here) and by
freed slots or joining sessions (only while work may be waiting for them), it claims due tasks for the
capabilities that have room, binds each to a session, commits, and only then sends the assignments —
several per frame. Rounds overlap only while the queue is deeper than one round takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from controlplane.clock import wall_clock
from controlplane.domain.agents import RemoteInstance
from controlplane.domain.tasks import Task, TaskRef
from controlplane.lifecycle import Component, TaskOwner
from controlplane.link.messages import AssignmentMsg
from controlplane.link.registry import SessionRegistry
from controlplane.link.session import AgentSession
from controlplane.observability.loop_errors import LoopErrors
from controlplane.scheduling.membership import RemoteInstances
from controlplane.scheduling.placement import Placer
from controlplane.services.effects import Effects
from controlplane.services.transitions import Transition
from controlplane.store.tasks import QueuedTask, StickyKind, Takers, TaskRows, TaskWrites
from controlplane.store.unit_of_work import Store

logger = logging.getLogger(__name__)

Binding = tuple[AgentSession, TaskRef, AssignmentMsg]


class PlacedOnSubmit:
    """Assignments a submit made itself (Dispatcher.place_new): slots taken, sent once the submit commits."""

    def __init__(self, bindings: list[Binding], writes: TaskWrites, sent: Callable[[int], None]) -> None:
        self.bindings = bindings
        self.writes = writes  # their assignments, attempts and ASSIGNED events, for TaskRows.insert
        self._sent = sent

    def send(self) -> None:
        for session, _, message in self.bindings:
            session.send(message)
        self._sent(len(self.bindings))

    def release(self) -> None:
        for session, ref, _ in self.bindings:
            session.release(ref)


# A claim reads a few more rows than there are slots, so that a few tasks no session here can take now
# (label selectors, agent names, sticky owners full or elsewhere) cost no second read. When that is not
# enough, it reads on past them, each page CLAIM_GROWTH times the last, up to CLAIM_PAGES pages a round,
# leaving out in the database what no session here with room admits (store.tasks.Takers), and the kinds of
# sticky task already passed over (at most STICKY_KINDS_LEFT_OUT of them): work none can take neither hides
# placeable work behind it nor costs a read per row. A hot routing key's backlog is one kind.
CLAIM_SLACK = 32
CLAIM_GROWTH = 4
CLAIM_PAGES = 3
STICKY_KINDS_LEFT_OUT = 256


class Dispatcher(Component):
    name = "dispatcher"

    def __init__(
        self,
        store: Store,
        registry: SessionRegistry,
        placer: Placer,
        effects: Effects,
        *,
        replica_id: str,
        batch_max: int,
        poll_interval: float,
        concurrency: int = 1,
        remote: RemoteInstances | None = None,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        super().__init__()
        self._store = store
        self._registry = registry
        self._placer = placer
        self._effects = effects
        self._replica_id = replica_id
        self._batch_max = batch_max
        self._poll_interval = poll_interval
        self._errors = LoopErrors(logger, "dispatch")
        self._concurrency = concurrency
        self._remote = remote  # other replicas' instances, for sticky placement across the cluster
        self._booked: dict[str, int] = {}  # slots that rounds in progress may still fill, per capability
        self._clock = clock
        self._wake = asyncio.Event()
        self._next_due: float | None = None
        # Capabilities known to have no work waiting for a slot here: a dispatch found their queue drained
        # (and no new work for them was announced meanwhile); new work for one takes it out. Any other
        # capability may have work waiting, including every one before the first round. Sync match places
        # only tasks of these, so nothing is placed ahead of work queued before it.
        self._clear: set[str] = set()
        self._announced_during: set[str] | None = None  # while a dispatch runs: work announced for these
        # Capabilities whose every due queued task a round in progress has claimed (and is assigning): until
        # it ends, their new tasks queue behind nothing, so submits may place them too. (Should that round's
        # transaction fail, tasks placed meanwhile went ahead of the ones it claimed; the next round takes those.)
        self._claimed_out: set[str] = set()
        # Capabilities with retries scheduled (a failed attempt's backoff), and when the last of them comes
        # due. One that came due must not be overtaken by tasks submitted after it, so until a round that
        # began after that time finds the queue drained, sync match leaves these capabilities' tasks to the
        # queue, and a freed slot is worth a round.
        self._retrying: dict[str, float] = {}
        self._tasks = TaskOwner(self.name)
        self.assigned = 0
        self.assigned_on_submit = 0  # of `assigned`: placed by their submit (place_new)
        self.rounds = 0
        self.round_seconds = 0.0

    async def _start(self) -> None:
        # Retries scheduled before this replica started were announced to no one here.
        async with self._store.reader() as uow:
            self.retries_pending(await uow.tasks.last_due_later(self._clock()))
        self._tasks.spawn(self._run(), "loop")

    async def _stop(self) -> None:
        await self._tasks.close()

    def wake(self, capabilities: Iterable[str], at: float | None = None) -> None:
        """New work for `capabilities`: dispatch now, or at wall-clock time `at` (a retry's backoff)."""
        for capability in capabilities:
            self._clear.discard(capability)
            self._claimed_out.discard(capability)
            if self._announced_during is not None:
                self._announced_during.add(capability)
        if at is None or at <= self._clock():
            self._wake.set()
        elif self._next_due is None or at < self._next_due:
            self._next_due = at
            self._wake.set()  # re-arm the timer

    def retries_pending(self, until: Mapping[str, float]) -> None:
        """Retries of these capabilities were scheduled, the last to come due at the given (wall-clock) time."""
        for capability, at in until.items():
            if at > self._retrying.get(capability, 0.0):
                self._retrying[capability] = at

    def slot_freed(self, capabilities: Iterable[str]) -> None:
        """A session serving `capabilities` has room again: worth a round only if work may be waiting."""
        self._wake_if_work_may_wait(capabilities)

    def session_joined(self, capabilities: Iterable[str]) -> None:
        """A session became active: worth a round if work may be waiting for any of its capabilities
        (one no round has looked at yet may have work nobody here could take)."""
        self._wake_if_work_may_wait(capabilities)

    def _wake_if_work_may_wait(self, capabilities: Iterable[str]) -> None:
        for capability in capabilities:
            if not self.is_clear(capability):
                self._wake.set()
                return

    def is_clear(self, capability: str) -> bool:
        """Whether a round found `capability`'s queue drained, with no new work for it announced since and no
        retry of it pending: then submits place its tasks themselves (place_new) while a session here has room."""
        return capability in self._clear and capability not in self._retrying

    async def _run(self) -> None:
        while True:
            timeout = self._poll_interval
            if self._next_due is not None:
                timeout = min(timeout, max(0.0, self._next_due - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._next_due is not None and self._next_due <= self._clock():
                self._next_due = None
            try:
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._errors.failed("a dispatch round (retried shortly)", exc)
                await asyncio.sleep(min(1.0, self._poll_interval))
            else:
                self._errors.succeeded()

    def _room(self) -> dict[str, int]:
        """Free slots per capability, minus what rounds in progress have already booked."""
        # Rounds in progress book at most `concurrency` batches: counting beyond that plus one batch is moot.
        room = self._registry.capabilities_with_room(at_most=self._batch_max * (self._concurrency + 1))
        for capability, booked in self._booked.items():
            if capability in room:
                room[capability] -= booked
        return {capability: free for capability, free in room.items() if free > 0}

    async def dispatch(self) -> int:
        """Place as much queued work as this replica's sessions have room for.

        One round at a time until a round fills up; then up to `concurrency` rounds overlap (PostgreSQL:
        SKIP LOCKED gives them disjoint rows), each booking its share of the free slots before it claims,
        so together they never claim more than fits.
        """
        began = self._clock()
        announced: set[str] = set()
        self._announced_during = announced
        drained: set[str] = set()  # capabilities some round found with nothing more to claim or leave behind
        unsettled: set[str] = set()  # capabilities some round found more (or unplaceable) work for
        total = 0
        running: set[asyncio.Future[tuple[int, bool, set[str], set[str]]]] = set()
        keep_going = True
        overlap = 1
        try:
            while True:
                while keep_going and len(running) < overlap:
                    room = self._room()
                    if not room:
                        break
                    running.add(asyncio.ensure_future(self._dispatch_once(room)))
                if not running:
                    break
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    placed, more, round_drained, round_unsettled = finished.result()
                    total += placed
                    drained |= round_drained
                    unsettled |= round_unsettled
                    keep_going = keep_going and placed > 0 and more
                    if more:
                        overlap = self._concurrency
        finally:
            self._announced_during = None
        cleared = drained - unsettled - announced
        self._clear |= cleared
        for capability in cleared & self._retrying.keys():
            if self._retrying[capability] <= began:  # every retry was due when this dispatch claimed
                del self._retrying[capability]
        return total

    async def _dispatch_once(self, room: dict[str, int]) -> tuple[int, bool, set[str], set[str]]:
        """One transaction: claim per capability with room, bind, commit, send.

        Returns (placed, maybe more, capabilities drained, capabilities that may still have work waiting)."""
        limits: dict[str, int] = {}
        budget = self._batch_max
        for capability, free in sorted(room.items(), key=lambda item: -item[1]):
            if budget <= 0:
                break
            limits[capability] = min(free, budget)
            budget -= limits[capability]
        for capability, limit in limits.items():  # booked before the first await
            self._booked[capability] = self._booked.get(capability, 0) + limit
        started = time.perf_counter()
        try:
            placed, full, waiting = await self._place(limits)
        finally:
            self.round_seconds += time.perf_counter() - started
            self._claimed_out.difference_update(limits)
            for capability, limit in limits.items():
                left = self._booked[capability] - limit
                if left:
                    self._booked[capability] = left
                else:
                    del self._booked[capability]
        self.rounds += 1
        more = bool(full) or len(limits) < len(room)
        unsettled = full | waiting
        return placed, more, set(limits) - unsettled, unsettled

    async def _place(self, limits: dict[str, int]) -> tuple[int, set[str], set[str]]:
        """Returns (placed, capabilities that may have more work, capabilities with work this round left queued)."""
        transition = Transition(now=self._clock(), actor=f"replica/{self._replica_id}")
        planned: list[Binding] = []
        full: set[str] = set()  # there may be more work than there was room for
        waiting: set[str] = set()
        async with self._store.hot_transaction() as uow:
            try:
                for capability, limit in limits.items():
                    more, passed_over = await self._claim_and_bind(uow.tasks, capability, limit, transition, planned)
                    if more:
                        full.add(capability)
                    if passed_over:
                        waiting.add(capability)  # claimable work no session here could take now
                await uow.tasks.write(transition.writes)
            except BaseException:
                for session, ref, _ in planned:
                    session.release(ref)
                raise
        # Committed: now the agents may hear about it (each session's writer coalesces them into frames).
        for session, _, message in planned:
            session.send(message)
        self.assigned += len(planned)
        await self._effects.after_commit(transition.after)
        return len(planned), full, waiting

    async def _claim_and_bind(
        self, rows: TaskRows, capability: str, limit: int, transition: Transition, planned: list[Binding]
    ) -> tuple[bool, bool]:
        """Claim `capability`'s due tasks in queue order and bind each that a session here can take, until
        `limit` are bound; reading on past those none can take (see CLAIM_PAGES).

        The first page is read whole, so a queue it drains is known to hold nothing more (not even work no
        session here can take). Further pages, read only once some task was passed over, leave out what no
        session with room admits (store.tasks.Takers).

        Returns (maybe more work waiting, some task was passed over)."""
        serving = self._registry.candidates(capability)
        memo: dict[tuple[object, ...], list[AgentSession]] = {}
        remote: list[RemoteInstance] | None = None
        bound = 0
        passed_over = False
        after: tuple[int, str] | None = None
        takers: Takers | None = None
        owner_cannot_take: dict[StickyKind, None] = {}  # the sticky kinds passed over, in order
        size = limit + CLAIM_SLACK
        for _ in range(CLAIM_PAGES):
            batch = await rows.claim_queued(capability, now=transition.now, limit=size, after=after, takers=takers)
            for task in batch:
                if bound >= limit:
                    return True, passed_over  # no room left for the rest
                sticky = self._placer.is_sticky(task)
                if remote is None and self._remote is not None and sticky:
                    remote = await self._remote.serving(capability)  # read once, at the first sticky task
                session = self._placer.choose(task, serving, memo, remote)
                if session is None:
                    passed_over = True
                    if sticky and len(owner_cannot_take) < STICKY_KINDS_LEFT_OUT:
                        owner_cannot_take[StickyKind.of(task)] = None
                else:
                    planned.append(self._bind(task, session, transition))
                    bound += 1
            if len(batch) < size:  # the queue ends here
                if not passed_over:
                    self._claimed_out.add(capability)
                return False, passed_over
            if bound >= limit:
                return True, passed_over
            after = (batch[-1].priority, batch[-1].id)
            takers = _takers(serving, tuple(owner_cannot_take))
            size *= CLAIM_GROWTH
        return True, passed_over

    def _bind(self, task: QueuedTask, session: AgentSession, transition: Transition) -> Binding:
        """Assign `task` to `session` in `transition` and take the slot (before the next choice sees its room)."""
        attempt = transition.assign(
            task,
            session_id=session.session_id,
            agent_name=session.agent_name,
            instance_id=session.instance_id,
            replica_id=self._replica_id,
        )
        ref = TaskRef(task.id, attempt)
        session.reserve(ref, task.heartbeat_timeout)
        message = AssignmentMsg(
            task_id=task.id,
            attempt=attempt,
            capability=task.capability,
            input=task.input,
            priority=task.priority,
            correlation_id=task.correlation_id,
            metadata=task.metadata,
            deadline=transition.writes.assigned[-1].attempt_deadline,
            heartbeat_timeout=task.heartbeat_timeout,
            max_attempts=task.max_attempts,
            traceparent=task.traceparent,
            tracestate=task.tracestate,
        )
        return session, ref, message

    def place_new(self, tasks: Sequence[Task], now: float) -> PlacedOnSubmit | None:
        """Sync match: bind tasks being submitted to sessions here with room, so that the submit inserts them
        already ASSIGNED and no claim transaction is needed.

        Only tasks of capabilities with no queued work that can be waiting ahead of them (a round found their
        queue drained and none is claiming for them now, or the round in progress has claimed all of it; and
        no retry of theirs is pending), and never sticky tasks (their owner may be on another replica). Tasks
        are taken in claim order (priority, then FIFO), and those no session here can take now stay queued,
        as a round leaves them.
        Returns None when nothing was placed. The caller writes the result's `writes` with the tasks, then
        `send()`s the assignments once committed, or `release()`s the slots if the transaction failed.
        """
        if not self.running:
            return None
        transition = Transition(now=now, actor=f"replica/{self._replica_id}")
        bindings: list[Binding] = []
        memo: dict[tuple[object, ...], list[AgentSession]] = {}
        candidates: dict[str, list[AgentSession]] = {}
        for task in sorted((_as_queued(t) for t in tasks), key=lambda q: (-q.priority, q.id)):
            if not self._nothing_ahead(task.capability) or self._placer.is_sticky(task):
                continue
            serving = candidates.get(task.capability)
            if serving is None:
                serving = candidates[task.capability] = self._registry.candidates(task.capability)
            session = self._placer.choose(task, serving, memo)
            if session is not None:
                bindings.append(self._bind(task, session, transition))
        return PlacedOnSubmit(bindings, transition.writes, self._sent_on_submit) if bindings else None

    def _nothing_ahead(self, capability: str) -> bool:
        """No queued task of `capability` can be waiting that a new one would be placed ahead of."""
        if capability in self._retrying:
            return False
        clear = capability in self._clear and capability not in self._booked
        return clear or capability in self._claimed_out

    def _sent_on_submit(self, count: int) -> None:
        self.assigned += count
        self.assigned_on_submit += count


def _takers(sessions: Sequence[AgentSession], owner_cannot_take: tuple[StickyKind, ...]) -> Takers:
    """What a claim may leave out by: the names and distinct label sets of the sessions with room, and the
    sticky kinds whose owner cannot take them now."""
    with_room = [s for s in sessions if s.free_slots]
    label_sets = {tuple(sorted(s.registration.labels.items())) for s in with_room}
    return Takers(
        agent_names=tuple(sorted({s.agent_name for s in with_room})),
        label_sets=tuple(dict(labels) for labels in sorted(label_sets)),
        owner_cannot_take=owner_cannot_take,
    )


def _as_queued(task: Task) -> QueuedTask:
    """A task being submitted, as a claim would have read it back."""
    spec = task.spec
    schedule_to_close = spec.timeouts.schedule_to_close
    return QueuedTask(
        id=task.id,
        capability=spec.target.capability,
        agent_name=spec.target.agent_name,
        label_selector=spec.target.label_selector or {},
        routing_key=spec.target.routing_key,
        strategy=spec.target.strategy,
        priority=spec.priority,
        input=spec.input,
        correlation_id=spec.correlation_id,
        metadata=spec.metadata or {},
        traceparent=spec.traceparent,
        tracestate=spec.tracestate,
        attempt=task.attempt,
        max_attempts=spec.retry_policy.max_attempts,
        start_to_close=spec.timeouts.start_to_close,
        heartbeat_timeout=spec.timeouts.heartbeat,
        deadline=task.create_time + schedule_to_close if schedule_to_close else None,
        event_seq=1,  # the CREATED event
        create_time=task.create_time,
    )
