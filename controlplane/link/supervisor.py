"""The agent-link protocol for this replica's sessions, independent of gRPC framing.

The servicer (api/link.py) turns frames into calls here, and drains each session's outbox into frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from controlplane.domain.agents import InstanceStatus, Registration
from controlplane.domain.channels import MAX_WAITING_BYTES, MAX_WAITING_MESSAGES
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import TaskRef
from controlplane.errors import Unavailable
from controlplane.lifecycle import Component, TaskOwner
from controlplane.link.messages import AckMsg, CancelMsg, DrainMsg, ErrorMsg, RegisteredMsg
from controlplane.link.registry import SessionRegistry
from controlplane.link.session import AgentSession, SessionState
from controlplane.link.silence import SilenceWatch
from controlplane.observability.loop_errors import LoopErrors
from controlplane.services.agents import AgentService, validate_registration
from controlplane.services.channels import ChannelService
from controlplane.services.recovery import RecoveryService
from controlplane.services.reports import AgentReport, ReportService, ResultReport, UpdateReport
from controlplane.settings import Settings
from controlplane.stall_grace import StallGrace
from controlplane.store.transient import backing_service_reason

logger = logging.getLogger(__name__)

_ALREADY_EXISTS = 6  # google.rpc.Code of the error frame telling a replaced session why (see _end_replaced)


class SessionSupervisor(Component):
    name = "session-supervisor"

    def __init__(
        self,
        *,
        registry: SessionRegistry,
        agents: AgentService,
        recovery: RecoveryService,
        reports: ReportService,
        channels: ChannelService,
        announce: Callable[[str, str], object],
        session_joined: Callable[[Iterable[str]], None],
        slot_freed: Callable[[Iterable[str]], None],
        settings: Settings,
        replica_id: str,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._agents = agents
        self._recovery = recovery
        self._reports = reports
        self._channels = channels
        self._announce = announce
        self._session_joined = session_joined
        self._slot_freed = slot_freed
        self._settings = settings
        self._replica_id = replica_id
        self._report_errors = LoopErrors(logger, "persisting agent reports")
        self._timers = TaskOwner(self.name)
        self._leases: set[str] = set()  # closed sessions whose tasks keep their lease for now
        self._open: set[str] = set()  # sessions whose stream handler has not finished its cleanup
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self.accepting = True  # False once shutdown began: new sessions are refused
        self.lease_timeout = settings.lease_timeout.total_seconds()
        self.heartbeat_interval = settings.heartbeat_interval.total_seconds()
        self._silence = SilenceWatch(self.lease_timeout)

    async def _stop(self) -> None:
        await self._timers.close()

    # ------------------------------------------------------------ opening

    async def open(self, registration: Registration, held: Sequence[TaskRef]) -> AgentSession:
        """Validate and register a session; the session's first outbound message is `registered`."""
        if not self.accepting:
            raise Unavailable("this control plane replica is shutting down; connect to another replica")
        validate_registration(registration)
        session = AgentSession(  # OPENING: no work yet
            uuid.uuid4().hex, registration, replica_id=self._replica_id, on_dropped_delivery=self._dropped_delivery
        )
        for ref in held:
            session.reserve(ref, 0.0)  # held attempts count against credits from the start
        previous = self._registry.add(session)
        self._silence.watch(session)
        if previous is not None:
            self._replace(previous, registration)
        actor = f"agent/{registration.agent_name}/{registration.instance_id}"
        try:
            owns_active = await self._agents.record_connect(registration, session_id=session.session_id)
            rebound = await self._recovery.rebind_instance(
                instance_id=registration.instance_id,
                session_id=session.session_id,
                held=held,
                owns_active=owns_active,
                actor=actor,
            )
            for channel in registration.subscriptions:
                await self._channels.subscribe(channel, session)
                session.subscriptions.add(channel)
        except BaseException:
            self._registry.remove(session)
            session.close("registration failed")
            raise
        if session.state is SessionState.CLOSED:
            # A newer session of the instance replaced this one while it registered (or shutdown closed it):
            # it ends here, without `registered`; its stream handler's cleanup unsubscribes it.
            logger.info(
                "agent %s/%s session %s closed while it registered: %s",
                registration.agent_name,
                registration.instance_id,
                session.session_id,
                session.close_reason,
            )
            return session
        session.send(
            RegisteredMsg(
                session_id=session.session_id,
                heartbeat_interval=self.heartbeat_interval,
                lease_timeout=self.lease_timeout,
                replica_id=self._replica_id,
                kept=tuple(rebound.kept),
                max_payload_bytes=self._settings.max_payload_bytes,
            )
        )
        for ref in rebound.stale:
            session.release(ref)
            session.send(CancelMsg(ref, "not_held"))
        session.state = SessionState.ACTIVE
        self._open.add(session.session_id)
        self._all_closed.clear()
        self._announce(registration.instance_id, session.session_id)
        self._session_joined(registration.capability_names)
        logger.info(
            "agent %s/%s connected (session %s, %d capabilities, max_concurrency %d, kept %d held task(s))",
            registration.agent_name,
            registration.instance_id,
            session.session_id,
            len(registration.capabilities),
            registration.max_concurrency,
            len(rebound.kept),
        )
        return session

    @staticmethod
    def _replace(previous: AgentSession, registration: Registration) -> None:
        """The older session of an instance gives way to a newer one: usually the same agent reconnecting (the
        old stream is dead), but two live agents given one instance_id would replace each other for good."""
        why = f"replaced by a newer session of instance {registration.instance_id}"
        if previous.agent_name != registration.agent_name:
            why += f" (of agent {registration.agent_name}, not {previous.agent_name})"
        _end_replaced(previous, why)

    def _dropped_delivery(self, session: AgentSession) -> None:
        self._channels.count_dropped()
        if session.dropped_deliveries == 1:
            logger.warning(
                "agent %s/%s (session %s) reads its stream slower than its channel messages come: the oldest "
                "waiting ones are dropped (over %d messages or %d MiB wait)",
                session.agent_name,
                session.instance_id,
                session.session_id,
                MAX_WAITING_MESSAGES,
                MAX_WAITING_BYTES // (1024 * 1024),
            )

    # ------------------------------------------------------------ frames

    def heartbeat(self, session: AgentSession, *, load: float) -> None:
        session.touch()
        session.load = load

    def report(
        self,
        session: AgentSession,
        *,
        updates: Sequence[UpdateReport] = (),
        results: Sequence[ResultReport] = (),
        beats: Sequence[TaskRef] = (),
    ) -> None:
        """Task updates/results from the agent: credits are freed now, results acknowledged once durable."""
        session.touch()
        for ref in beats:
            session.beat(ref)
        for update in updates:
            session.beat(update.ref)
        freed = False
        for result in results:
            freed |= session.release(result.ref)
        if freed:
            self._slot_freed(session.registration.capability_names)
        if not updates and not results:
            return
        actor = f"agent/{session.agent_name}/{session.instance_id}"
        future = self._reports.submit(AgentReport(actor, session.instance_id, list(updates), list(results)))
        refs = tuple(r.ref for r in results)
        future.add_done_callback(lambda f: self._reported(session, refs, f))

    async def report_when_room(
        self,
        session: AgentSession,
        *,
        updates: Sequence[UpdateReport] = (),
        results: Sequence[ResultReport] = (),
        beats: Sequence[TaskRef] = (),
    ) -> None:
        """`report`, but first wait while the report queue is full (backpressure on a flooding agent)."""
        await self._reports.wait_for_room(session.instance_id)
        self.report(session, updates=updates, results=results, beats=beats)

    def _reported(self, session: AgentSession, refs: tuple[TaskRef, ...], future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            error = None if future.cancelled() else future.exception()
            what = f"persisting the reports of session {session.session_id}"
            if isinstance(error, Exception):  # an outage: one line a minute; a bug: its traceback each time
                self._report_errors.failed(what, error, outcome="failed; its agent reconnects and resends them")
            else:
                logger.error("%s was cancelled; its agent reconnects and resends them", what)
            session.close("reports could not be persisted; reconnect and resend")  # unacked results come back
            return
        self._report_errors.succeeded()
        if refs:
            session.send(AckMsg(refs))

    async def publish(self, session: AgentSession, channel: str, payload: Payload, headers: dict[str, str]) -> None:
        """Raises what ChannelService.publish raises (the link servicer answers it with an error frame)."""
        session.touch()
        await self._channels.publish(
            channel, payload, headers=headers, publisher=f"agent/{session.agent_name}/{session.instance_id}"
        )

    async def subscribe(self, session: AgentSession, channel: str) -> None:
        """Raises what ChannelService.subscribe raises (the link servicer answers it with an error frame)."""
        session.touch()
        await self._channels.subscribe(channel, session)
        session.subscriptions.add(channel)

    async def unsubscribe(self, session: AgentSession, channel: str) -> None:
        session.touch()
        session.subscriptions.discard(channel)
        await self._channels.unsubscribe(channel, session)

    async def agent_draining(self, session: AgentSession, reason: str) -> None:
        session.touch()
        if session.state is SessionState.ACTIVE:
            session.state = SessionState.DRAINING
            logger.info("agent %s/%s is draining: %s", session.agent_name, session.instance_id, reason)
            await self._agents.record_status(session.instance_id, session.session_id, InstanceStatus.DRAINING)

    # ------------------------------------------------------------ drain and close

    def drain(self, session_id: str, timeout: float, reason: str) -> None:
        """Operator drain: no new work; the agent finishes, then reconnects. Closed after `timeout` regardless."""
        session = self._registry.get(session_id)
        if session is None or session.state is SessionState.CLOSED:
            return
        session.state = SessionState.DRAINING
        session.send(DrainMsg(timeout, reason))
        self._timers.spawn(self._close_after(session, timeout), f"drain-deadline-{session_id[:8]}")

    async def _close_after(self, session: AgentSession, delay: float) -> None:
        try:
            await asyncio.wait_for(session.closed.wait(), delay)
        except TimeoutError:
            session.close("drain timeout passed")

    async def replaced_elsewhere(self, instance_id: str, session_id: str) -> None:
        """The instance registered on another replica as `session_id` (told over NATS): its session here gives
        way, as in `_replace`, and hears why, or a second live agent with this instance_id would flap across
        replicas.

        The notice may be stale: sent while NATS was down and delivered after the agent came back here. The
        store decides (an instance's last registration wins there): the session here ends with the fatal frame
        only when the store shows the other replica's session is the current one; it stays when the store
        shows its own. Otherwise (the store out of reach, a third session, or the session here still writing
        its registration) it closes without the frame, as any replaced session did before: the agent
        reconnects, and its registration settles who has the instance."""
        session = self._registry.by_instance(instance_id)
        if session is None or session.session_id == session_id:
            return
        try:
            current = await self._agents.current_session(instance_id)
        except Exception as exc:
            reason = backing_service_reason(exc)
            if reason is None:
                raise
            logger.warning("could not check which session of instance %s is current: %s", instance_id, reason)
            current = None
        if session.state is SessionState.CLOSED or self._registry.by_instance(instance_id) is not session:
            return  # it ended, or was replaced here, while the store was read
        if current == session.session_id:
            logger.info(
                "instance %s: ignored a stale notice of its session %s on another replica (its session here, %s, "
                "registered later)",
                instance_id,
                session_id,
                session.session_id,
            )
            return
        why = f"replaced by a newer session of instance {instance_id} on another replica"
        if current == session_id and session.state is not SessionState.OPENING:
            _end_replaced(session, why)
        else:
            session.close(why)

    def close_soon(self, session: AgentSession) -> asyncio.Task[None]:
        """Start the cleanup of an ended stream as a task this supervisor owns.

        The stream handler awaits it shielded: gRPC may cancel the handler, but not its cleanup.
        """
        return self._timers.spawn(self.closed(session), f"close-{session.session_id[:8]}")

    async def closed(self, session: AgentSession) -> None:
        """The stream of `session` ended (for whatever reason): clean up and keep its tasks' leases."""
        try:
            await self._cleanup(session)
        finally:
            self._open.discard(session.session_id)
            if not self._open:
                self._all_closed.set()

    async def _cleanup(self, session: AgentSession) -> None:
        session.close(session.close_reason or "stream ended")
        self._registry.remove(session)
        if session.subscriptions:
            await self._channels.unsubscribe_all(session, session.subscriptions)
        try:
            await self._agents.record_status(session.instance_id, session.session_id, InstanceStatus.DISCONNECTED)
        except Exception as exc:  # the sweep marks it disconnected later (AgentService.disconnect_ghosts)
            reason = backing_service_reason(exc)
            if reason is None:
                logger.exception("could not record disconnect of %s", session.session_id)
            else:
                logger.warning("could not record disconnect of %s yet: %s", session.session_id, reason)
        logger.info(
            "agent %s/%s session %s closed: %s (%d in flight)",
            session.agent_name,
            session.instance_id,
            session.session_id,
            session.close_reason,
            len(session.in_flight),
        )
        if session.in_flight and self.running:
            # The agent may reconnect and keep its tasks until the lease runs out.
            delay = max(0.0, session.last_seen + self.lease_timeout - time.monotonic())
            self._leases.add(session.session_id)
            self._timers.spawn(self._expire_lease(session, delay), f"lease-{session.session_id[:8]}")

    async def _expire_lease(self, session: AgentSession, delay: float) -> None:
        try:
            await self._lease_runs_out(delay)
            actor = f"replica/{self._replica_id}"
            await self._recovery.requeue_session(session.session_id, session.instance_id, actor=actor)
        except Exception as exc:  # the orphan sweep takes the tasks back once it can
            reason = backing_service_reason(exc)
            if reason is None:
                raise
            logger.warning("the lease of session %s ran out; its tasks wait for the orphan sweep: %s", session, reason)
        finally:
            self._leases.discard(session.session_id)

    async def _lease_runs_out(self, delay: float) -> None:
        """Sleep `delay`, and a heartbeat interval more if the plane's own loop stalled meanwhile (it woke late):
        the agent may be reconnecting to keep its tasks, its registration waiting unread (see StallGrace)."""
        stall = StallGrace(tolerance=self.heartbeat_interval, grace=self.heartbeat_interval)
        asleep_since = time.monotonic()
        await asyncio.sleep(delay)
        if stall.woke(asleep_since=asleep_since, interval=delay, now=time.monotonic()):
            await asyncio.sleep(stall.grace)

    # ------------------------------------------------------------ sweeps

    async def cancel_ended_attempts(self, *, running_for: float) -> int:
        """Attempts the agents here have run for `running_for` seconds or more and that the store has ended
        (cancelled, timed out, moved on) are cancelled again, once each. The first cancel can be lost: one
        sent from another replica while NATS was down reached no one."""
        now = time.monotonic()
        held = {
            ref: session
            for session in self.live_sessions()
            for ref, entry in session.in_flight.items()
            if now - entry.since >= running_for and not entry.cancel_resent
        }
        if not held:
            return 0
        ended = await self._recovery.ended_attempts(list(held))
        freed: set[AgentSession] = set()
        for ref, (reason, message) in ended.items():
            session = held[ref]
            entry = session.in_flight.get(ref)
            if entry is None:
                continue
            entry.cancel_resent = True
            if reason == "not_held" and session.release(ref):
                # The agent drops a not_held attempt without a result (as at a reconnect): the slot is free now.
                freed.add(session)
            session.send(CancelMsg(ref, reason, message))
        for session in freed:
            self._slot_freed(session.registration.capability_names)
        return len(ended)

    def live_sessions(self) -> list[AgentSession]:
        return [s for s in self._registry.sessions() if s.state is not SessionState.CLOSED]

    def sessions_holding_tasks(self) -> list[str]:
        """Open sessions, and closed ones whose lease has not run out yet (the agent may come back)."""
        return [s.session_id for s in self._registry.sessions()] + list(self._leases)

    def expire_silent(self) -> int:
        """Close sessions that sent nothing for a whole lease."""
        silent = self._silence.silent(time.monotonic())
        for session in silent:
            session.close(f"no heartbeat for {self.lease_timeout:g}s")
        return len(silent)

    def overdue_heartbeats(self) -> list[TaskRef]:
        """Attempts with a heartbeat timeout whose agent has been silent about them for too long."""
        now = time.monotonic()
        overdue: list[TaskRef] = []
        for session in self._registry.holding_attempts():
            for ref, entry in session.in_flight.items():
                if entry.heartbeat_timeout and now - entry.last_beat > entry.heartbeat_timeout:
                    entry.heartbeat_timeout = 0.0  # report once; the slot frees when the agent answers the cancel
                    overdue.append(ref)
        return overdue

    async def close_all(self, grace: float) -> None:
        """Shutdown: close every session and wait (bounded) until their stream handlers have cleaned up."""
        self.accepting = False
        for session in self.live_sessions():
            session.send(DrainMsg(0.0, "control plane shutting down"))
            session.close("control plane shutting down")
        try:
            await asyncio.wait_for(self._all_closed.wait(), grace)
        except TimeoutError:
            logger.warning("%d agent session(s) did not finish closing within %.1fs", len(self._open), grace)

    async def drain_all(self, grace: float) -> None:
        """Shutdown: ask every session to finish its work, and wait for them (bounded)."""
        self.accepting = False
        sessions = [s for s in self._registry.sessions() if s.state is not SessionState.CLOSED]
        for session in sessions:
            if session.state is SessionState.ACTIVE:
                session.state = SessionState.DRAINING
            session.send(DrainMsg(grace, "control plane shutting down"))
        waiting = [asyncio.ensure_future(s.closed.wait()) for s in sessions]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=grace)
            for future in pending:
                future.cancel()
        for session in sessions:
            session.close("control plane shutting down")


def _end_replaced(previous: AgentSession, why: str) -> None:
    """Tell a replaced session why, then close it (the frame goes out before the stream ends: the writer drains
    the outbox before it notices the close). Fatal: an SDK only hears this on its current session when another
    agent registered its instance_id (its own reconnects abandon the old stream first), so it stops rather than
    reconnecting and replacing the other one in turn, which would make both flap for good."""
    message = f"{why}: unless this agent reconnected, two agents share this instance_id; give each its own"
    previous.send(ErrorMsg(_ALREADY_EXISTS, message, "register.instance_id", fatal=True))
    previous.close(why)
