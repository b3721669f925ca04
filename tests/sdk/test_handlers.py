"""Task handlers: async and sync, typed inputs and validation, outputs, and how errors become task errors."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agent_runtime import (
    Agent,
    MeshClient,
    NonRetryableError,
    TaskContext,
    TaskDeadLettered,
    TaskError,
    TaskFailed,
    TaskState,
)

pytestmark = pytest.mark.timeout(60)


class Order(BaseModel):
    item: str
    quantity: int = Field(ge=1)


class Receipt(BaseModel):
    item: str
    total: float


class OutOfStock(NonRetryableError):
    """A domain error: retrying cannot help."""


async def test_async_and_sync_handlers_run_and_return_json(serve: Any, client: MeshClient) -> None:
    agent = Agent("handlers", max_concurrency=4)
    threads: dict[str, str] = {}

    @agent.task("h.async")
    async def run_async(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        threads["async"] = threading.current_thread().name
        return {"got": data, "task": ctx.task_id, "attempt": ctx.attempt, "capability": ctx.capability}

    @agent.task("h.sync")
    def run_sync(ctx: TaskContext, data: dict[str, Any]) -> list[Any]:
        threads["sync"] = threading.current_thread().name
        return [data["n"], data["n"] * 2]

    async with serve(agent):
        first = await client.submit("h.async", {"a": 1}, correlation_id="corr-1")
        second = await client.submit("h.sync", {"n": 21})
        assert await first.result(timeout=10) == {
            "got": {"a": 1},
            "task": first.id,
            "attempt": 1,
            "capability": "h.async",
        }
        assert await second.result(timeout=10) == [21, 42]

    assert threads["async"] == threading.current_thread().name  # on the event loop, no thread hop
    assert threads["sync"].startswith("handlers-handler")  # off the event loop


async def test_typed_input_is_validated_and_a_pydantic_output_is_serialised(serve: Any, client: MeshClient) -> None:
    agent = Agent("shop")
    seen: list[Order] = []

    @agent.task("shop.order")
    async def order(ctx: TaskContext, data: Order) -> Receipt:
        seen.append(data)
        return Receipt(item=data.item, total=data.quantity * 2.5)

    async with serve(agent):
        good = await client.submit("shop.order", {"item": "tea", "quantity": 2})
        assert await good.result(timeout=10) == {"item": "tea", "total": 5.0}

        bad = await client.submit("shop.order", {"item": "tea", "quantity": 0})
        with pytest.raises(TaskFailed) as failed:
            await bad.result(timeout=10)

    task = failed.value.task
    assert task.state is TaskState.FAILED
    assert task.error is not None
    assert task.error.code == "validation_failed"
    assert task.error.retryable is False
    assert "quantity" in task.error.message
    assert task.error.details["errors"][0]["loc"] == ["quantity"]
    assert len(task.attempts) == 1  # not retried
    assert all(isinstance(o, Order) for o in seen)


async def test_the_input_models_json_schema_is_registered(serve: Any, client: MeshClient) -> None:
    agent = Agent("schemas")

    @agent.task("shop.order", description="Places an order.")
    async def order(ctx: TaskContext, data: Order) -> Receipt:
        return Receipt(item=data.item, total=1.0)

    @agent.task("plain")
    async def plain(ctx: TaskContext, data: Any) -> Any:
        """Echoes whatever it gets."""
        return data

    async with serve(agent):
        [info] = await client.list_agents(capability="shop.order")

    capabilities = {c.name: c for c in info.capabilities}
    assert capabilities["shop.order"].input_schema == Order.model_json_schema()
    assert capabilities["shop.order"].output_schema == Receipt.model_json_schema()
    assert capabilities["shop.order"].description == "Places an order."
    assert capabilities["plain"].input_schema is None
    assert capabilities["plain"].description == "Echoes whatever it gets."


async def test_exceptions_become_task_errors_retryable_unless_marked(serve: Any, client: MeshClient) -> None:
    agent = Agent("errors")
    attempts: dict[str, int] = {}

    @agent.task("err.plain")
    async def plain(ctx: TaskContext, data: Any) -> None:
        attempts["plain"] = ctx.attempt
        raise ValueError("bad value")

    @agent.task("err.domain")
    def domain(ctx: TaskContext, data: Any) -> None:
        attempts["domain"] = ctx.attempt
        raise OutOfStock("no more tea", details={"item": "tea"})

    @agent.task("err.custom")
    async def custom(ctx: TaskContext, data: Any) -> None:
        raise TaskError("upstream said no", code="upstream_refused", retryable=False)

    async with serve(agent):
        plain_task = await client.submit("err.plain", None, max_attempts=2)
        domain_task = await client.submit("err.domain", None, max_attempts=3)
        custom_task = await client.submit("err.custom", None)
        with pytest.raises(TaskDeadLettered) as dead:
            await plain_task.wait(timeout=20)
        with pytest.raises(TaskFailed) as domain_failed:
            await domain_task.wait(timeout=10)
        with pytest.raises(TaskFailed) as custom_failed:
            await custom_task.wait(timeout=10)

    plain_error = dead.value.task.error
    assert plain_error is not None and plain_error.code == "ValueError" and plain_error.retryable is True
    assert plain_error.message == "bad value"
    assert "Traceback" in plain_error.details["traceback"]
    assert attempts["plain"] == 2  # retried up to max_attempts

    domain_error = domain_failed.value.task.error
    assert domain_failed.value.task.state is TaskState.FAILED
    assert domain_error is not None and domain_error.code == "OutOfStock" and domain_error.retryable is False
    assert domain_error.details == {"item": "tea"}
    assert attempts["domain"] == 1

    custom_error = custom_failed.value.task.error
    assert custom_error is not None and custom_error.code == "upstream_refused" and custom_error.retryable is False


async def test_outputs_that_are_not_json_fail_without_retry(serve: Any, client: MeshClient) -> None:
    agent = Agent("outputs")

    @agent.task("out.set")
    async def returns_a_set(ctx: TaskContext, data: Any) -> Any:
        return {1, 2}

    async with serve(agent):
        task = await client.submit("out.set", None)
        with pytest.raises(TaskFailed) as failed:
            await task.wait(timeout=10)
    assert failed.value.task.error is not None
    assert failed.value.task.error.code == "output_not_serializable"


async def test_a_nan_output_fails_the_task_with_a_clear_error(serve: Any, client: MeshClient) -> None:
    """JSON has no NaN: the output is not sent as invalid JSON, the task fails once, saying why."""
    agent = Agent("nan-outputs")

    @agent.task("out.nan")
    async def returns_nan(ctx: TaskContext, data: Any) -> Any:
        return {"ratio": float("nan")}

    async with serve(agent):
        task = await client.submit("out.nan", None)
        with pytest.raises(TaskFailed) as failed:
            await task.wait(timeout=10)
    error = failed.value.task.error
    assert failed.value.task.state is TaskState.FAILED and failed.value.task.attempt == 1
    assert error is not None and (error.code, error.retryable) == ("output_not_serializable", False)
    assert error.message == "cannot encode dict as JSON: NaN and Infinity are not JSON numbers"
