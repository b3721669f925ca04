"""A Python SDK agent for the chaos test: every execution is appended to a log before and after the work.

    python tests/chaos/chaos_agent.py TARGET INSTANCE_ID LOG_FILE

The log lines are written with os.write on an O_APPEND file: a SIGKILL loses nothing already written.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys

from agent_runtime import Agent, TaskContext


def main() -> None:
    target, instance_id, log_path = sys.argv[1:4]
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(event: str, ctx: TaskContext) -> None:
        line = {"event": event, "task": ctx.task_id, "attempt": ctx.attempt, "instance": instance_id}
        os.write(log, (json.dumps(line) + "\n").encode())

    agent = Agent("chaos", max_concurrency=16, instance_id=instance_id, drain_timeout=5)

    @agent.task("chaos.work")
    async def work(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        record("start", ctx)
        await asyncio.sleep(random.uniform(0.01, 0.15))
        record("end", ctx)
        return {"n": data["n"]}

    agent.run(target)


if __name__ == "__main__":
    main()
