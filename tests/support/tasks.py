"""Tasks built directly for store-level tests."""

from __future__ import annotations

import time

from controlplane.domain.payload import Payload
from controlplane.domain.tasks import RetryPolicy, Task, TaskSpec, TaskState, TaskTarget, Timeouts
from controlplane.ids import new_id


def new_task(capability: str = "cap.a", *, priority: int = 0, key: str = "", now: float | None = None) -> Task:
    now = now or time.time()
    spec = TaskSpec(
        target=TaskTarget(capability=capability, label_selector={"zone": "eu"}),
        input=Payload.from_json({"hello": "wörld"}),
        retry_policy=RetryPolicy(3, 1.0, 10.0, 2.0, ("Fatal",)),
        timeouts=Timeouts(60.0, 30.0, 0.0, 3600.0),
        priority=priority,
        idempotency_key=key,
        metadata={"m": "1"},
    )
    return Task(id=new_id(), spec=spec, state=TaskState.QUEUED, create_time=now, update_time=now, scheduled_time=now)


def actors(tasks: list[Task], actor: str = "a") -> dict[str, str]:
    return {t.id: actor for t in tasks}
