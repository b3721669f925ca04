"""What waits to be written on the link: whatever queued up while the writer was busy goes out together.

Per-frame cost dominates the link's throughput, so task updates and task results are coalesced into
multi-entry frames.
"""

from __future__ import annotations

import asyncio

from meshplane.v1 import agent_link_pb2

Ref = tuple[str, int]

MAX_ENTRIES_PER_FRAME = 256
# Control frames (publishes, mostly) kept while disconnected; beyond this the oldest are dropped
# (channel delivery is at-most-once anyway).
MAX_PENDING_CONTROL = 10_000
MAX_BYTES_PER_FRAME = 4 * 1024 * 1024
_ENTRY_OVERHEAD = 64
_STARTED = agent_link_pb2.TASK_UPDATE_KIND_STARTED


class Outbox:
    """Control frames (heartbeat, publish, draining ...) in order, then updates, then results."""

    def __init__(self) -> None:
        self._control: list[agent_link_pb2.ConnectRequest] = []
        self._started: list[Ref] = []
        self._updates: list[agent_link_pb2.TaskUpdate] = []
        self._results: dict[Ref, agent_link_pb2.TaskResult] = {}
        self.ready = asyncio.Event()

    @property
    def pending(self) -> bool:
        return bool(self._control or self._started or self._updates or self._results)

    def control(self, frame: agent_link_pb2.ConnectRequest) -> None:
        if len(self._control) >= MAX_PENDING_CONTROL:
            del self._control[0]
        self._control.append(frame)
        self.ready.set()

    def started(self, ref: Ref) -> None:
        """A STARTED update (its message is only built if the attempt has not finished by the next flush)."""
        self._started.append(ref)
        self.ready.set()

    def update(self, update: agent_link_pb2.TaskUpdate) -> None:
        self._updates.append(update)
        self.ready.set()

    def result(self, ref: Ref, result: agent_link_pb2.TaskResult) -> None:
        self._results[ref] = result
        self.ready.set()

    def discard_result(self, ref: Ref) -> None:
        self._results.pop(ref, None)

    def clear_task_messages(self) -> None:
        """Forget queued updates and results (a new session re-queues what it still needs)."""
        self._started.clear()
        self._updates.clear()
        self._results.clear()

    def wake(self) -> None:
        """Wake the writer even with nothing queued (e.g. so it notices it should close)."""
        self.ready.set()

    def take(self) -> list[agent_link_pb2.ConnectRequest]:
        """Everything queued, as frames; the outbox is empty afterwards."""
        self.ready.clear()
        frames = self._control
        self._control = []
        started, self._started = self._started, []
        results, self._results = self._results, {}
        # The plane takes a result as "started" too: skipping STARTED for attempts that already finished
        # halves the entries a fast handler costs.
        updates = [
            agent_link_pb2.TaskUpdate(task_id=task_id, attempt=attempt, kind=_STARTED)
            for task_id, attempt in started
            if (task_id, attempt) not in results
        ]
        if self._updates:
            updates += self._updates
            self._updates = []
        for start in range(0, len(updates), MAX_ENTRIES_PER_FRAME):
            chunk = updates[start : start + MAX_ENTRIES_PER_FRAME]
            frames.append(agent_link_pb2.ConnectRequest(task_updates=agent_link_pb2.TaskUpdates(updates=chunk)))
        if results:
            frames.extend(_result_frames(list(results.values())))
        return frames


def _result_frames(results: list[agent_link_pb2.TaskResult]) -> list[agent_link_pb2.ConnectRequest]:
    frames: list[agent_link_pb2.ConnectRequest] = []
    chunk: list[agent_link_pb2.TaskResult] = []
    size = 0
    for result in results:
        entry = _ENTRY_OVERHEAD + len(result.output.data) if result.HasField("output") else _ENTRY_OVERHEAD
        if chunk and (len(chunk) >= MAX_ENTRIES_PER_FRAME or size + entry > MAX_BYTES_PER_FRAME):
            frames.append(agent_link_pb2.ConnectRequest(task_results=agent_link_pb2.TaskResults(results=chunk)))
            chunk, size = [], 0
        chunk.append(result)
        size += entry
    if chunk:
        frames.append(agent_link_pb2.ConnectRequest(task_results=agent_link_pb2.TaskResults(results=chunk)))
    return frames
