"""Channels: messages reach on_channel handlers; tasks publish to subscribers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from agent_runtime import Agent, ChannelContext, MeshClient, TaskContext

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
