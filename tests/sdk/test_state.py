"""State from handlers and clients: versions, compare-and-set conflicts, TTL."""

from __future__ import annotations

from typing import Any

import pytest

from agent_runtime import Agent, MeshClient, TaskContext, VersionConflict

pytestmark = pytest.mark.timeout(60)


async def test_handlers_use_state_in_the_agents_namespace(serve: Any, client: MeshClient) -> None:
    agent = Agent("counter")

    @agent.task("count.up")
    async def count_up(ctx: TaskContext, data: Any) -> int:
        entry = await ctx.state.get("total")
        total = (entry.value if entry else 0) + 1
        await ctx.state.put("total", total, expected_version=entry.version if entry else 0)
        return total

    @agent.task("count.read_sync")
    def read_sync(ctx: TaskContext, data: Any) -> Any:
        return ctx.blocking(ctx.state.get_value("total"))

    async with serve(agent):
        for expected in (1, 2, 3):
            assert await (await client.submit("count.up", None)).result(timeout=10) == expected
        assert await (await client.submit("count.read_sync", None)).result(timeout=10) == 3

    entry = await client.get_state("counter", "total")
    assert entry is not None and entry.value == 3 and entry.version == 3


async def test_a_compare_and_set_conflict_raises_a_typed_error_and_changes_nothing(client: MeshClient) -> None:
    first = await client.put_state("ns", "key", {"v": 1}, expected_version=0)
    assert first.version == 1
    with pytest.raises(VersionConflict) as conflict:
        await client.put_state("ns", "key", {"v": 2}, expected_version=0)  # must not exist: it does
    assert conflict.value.violations[0].type == "VERSION_MISMATCH"
    with pytest.raises(VersionConflict):
        await client.put_state("ns", "key", {"v": 2}, expected_version=7)
    with pytest.raises(VersionConflict):
        await client.delete_state("ns", "key", expected_version=7)
    stored = await client.get_state("ns", "key")
    assert stored is not None and stored.value == {"v": 1} and stored.version == 1

    second = await client.put_state("ns", "key", {"v": 2}, expected_version=1)
    assert second.version == 2
    assert await client.delete_state("ns", "key", expected_version=2) is True
    assert await client.get_state("ns", "key") is None
    assert await client.delete_state("ns", "key") is False


async def test_state_with_a_ttl_records_its_expiry(client: MeshClient) -> None:
    entry = await client.put_state("ns", "temp", "soon gone", ttl=60)
    assert entry.expire_time is not None
    assert entry.update_time is not None
    assert 59 <= (entry.expire_time - entry.update_time).total_seconds() <= 61
    page = await client.state("ns").list(prefix="te")
    assert [e.key for e in page.items] == ["temp"]
