"""A typed agent: pydantic inputs and outputs, a domain error, state with compare-and-set, a channel.

Run it next to `make run`:

    .venv/bin/meshplane agent run examples/python/typed_agent.py:agent
    .venv/bin/meshplane task submit shop.quote --input '{"item": "tea", "quantity": 3}' --wait
    .venv/bin/meshplane task submit shop.quote --input '{"item": "tea", "quantity": 0}' --wait   # validation_failed
    .venv/bin/meshplane channel publish shop.prices --data '{"item": "tea", "price": 2.5}'
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from agent_runtime import Agent, ChannelContext, NonRetryableError, TaskContext, VersionConflict

agent = Agent("shop", version="1.0.0", max_concurrency=8, labels={"team": "examples"})

prices: dict[str, float] = {"tea": 1.5, "coffee": 2.0}


class Order(BaseModel):
    """What `shop.quote` takes; its JSON Schema is registered with the capability."""

    item: str
    quantity: int = Field(ge=1, le=100)


class Quote(BaseModel):
    item: str
    quantity: int
    total: float
    quotes_so_far: int


class PriceUpdate(BaseModel):
    item: str
    price: float = Field(gt=0)


class UnknownItem(NonRetryableError):
    """No price for the item: another attempt cannot help, so the task fails at once."""


async def count_quote(ctx: TaskContext) -> int:
    """Increment a counter in the agent's state namespace; compare-and-set retries on a conflict."""
    while True:
        entry = await ctx.state.get("quotes")
        count = (entry.value if entry else 0) + 1
        try:
            await ctx.state.put("quotes", count, expected_version=entry.version if entry else 0)
        except VersionConflict:
            continue  # another instance wrote first: read again
        return count


@agent.task("shop.quote")
async def quote(ctx: TaskContext, order: Order) -> Quote:
    """Prices an order."""
    if order.item not in prices:
        raise UnknownItem(f"no price for {order.item!r}", details={"known": sorted(prices)})
    ctx.logger.info("quoting %d x %s", order.quantity, order.item)
    return Quote(
        item=order.item,
        quantity=order.quantity,
        total=round(prices[order.item] * order.quantity, 2),
        quotes_so_far=await count_quote(ctx),
    )


@agent.on_channel("shop.prices")
async def on_price(ctx: ChannelContext, update: PriceUpdate) -> None:
    prices[update.item] = update.price
    ctx.logger.info("price of %s is now %.2f", update.item, update.price)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    agent.run()
