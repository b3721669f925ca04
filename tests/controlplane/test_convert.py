"""Task conversion at the API edge: every field reaches the proto, also when a batch shares one memo."""

from __future__ import annotations

import dataclasses

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from controlplane.api.convert import ProtoMemo, frames, task_to_proto
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import (
    Attempt,
    AttemptOutcome,
    RetryPolicy,
    Task,
    TaskError,
    TaskRef,
    TaskSpec,
    TaskState,
    TaskTarget,
    Timeouts,
)
from controlplane.link.messages import AckMsg, AssignmentMsg
from meshplane.v1 import agent_link_pb2, common_pb2, task_pb2

NOW = 1_790_000_000.25
POLICY = RetryPolicy(max_attempts=3, initial_backoff=1.0, max_backoff=60.0, backoff_multiplier=2.0)
TARGET = TaskTarget(capability="demo.echo")  # shared, as the tasks of one batch request share theirs
TIMEOUTS = Timeouts(schedule_to_start=60, start_to_close=300, heartbeat=0, schedule_to_close=3600)


def _stamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1_000_000))  # whole microseconds, as the store keeps times
    return stamp


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def _new_task(task_id: str, **spec_fields: object) -> Task:
    spec = TaskSpec(target=TARGET, input=Payload(b'{"n":1}'), retry_policy=POLICY, timeouts=TIMEOUTS)
    return Task(
        id=task_id,
        spec=dataclasses.replace(spec, **spec_fields),  # type: ignore[arg-type]
        state=TaskState.QUEUED,
        create_time=NOW,
        update_time=NOW,
        scheduled_time=NOW,
    )


def _expected(task: Task) -> task_pb2.Task:
    """The proto written out field by field (the oracle)."""
    spec = task.spec
    policy, timeouts = spec.retry_policy, spec.timeouts
    return task_pb2.Task(
        id=task.id,
        target=task_pb2.TaskTarget(
            capability=spec.target.capability,
            agent_name=spec.target.agent_name,
            label_selector=spec.target.label_selector,
            routing_key=spec.target.routing_key,
        ),
        priority=spec.priority,
        idempotency_key=spec.idempotency_key,
        retry_policy=task_pb2.RetryPolicy(
            max_attempts=policy.max_attempts,
            initial_backoff=_seconds(policy.initial_backoff),
            max_backoff=_seconds(policy.max_backoff),
            backoff_multiplier=policy.backoff_multiplier,
            non_retryable_error_codes=list(policy.non_retryable_error_codes),
        ),
        timeouts=task_pb2.TaskTimeouts(
            schedule_to_start=_seconds(timeouts.schedule_to_start),
            start_to_close=_seconds(timeouts.start_to_close),
            heartbeat=_seconds(timeouts.heartbeat),
            schedule_to_close=_seconds(timeouts.schedule_to_close),
        ),
        correlation_id=spec.correlation_id,
        metadata=spec.metadata,
        state=int(task.state),  # type: ignore[arg-type]
        attempt=task.attempt,
        progress=task.progress,
        progress_message=task.progress_message,
        resubmitted_from=task.resubmitted_from,
        cancel_reason=task.cancel_reason,
        create_time=_stamp(task.create_time),
        update_time=_stamp(task.update_time),
    )


def test_a_batch_sharing_a_memo_keeps_each_tasks_own_fields() -> None:
    other_target = TaskTarget(capability="demo.other", label_selector={"zone": "a"}, routing_key="k")
    other_policy = dataclasses.replace(POLICY, max_attempts=7, non_retryable_error_codes=("bad",))
    tasks = [
        _new_task("t1", metadata={"team": "a"}, idempotency_key="key-1", correlation_id="c-1"),
        _new_task("t2"),  # same shared parts as t1, none of its own fields
        _new_task("t3", target=other_target),
        _new_task("t4", retry_policy=other_policy, priority=5),
        dataclasses.replace(_new_task("t5"), create_time=NOW + 1, update_time=NOW + 2),
        _new_task("t6", timeouts=dataclasses.replace(TIMEOUTS, heartbeat=10)),
        _new_task("t7", priority=-3),
        dataclasses.replace(_new_task("t8"), update_time=NOW + 3),
    ]
    memo = ProtoMemo()
    converted = [task_to_proto(task, include_input=False, memo=memo) for task in tasks]
    assert converted == [_expected(task) for task in tasks]
    assert converted[1].metadata == {} and converted[1].idempotency_key == ""


def test_a_finished_task_carries_attempts_error_output_and_end_time() -> None:
    error = TaskError(code="boom", message="it broke", retryable=False, details={"line": 3})
    task = dataclasses.replace(
        _new_task("t1", metadata={"team": "a"}),
        state=TaskState.DEAD_LETTER,
        attempt=2,
        attempts=[
            Attempt(1, "echo", "inst-1", "sess-1", AttemptOutcome.LOST, assign_time=NOW, start_time=NOW + 1),
            Attempt(
                2, "echo", "inst-2", "sess-2", AttemptOutcome.FAILED, assign_time=NOW + 5, error=error, end_time=NOW + 6
            ),
        ],
        error=error,
        progress=0.5,
        progress_message="half",
        resubmitted_from="t0",
        end_time=NOW + 6,
        update_time=NOW + 6,
    )
    proto = task_to_proto(task)
    expected = _expected(task)
    details = struct_pb2.Struct()
    details.update({"line": 3})
    expected_error = common_pb2.TaskError(code="boom", message="it broke", retryable=False, details=details)
    expected.error.CopyFrom(expected_error)
    expected.end_time.CopyFrom(_stamp(NOW + 6))
    assert proto.error == expected_error
    assert proto.end_time == _stamp(NOW + 6)
    assert [a.attempt for a in proto.attempts] == [1, 2]
    assert proto.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
    assert proto.attempts[1].error == expected_error
    assert proto.attempts[1].end_time == _stamp(NOW + 6)
    assert proto.input.json.struct_value["n"] == 1
    proto.ClearField("attempts")
    proto.ClearField("input")
    assert proto == expected


def _assignment(task_id: str, **fields: object) -> AssignmentMsg:
    values: dict[str, object] = {
        "task_id": task_id,
        "attempt": 1,
        "capability": "demo.echo",
        "input": Payload(b'{"n":1}'),
        "priority": 0,
        "correlation_id": "",
        "metadata": {},
        "deadline": NOW + 300,
        "heartbeat_timeout": 0.0,
        "max_attempts": 3,
    }
    values.update(fields)
    return AssignmentMsg(**values)  # type: ignore[arg-type]


def _expected_assignment(message: AssignmentMsg) -> agent_link_pb2.Assignment:
    return agent_link_pb2.Assignment(
        task_id=message.task_id,
        attempt=message.attempt,
        capability=message.capability,
        input=common_pb2.Payload(data=message.input.data, content_type=message.input.content_type),
        priority=message.priority,
        correlation_id=message.correlation_id,
        metadata=message.metadata,
        deadline=_stamp(message.deadline) if message.deadline is not None else None,
        heartbeat_timeout=_seconds(message.heartbeat_timeout) if message.heartbeat_timeout else None,
        max_attempts=message.max_attempts,
        traceparent=message.traceparent,
        tracestate=message.tracestate,
    )


def test_assignments_share_a_frame_and_keep_each_ones_own_fields() -> None:
    run = [
        _assignment("a1", correlation_id="c-1", metadata={"k": "v"}, traceparent="00-1-2-01", tracestate="x=1"),
        _assignment("a2", attempt=2),  # same shell as a1, none of its own fields
        _assignment("a3", capability="demo.other", input=Payload(b"\x00\x01", "application/octet-stream")),
        _assignment("a4", priority=7),
        _assignment("a5", deadline=None),
        _assignment("a6", heartbeat_timeout=2.5),
        _assignment("a7", max_attempts=9),
    ]
    ack = AckMsg((TaskRef("done", 1),))
    out = frames([*run, ack, _assignment("a8")])
    assert [frame.WhichOneof("frame") for frame in out] == ["assignments", "result_acks", "assignments"]
    assert list(out[0].assignments.assignments) == [_expected_assignment(m) for m in run]
    assert list(out[2].assignments.assignments) == [_expected_assignment(_assignment("a8"))]
