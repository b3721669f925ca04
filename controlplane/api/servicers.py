"""Client-facing gRPC services: convert, call the use case, convert back. No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from controlplane import paging
from controlplane.api import convert
from controlplane.api.context import call_context
from controlplane.domain.channels import ChannelMessage, must_make_room
from controlplane.domain.tasks import TaskFilter, TaskState
from controlplane.errors import InvalidArgument
from controlplane.observability.tracing import submit_span
from controlplane.services.agents import AgentService
from controlplane.services.audit import AuditTrail
from controlplane.services.channels import ChannelService, check_channel_name
from controlplane.services.state import StateService
from controlplane.services.tasks import TaskService
from controlplane.services.watch import WatchHub
from meshplane.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)

logger = logging.getLogger(__name__)

# A watcher re-reads the store at least this often, in case a change notice was lost.
WATCH_POLL_SECONDS = 5.0
# A listing's answer stays under the 4 MiB gRPC clients accept by default: a page of large tasks or values ends
# early (its next_page_token goes on from there) rather than failing as too big. One item always goes.
LIST_RESPONSE_BYTES = 4_000_000

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def _require(field: str, value: str) -> None:
    if not value:
        raise InvalidArgument.of(field, "is required")


def _within_response_budget(page: paging.Page[T], messages: list[M]) -> tuple[paging.Page[T], list[M]]:
    """The page cut to the leading messages that fit in LIST_RESPONSE_BYTES."""
    count = paging.fitting([m.ByteSize() + 8 for m in messages], LIST_RESPONSE_BYTES)  # + field tag and length
    return page.cut(count), messages[:count]


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, tasks: TaskService, watch: WatchHub) -> None:
        self._tasks = tasks
        self._watch = watch

    async def SubmitTask(
        self, request: task_service_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.SubmitTaskResponse:
        call = call_context(context)
        with submit_span("meshplane.SubmitTask", call.metadata, capability=request.target.capability) as (tp, ts_):
            submit = convert.submit_request_from_proto(
                request, traceparent=tp, tracestate=ts_, call_correlation_id=call.correlation_id
            )
            [submitted] = await self._tasks.submit([submit], actor=call.actor)
        return task_service_pb2.SubmitTaskResponse(
            task=convert.task_to_proto(submitted.task, include_input=False), deduplicated=submitted.deduplicated
        )

    async def BatchSubmitTasks(
        self, request: task_service_pb2.BatchSubmitTasksRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.BatchSubmitTasksResponse:
        call = call_context(context)
        with submit_span("meshplane.BatchSubmitTasks", call.metadata, tasks=len(request.requests)) as (tp, ts_):
            submits = [
                convert.submit_request_from_proto(
                    r,
                    field_prefix=f"requests[{i}].",
                    traceparent=tp,
                    tracestate=ts_,
                    call_correlation_id=call.correlation_id,
                )
                for i, r in enumerate(request.requests)
            ]
            submitted = await self._tasks.submit(submits, actor=call.actor)
        memo = convert.ProtoMemo()
        return task_service_pb2.BatchSubmitTasksResponse(
            tasks=[convert.task_to_proto(s.task, include_input=False, memo=memo) for s in submitted],
            deduplicated=[s.deduplicated for s in submitted],
        )

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.GetTaskResponse:
        _require("task_id", request.task_id)
        task = await self._tasks.get(request.task_id)
        return task_service_pb2.GetTaskResponse(task=convert.task_to_proto(task))

    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.ListTasksResponse:
        state = None
        if request.state:
            try:
                state = TaskState(request.state)
            except ValueError as exc:
                raise InvalidArgument.of("state", f"unknown task state {request.state}") from exc
        task_filter = TaskFilter(state=state, capability=request.capability, correlation_id=request.correlation_id)
        page = await self._tasks.list_page(task_filter, page_size=request.page_size, page_token=request.page_token)
        tasks = [convert.task_to_proto(t) for t in page.items]
        page, tasks = _within_response_budget(page, tasks)
        return task_service_pb2.ListTasksResponse(tasks=tasks, next_page_token=page.next_page_token)

    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.CancelTaskResponse:
        _require("task_id", request.task_id)
        task = await self._tasks.cancel(request.task_id, reason=request.reason, actor=call_context(context).actor)
        return task_service_pb2.CancelTaskResponse(task=convert.task_to_proto(task))

    async def ResubmitTask(
        self, request: task_service_pb2.ResubmitTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.ResubmitTaskResponse:
        _require("task_id", request.task_id)
        task = await self._tasks.resubmit(request.task_id, actor=call_context(context).actor)
        return task_service_pb2.ResubmitTaskResponse(task=convert.task_to_proto(task))

    async def WatchTask(
        self, request: task_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_service_pb2.WatchTaskResponse]:
        _require("task_id", request.task_id)
        if request.after_sequence < 0:
            raise InvalidArgument.of("after_sequence", "must not be negative")
        after = request.after_sequence
        with self._watch.watch(request.task_id) as changed:
            # State first, events second: if the task had already ended, the events read next include its end.
            ended = (await self._tasks.get(request.task_id)).state.is_terminal
            while True:
                changed.clear()  # before reading, so a change during the read is not missed
                events = await self._tasks.events_after(request.task_id, after, check_exists=False)
                for event in events:
                    yield task_service_pb2.WatchTaskResponse(event=convert.task_event_to_proto(event))
                    after = event.sequence
                # The terminal event is written in the same transaction as the terminal state.
                if events and events[-1].state.is_terminal:
                    return
                if events:
                    continue  # there may be more than one page
                if ended:
                    return  # every stored event was sent (a task that had ended before: its end too)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), WATCH_POLL_SECONDS)


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self, agents: AgentService) -> None:
        self._agents = agents

    async def ListAgents(
        self, request: agent_service_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ListAgentsResponse:
        agents, token = await self._agents.list_agents(
            capability=request.capability, page_size=request.page_size, page_token=request.page_token
        )
        return agent_service_pb2.ListAgentsResponse(
            agents=[convert.agent_to_proto(a) for a in agents], next_page_token=token
        )

    async def GetAgent(
        self, request: agent_service_pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.GetAgentResponse:
        _require("agent_name", request.agent_name)
        agent = await self._agents.get_agent(request.agent_name)
        return agent_service_pb2.GetAgentResponse(agent=convert.agent_to_proto(agent))

    async def ListAgentInstances(
        self, request: agent_service_pb2.ListAgentInstancesRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ListAgentInstancesResponse:
        _require("agent_name", request.agent_name)
        instances, token = await self._agents.list_instances(
            request.agent_name,
            include_disconnected=request.include_disconnected,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return agent_service_pb2.ListAgentInstancesResponse(
            instances=[convert.instance_to_proto(i) for i in instances], next_page_token=token
        )

    async def DrainAgentInstance(
        self, request: agent_service_pb2.DrainAgentInstanceRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.DrainAgentInstanceResponse:
        timeout = convert.seconds(request.timeout) if request.HasField("timeout") else None
        call = call_context(context)
        instance = await self._agents.drain(
            request.agent_name,
            request.instance_id,
            timeout=timeout,
            reason=request.reason,
            actor=call.actor,
            correlation_id=call.correlation_id,
        )
        return agent_service_pb2.DrainAgentInstanceResponse(instance=convert.instance_to_proto(instance))


class _QueueSubscriber:
    """A Subscribe stream's mailbox; a subscriber too slow to keep up loses the oldest messages (past
    domain.channels.must_make_room; the newest always stays)."""

    def __init__(self, on_dropped: Callable[[], None]) -> None:
        self._waiting: deque[ChannelMessage] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._on_dropped = on_dropped
        self.dropped = 0

    def deliver(self, message: ChannelMessage) -> None:
        size = len(message.payload.data)
        while must_make_room(len(self._waiting), self._bytes, size):
            oldest = self._waiting.popleft()
            self._bytes -= len(oldest.payload.data)
            self.dropped += 1
            self._on_dropped()
        self._waiting.append(message)
        self._bytes += size
        self._ready.set()

    async def next(self) -> ChannelMessage:
        while not self._waiting:
            self._ready.clear()
            await self._ready.wait()
        message = self._waiting.popleft()
        self._bytes -= len(message.payload.data)
        return message


class ChannelServicer(channel_pb2_grpc.ChannelServiceServicer):
    def __init__(self, channels: ChannelService) -> None:
        self._channels = channels

    async def Publish(
        self, request: channel_pb2.PublishRequest, context: grpc.aio.ServicerContext
    ) -> channel_pb2.PublishResponse:
        payload = convert.required_payload(request, "payload")
        call = call_context(context)
        message = await self._channels.publish(
            request.channel,
            payload,
            headers=dict(request.headers),
            publisher=call.actor,
            correlation_id=call.correlation_id,
        )
        return channel_pb2.PublishResponse(message=convert.channel_message_to_proto(message))

    async def Subscribe(
        self, request: channel_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[channel_pb2.SubscribeResponse]:
        check_channel_name(request.channel)
        subscriber = _QueueSubscriber(self._channels.count_dropped)
        await self._channels.subscribe(request.channel, subscriber)
        try:
            yield channel_pb2.SubscribeResponse(started=channel_pb2.SubscriptionStarted(channel=request.channel))
            while True:
                message = await subscriber.next()
                yield channel_pb2.SubscribeResponse(message=convert.channel_message_to_proto(message))
        finally:
            self._channels.unsubscribe_soon(request.channel, subscriber)

    async def ListChannels(
        self, request: channel_pb2.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> channel_pb2.ListChannelsResponse:
        channels, token = await self._channels.list_page(page_size=request.page_size, page_token=request.page_token)
        return channel_pb2.ListChannelsResponse(
            channels=[convert.channel_to_proto(c) for c in channels], next_page_token=token
        )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def ListAuditEntries(
        self, request: audit_pb2.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditEntriesResponse:
        entries, token = await self._trail.list_page(
            convert.audit_filter_from_proto(request), page_size=request.page_size, page_token=request.page_token
        )
        return audit_pb2.ListAuditEntriesResponse(
            entries=[convert.audit_entry_to_proto(e) for e in entries], next_page_token=token
        )


class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(self, state: StateService) -> None:
        self._state = state

    async def GetState(
        self, request: state_pb2.GetStateRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.GetStateResponse:
        entry = await self._state.get(request.namespace, request.key)
        return state_pb2.GetStateResponse(entry=convert.state_entry_to_proto(entry))

    async def PutState(
        self, request: state_pb2.PutStateRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.PutStateResponse:
        call = call_context(context)
        entry = await self._state.put(
            request.namespace,
            request.key,
            convert.required_payload(request, "value"),
            ttl=convert.seconds(request.ttl) if request.HasField("ttl") else None,
            expected_version=request.expected_version if request.HasField("expected_version") else None,
            actor=call.actor,
            correlation_id=call.correlation_id,
        )
        return state_pb2.PutStateResponse(entry=convert.state_entry_to_proto(entry))

    async def DeleteState(
        self, request: state_pb2.DeleteStateRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.DeleteStateResponse:
        call = call_context(context)
        await self._state.delete(
            request.namespace,
            request.key,
            expected_version=request.expected_version if request.HasField("expected_version") else None,
            actor=call.actor,
            correlation_id=call.correlation_id,
        )
        return state_pb2.DeleteStateResponse()

    async def ListStates(
        self, request: state_pb2.ListStatesRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.ListStatesResponse:
        page = await self._state.list_page(
            request.namespace, prefix=request.key_prefix, page_size=request.page_size, page_token=request.page_token
        )
        entries = [convert.state_entry_to_proto(e) for e in page.items]
        page, entries = _within_response_budget(page, entries)
        return state_pb2.ListStatesResponse(entries=entries, next_page_token=page.next_page_token)
