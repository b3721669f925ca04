"""The control plane's metrics: what each scrape reads from the running components."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controlplane.batching import Batcher
from controlplane.observability.histogram import HistogramSnapshot
from controlplane.observability.metrics import Reading, counter, gauge, histogram

if TYPE_CHECKING:
    from controlplane.app import ControlPlane


def plane_readings(plane: ControlPlane) -> list[Reading]:
    def batchers(stat: str) -> dict[str, float]:
        batchers: list[Batcher[Any, Any]] = [plane.tasks.submit_batcher, *plane.reports.lanes]
        return {b.name: getattr(b, stat) for b in batchers}

    def in_flight() -> int:
        return sum(len(session.in_flight) for session in plane.registry.sessions())

    def task_queue_waits() -> HistogramSnapshot:
        # A task its submit placed at once (inserted already assigned, at its create time) waited 0 s; the
        # submit's transaction is not a transition, so the dispatcher's count of them stands in for it.
        return plane.cluster.task_queue_waits.snapshot().with_zeros(plane.dispatcher.assigned_on_submit)

    def task_lifetimes() -> dict[str, HistogramSnapshot]:
        return {state: h.snapshot() for state, h in list(plane.cluster.task_lifetimes.items())}

    return [
        counter("meshplane_tasks_submitted_total", "Tasks accepted (new ones).", lambda: plane.tasks.submitted),
        counter(
            "meshplane_tasks_deduplicated_total",
            "Submissions answered with an existing task (idempotency key).",
            lambda: plane.tasks.deduplicated,
        ),
        counter(
            "meshplane_tasks_ended_total",
            "Tasks that reached a terminal state, by state (transitions made on this replica).",
            lambda: dict(plane.cluster.tasks_ended),
            label="state",
        ),
        histogram(
            "meshplane_task_schedule_seconds",
            "Time tasks waited from their submit to their first assignment (assignments made on this replica).",
            task_queue_waits,
        ),
        histogram(
            "meshplane_task_duration_seconds",
            "Time from a task's submit to its terminal state, by that state (transitions made on this replica).",
            task_lifetimes,
            label="state",
        ),
        counter(
            "meshplane_assignments_total", "Attempts assigned to agent sessions.", lambda: plane.dispatcher.assigned
        ),
        counter(
            "meshplane_assignments_on_submit_total",
            "Of those, attempts placed by their own submit (a session had room and nothing was queued).",
            lambda: plane.dispatcher.assigned_on_submit,
        ),
        counter("meshplane_results_applied_total", "Agent results applied.", lambda: plane.reports.applied_results),
        counter(
            "meshplane_results_stale_total",
            "Agent results ignored: their attempt was no longer current, or not the reporting instance's.",
            lambda: plane.reports.stale_results,
        ),
        counter(
            "meshplane_channel_deliveries_dropped_total",
            "Channel messages dropped for subscribers (agent sessions, Subscribe streams) slower than they came.",
            lambda: plane.channels.dropped_deliveries,
        ),
        gauge("meshplane_agent_sessions", "Agent sessions connected to this replica.", lambda: len(plane.registry)),
        gauge(
            "meshplane_tasks_queued",
            "Tasks waiting in the queue, per capability: the whole mesh's, read every 10 s.",
            lambda: plane.sweeper.queued_by_capability,
            label="capability",
        ),
        gauge(
            "meshplane_database_up",
            "1 while this replica reaches its database, 0 while the sweep finds it out of reach.",
            lambda: 0 if plane.sweeper.database_out else 1,
        ),
        gauge("meshplane_tasks_in_flight", "Attempts on this replica's sessions awaiting a result.", in_flight),
        gauge(
            "meshplane_nats_connected",
            "1 while both of this replica's NATS connections (channels, cluster signals) are up, 0 while either "
            "is reconnecting.",
            lambda: 1 if plane.bus.connected and plane.signal_bus.connected else 0,
        ),
        gauge("meshplane_task_watchers", "Open WatchTask streams on this replica.", lambda: len(plane.watch)),
        counter("meshplane_batch_flushes_total", "Group-commit flushes.", lambda: batchers("flushes"), label="batcher"),
        counter(
            "meshplane_batch_flush_seconds_total",
            "Time spent in group-commit flushes.",
            lambda: batchers("flush_seconds"),
            label="batcher",
        ),
        counter(
            "meshplane_dispatch_rounds_total", "Dispatcher claim-and-assign rounds.", lambda: plane.dispatcher.rounds
        ),
        counter(
            "meshplane_dispatch_seconds_total",
            "Time spent in dispatcher rounds.",
            lambda: plane.dispatcher.round_seconds,
        ),
        counter(
            "meshplane_batch_items_total",
            "Items written by group-commit flushes.",
            lambda: batchers("items_flushed"),
            label="batcher",
        ),
        counter(
            "meshplane_grpc_server_handled_total",
            "gRPC calls answered by this replica, by method and status code (a stream counts once, when it ends).",
            plane.grpc_calls.handled_total,
            label=("method", "code"),
        ),
        histogram(
            "meshplane_grpc_server_handling_seconds",
            "Time this replica took to answer unary gRPC calls, by method (streams are left out: their length "
            "is the client's, not the server's speed).",
            plane.grpc_calls.handling_seconds,
            label=("method",),
        ),
    ]
