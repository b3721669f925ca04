"""Channels: messages reach on_channel handlers; tasks publish to subscribers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from agent_runtime import Agent, ChannelContext, MeshClient, TaskContext
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(60)


class Announcement(BaseModel):
    title: str


async def test_channel_messages_reach_an_on_channel_handler(serve: Any, client: MeshClient) -> None:
    agent = Agent("listener")
    received: asyncio.Queue[tuple[Any, str, dict[str, str]]] = asyncio.Queue()

    @agent.on_channel("announcements")
    async def on_announcement(ctx: ChannelContext, message: Announcement) -> None:
        await received.put((message, ctx.publisher, ctx.headers))

    @agent.on_channel("raw")
    def on_raw(ctx: ChannelContext, message: Any) -> None:  # a sync handler, run in a thread
        ctx.blocking(received.put((message, ctx.channel, {})))

    async with serve(agent):
        published = await client.publish("announcements", {"title": "hello"}, headers={"lang": "en"})
        message, publisher, headers = await asyncio.wait_for(received.get(), 10)
        assert message == Announcement(title="hello")
        assert publisher == published.publisher
        assert headers == {"lang": "en"}

        await client.publish("raw", [1, 2, 3])
        assert await asyncio.wait_for(received.get(), 10) == ([1, 2, 3], "raw", {})


async def test_a_task_publishes_to_channel_subscribers(serve: Any, client: MeshClient) -> None:
    agent = Agent("publisher")

    @agent.task("news.post")
    async def post(ctx: TaskContext, data: dict[str, Any]) -> None:
        await ctx.publish("news", {"headline": data["headline"]}, headers={"source": ctx.task_id})

    async with serve(agent), client.subscribe("news") as subscription:
        task = await client.submit("news.post", {"headline": "agents talk"})
        message = await asyncio.wait_for(anext(subscription), 10)
        await task.wait(timeout=10)

    assert message.data == {"headline": "agents talk"}
    assert message.headers == {"source": task.id}
    assert message.publisher.startswith(f"agent/publisher/{agent.instance_id}")


async def test_a_slow_handler_runs_a_bounded_number_at_once_and_the_oldest_waiting_are_dropped(
    serve: Any, client: MeshClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agent_runtime import _inbox

    monkeypatch.setattr(_inbox, "HANDLERS_PER_CHANNEL", 2)
    monkeypatch.setattr(_inbox, "MAX_WAITING_MESSAGES", 3)
    caplog.set_level(logging.WARNING, logger="agent_runtime")
    agent = Agent("slow-listener")
    release = asyncio.Event()
    running = 0
    most_at_once = 0
    handled: list[int] = []
    all_arrived = asyncio.Event()

    @agent.on_channel("busy")
    async def on_busy(ctx: ChannelContext, message: dict[str, int]) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await release.wait()
        handled.append(message["n"])
        running -= 1

    @agent.on_channel("sentinel")
    async def on_sentinel(ctx: ChannelContext, message: Any) -> None:
        all_arrived.set()  # the stream is in order: every "busy" message came before this one

    async with serve(agent):
        for number in range(20):
            await client.publish("busy", {"n": number})
        await client.publish("sentinel", {})
        await asyncio.wait_for(all_arrived.wait(), 10)
        assert running == 2 and handled == []
        release.set()
        await eventually(lambda: len(handled) == 5, message="the two running and the three newest handled")
    assert sorted(handled) == [0, 1, 17, 18, 19] and most_at_once == 2
    warnings = [r.getMessage() for r in caplog.records if "slower than its messages come" in r.getMessage()]
    assert len(warnings) == 1 and "channel busy" in warnings[0]


async def test_the_channels_in_use_are_listed_by_name_a_page_at_a_time(client: MeshClient) -> None:
    for name in ("sdk.b", "sdk.a", "sdk.b"):
        await client.publish(name, {"n": 1})
    channels = await client.list_channels()
    assert [c.name for c in channels] == ["sdk.a", "sdk.b"]
    assert all(c.create_time is not None and c.last_use_time is not None for c in channels)
    first = await client.list_channels_page(page_size=1)
    assert [c.name for c in first.items] == ["sdk.a"] and first.next_page_token
    second = await client.list_channels_page(page_size=1, page_token=first.next_page_token)
    assert [c.name for c in second.items] == ["sdk.b"] and not second.next_page_token
