"""Use the mesh from a program: submit tasks, follow them, batch, handle failures, share state.

Run it while `make run` is up: `.venv/bin/python examples/python/client.py`.
"""

from __future__ import annotations

import asyncio

from agent_runtime import MeshClient, TaskFailed, TaskSpec


async def main() -> None:
    async with MeshClient() as client:  # MESHPLANE_TARGET or 127.0.0.1:50051
        echo = await client.submit("demo.echo", {"text": "hi"})
        print("demo.echo ->", await echo.result(timeout=30))

        sleep = await client.submit("demo.sleep", {"seconds": 1})
        async for event in sleep.watch():
            progress = f" {event.progress:.0%} {event.message}" if event.type.value == "PROGRESS" else ""
            print(f"  demo.sleep #{event.sequence} {event.type.value}{progress}")

        batch = await client.submit_many([TaskSpec("demo.echo", {"n": n}) for n in range(5)])
        print("batch ->", [await task.result(timeout=30) for task in batch])

        flaky = await client.submit("demo.flaky", {"failures": 1})
        print("demo.flaky ->", await flaky.result(timeout=60), "after retrying")

        try:
            await (await client.submit("demo.sleep", {"seconds": -1})).result(timeout=30)
        except TaskFailed as failure:
            print("invalid input ->", failure.task.state.value, failure.task.error.code if failure.task.error else "")

        written = await client.put_state("examples", "greeting", {"text": "hello"})
        stored = await client.get_state("examples", "greeting")
        print("state ->", stored.value if stored else None, "version", written.version)


if __name__ == "__main__":
    asyncio.run(main())
