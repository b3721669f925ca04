"""The smallest agent. Run it: `.venv/bin/meshplane agent run examples/python/minimal_agent.py:agent`."""

from agent_runtime import Agent, TaskContext

agent = Agent("hello", version="1.0.0")


@agent.task("hello.greet")
async def greet(ctx: TaskContext, data: dict) -> dict:
    await ctx.progress(0.5, "thinking")
    return {"greeting": f"Hello, {data.get('name', 'world')}!"}


if __name__ == "__main__":
    agent.run()  # MESHPLANE_TARGET or 127.0.0.1:50051; Ctrl-C finishes in-flight work, then exits
