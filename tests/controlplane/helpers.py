"""Small client-side helpers for control plane tests (raw gRPC stubs)."""

from __future__ import annotations

import json
from typing import Any

import grpc

from meshplane.v1 import common_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc
from meshplane.v1.task_pb2 import TaskState


def tasks_stub(channel: grpc.aio.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


def submit_request(
    capability: str = "demo.echo", data: Any = None, **fields: Any
) -> task_service_pb2.SubmitTaskRequest:
    target = fields.pop("target", None) or task_pb2.TaskTarget(capability=capability)
    return task_service_pb2.SubmitTaskRequest(
        target=target,
        input=common_pb2.Payload(
            data=json.dumps(data if data is not None else {}).encode(), content_type="application/json"
        ),
        **fields,
    )


async def submit(
    channel: grpc.aio.Channel, capability: str = "demo.echo", data: Any = None, **fields: Any
) -> task_pb2.Task:
    response = await tasks_stub(channel).SubmitTask(submit_request(capability, data, **fields))
    return response.task


async def get_task(channel: grpc.aio.Channel, task_id: str) -> task_pb2.Task:
    return (await tasks_stub(channel).GetTask(task_service_pb2.GetTaskRequest(task_id=task_id))).task


async def state_of(channel: grpc.aio.Channel, task_id: str) -> int:
    return (await get_task(channel, task_id)).state


def state_name(state: int) -> str:
    return TaskState.Name(state)


async def watch_events(channel: grpc.aio.Channel, task_id: str, after: int = 0) -> list[task_pb2.TaskEvent]:
    request = task_service_pb2.WatchTaskRequest(task_id=task_id, after_sequence=after)
    return [response.event async for response in tasks_stub(channel).WatchTask(request)]


def output_of(task: task_pb2.Task) -> Any:
    from google.protobuf import json_format

    if task.output.WhichOneof("kind") == "json":
        return json_format.MessageToDict(task.output.json)
    return json.loads(task.output.data)
