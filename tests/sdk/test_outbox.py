"""The outbox coalesces what queued up while the writer was busy into few, multi-entry frames."""

from __future__ import annotations

from agent_runtime._outbox import MAX_ENTRIES_PER_FRAME, Outbox
from meshplane.v1 import agent_link_pb2, common_pb2


def _result(task_id: str) -> agent_link_pb2.TaskResult:
    return agent_link_pb2.TaskResult(task_id=task_id, attempt=1, output=common_pb2.Payload(data=b"1"))


async def test_updates_and_results_share_frames_and_finished_attempts_skip_started() -> None:
    outbox = Outbox()
    outbox.control(agent_link_pb2.ConnectRequest(heartbeat=agent_link_pb2.Heartbeat(in_flight=2)))
    for n in range(3):
        outbox.started((f"t{n}", 1))
    outbox.update(agent_link_pb2.TaskUpdate(task_id="t2", attempt=1, kind=agent_link_pb2.TASK_UPDATE_KIND_PROGRESS))
    outbox.result(("t0", 1), _result("t0"))
    outbox.result(("t1", 1), _result("t1"))

    frames = outbox.take()

    assert [f.WhichOneof("frame") for f in frames] == ["heartbeat", "task_updates", "task_results"]
    updates = frames[1].task_updates.updates
    assert [(u.task_id, u.kind) for u in updates] == [
        ("t2", agent_link_pb2.TASK_UPDATE_KIND_STARTED),  # t0 and t1 finished: their result says "started"
        ("t2", agent_link_pb2.TASK_UPDATE_KIND_PROGRESS),
    ]
    assert [r.task_id for r in frames[2].task_results.results] == ["t0", "t1"]
    assert not outbox.pending and not outbox.ready.is_set()


async def test_many_results_are_split_into_bounded_frames() -> None:
    outbox = Outbox()
    for n in range(MAX_ENTRIES_PER_FRAME * 2 + 1):
        outbox.result((f"t{n}", 1), _result(f"t{n}"))
    outbox.discard_result(("t0", 1))
    frames = outbox.take()
    assert [len(f.task_results.results) for f in frames] == [MAX_ENTRIES_PER_FRAME, MAX_ENTRIES_PER_FRAME]
