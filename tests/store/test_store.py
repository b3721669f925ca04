"""One store test suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controlplane.domain.payload import Payload
from controlplane.domain.scheduling import Strategy
from controlplane.domain.state import StateEntry
from controlplane.domain.tasks import Task, TaskFilter, TaskState, TaskTarget
from controlplane.store import migrate
from controlplane.store.database import Database
from controlplane.store.schema import channels, metadata, tasks
from controlplane.store.sql import DuplicateKey
from controlplane.store.tasks import StickyKind, Takers
from controlplane.store.unit_of_work import Store
from tests.support.tasks import actors, new_task

pytestmark = pytest.mark.timeout(60)


async def test_migrations_create_exactly_the_declared_schema(store: Store) -> None:
    async with store.reader() as uow:
        diff = await uow.connection.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    # Expression indexes (priority DESC) cannot be reflected for comparison; they are checked below.
    meaningful = [d for d in diff if not (d[0] in ("add_index", "remove_index") and d[1].name == "ix_tasks_queue")]
    assert meaningful == []
    assert await migrate.current_revision(store.database) == migrate.head_revision()


async def test_upgrade_is_idempotent(store: Store) -> None:
    assert await migrate.upgrade(store.database) == migrate.head_revision()


async def test_channels_of_an_older_schema_keep_their_names_and_are_last_used_when_first_used(
    database_url: str,
) -> None:
    database = Database(database_url, pool_size=2)
    try:
        assert await migrate.upgrade(database, "0002") == "0002"
        created = time.time() - 3600
        async with database.transaction() as conn:
            await conn.execute(
                sa.text("INSERT INTO channels (name, create_time) VALUES ('news', :created)"),
                {"created": channels.c.create_time.type.process_bind_param(created, conn.dialect)},
            )
        assert await migrate.upgrade(database) == migrate.head_revision()
        async with Store(database).reader() as uow:
            [news] = await uow.channels.list_page(limit=10, after_name=None)
        assert news.name == "news"
        assert news.create_time == news.last_use_time == pytest.approx(created, abs=1e-3)
    finally:
        await database.dispose()


async def test_task_round_trips_through_the_store(store: Store) -> None:
    task = new_task(key="k-1")
    async with store.hot_transaction(single_statement=True) as hot:
        await hot.tasks.insert([task], actors=actors([task], "client/test"))
    async with store.reader() as uow:
        loaded = await uow.tasks.get(task.id)
        events = await uow.tasks.events_after(task.id, 0)
    assert loaded is not None
    assert loaded.spec == task.spec
    assert loaded.state is TaskState.QUEUED
    assert loaded.create_time == pytest.approx(task.create_time, abs=1e-6)
    assert [(e.sequence, e.type.name) for e in events] == [(1, "CREATED")]
    async with store.hot_transaction() as hot:
        by_key = await hot.tasks.find_by_idempotency_keys(["k-1"])
    assert by_key["k-1"].spec == task.spec and by_key["k-1"].id == task.id


async def test_idempotency_keys_are_unique(store: Store) -> None:
    first = new_task(key="dup")
    async with store.hot_transaction() as hot:
        await hot.tasks.insert([first], actors=actors([first]))
    second, unrelated = new_task(key="dup"), new_task(key="fresh")
    with pytest.raises(DuplicateKey):
        async with store.hot_transaction() as hot:
            await hot.tasks.insert([unrelated], actors=actors([unrelated]))
            await hot.tasks.insert([second], actors=actors([second]))
    async with store.reader() as uow:
        found = await uow.tasks.find_by_idempotency_keys(["dup", "fresh", "other"])
    assert list(found) == ["dup"], "the failed transaction wrote nothing, not even its first statement"
    assert found["dup"].id == first.id


async def test_a_hot_transaction_that_raises_writes_nothing(store: Store) -> None:
    task = new_task()
    with pytest.raises(RuntimeError):
        async with store.hot_transaction() as hot:
            await hot.tasks.insert([task], actors=actors([task]))
            raise RuntimeError("boom")
    async with store.reader() as uow:
        assert await uow.tasks.get(task.id) is None


async def test_claims_take_due_tasks_by_priority_then_fifo(store: Store) -> None:
    now = time.time()
    low = [new_task(now=now) for _ in range(3)]
    high = new_task(priority=9, now=now)
    later = new_task(now=now)
    later.scheduled_time = now + 3600  # backing off: not due
    other = new_task("cap.b", now=now)
    async with store.hot_transaction() as hot:
        await hot.tasks.insert([*low, high, later, other], actors=actors([*low, high, later, other]))
    async with store.hot_transaction() as hot:
        claimed = await hot.tasks.claim_queued("cap.a", now=now + 1, limit=10)
    assert [c.id for c in claimed] == [high.id, *(t.id for t in low)]
    assert claimed[0].input == high.spec.input


async def test_a_claim_can_read_on_behind_a_given_task(store: Store) -> None:
    now = time.time()
    queue = [new_task(priority=p, now=now) for p in (0, 9, 0, 9, 0, 9)]
    async with store.hot_transaction() as hot:
        await hot.tasks.insert(queue, actors=actors(queue))
    async with store.hot_transaction() as hot:
        everything = [c.id for c in await hot.tasks.claim_queued("cap.a", now=now + 1, limit=10)]
        pages = [await hot.tasks.claim_queued("cap.a", now=now + 1, limit=2)]
        while pages[-1]:
            last = pages[-1][-1]
            pages.append(await hot.tasks.claim_queued("cap.a", now=now + 1, limit=2, after=(last.priority, last.id)))
    assert everything == [t.id for t in sorted(queue, key=lambda t: (-t.spec.priority, t.id))]
    # Pages of two, each read behind the last task of the one before, cross the priorities in queue order.
    assert [[c.id for c in page] for page in pages] == [everything[0:2], everything[2:4], everything[4:6], []]


async def test_the_last_due_time_of_work_queued_for_later_is_known_per_capability(store: Store) -> None:
    now = time.time()
    queue = [
        new_task("cap.a", now=now - 1),  # due already
        new_task("cap.a", now=now + 5),  # retries in their backoff
        new_task("cap.a", now=now + 9),
        new_task("cap.b", now=now + 3),
        new_task("cap.c", now=now - 2),
    ]
    async with store.hot_transaction() as hot:
        await hot.tasks.insert(queue, actors=actors(queue))
    async with store.reader() as uow:
        later = await uow.tasks.last_due_later(now)
    assert later.keys() == {"cap.a", "cap.b"}
    assert later["cap.a"] == pytest.approx(now + 9, abs=1e-3)
    assert later["cap.b"] == pytest.approx(now + 3, abs=1e-3)


async def test_a_claim_can_leave_out_what_no_taker_admits(store: Store) -> None:
    now = time.time()

    def aimed(agent_name: str = "", **labels: str) -> Task:
        task = new_task(now=now)
        target = TaskTarget(capability="cap.a", agent_name=agent_name, label_selector=labels)
        return dataclasses.replace(task, spec=dataclasses.replace(task.spec, target=target))

    anyone, eu, eu_gpu, mars, named, stranger, named_mars = (
        aimed(),
        aimed(zone="eu"),
        aimed(zone="eu", gpu="yes"),
        aimed(zone="mars"),
        aimed("alpha"),
        aimed("nobody"),
        aimed("alpha", zone="mars"),
    )
    queue = [anyone, eu, eu_gpu, mars, named, stranger, named_mars]
    async with store.hot_transaction() as hot:
        await hot.tasks.insert(queue, actors=actors(queue))
    takers = Takers(
        agent_names=("alpha", "beta"), label_sets=({"zone": "eu", "gpu": "yes", "os": "linux"}, {"zone": "us"})
    )
    async with store.hot_transaction() as hot:
        claimed = await hot.tasks.claim_queued("cap.a", now=now + 1, limit=10, takers=takers)
        assert [c.id for c in claimed] == [anyone.id, eu.id, eu_gpu.id, named.id]


async def test_a_claim_can_leave_out_sticky_kinds_whose_owner_cannot_take_them(store: Store) -> None:
    now = time.time()
    hashed = Strategy.CONSISTENT_HASH

    def sticky(key: str, strategy: Strategy | None = hashed, agent_name: str = "", **labels: str) -> Task:
        task = new_task(now=now)
        target = TaskTarget("cap.a", agent_name, labels, routing_key=key, strategy=strategy)
        return dataclasses.replace(task, spec=dataclasses.replace(task.spec, target=target))

    hot = [sticky("hot") for _ in range(3)]
    labelled = sticky("cold", zone="eu", gpu="yes")
    # Alike but for one thing placement looks at: another owner may take them.
    other_key, named, other_labels, default_strategy = (
        sticky("warm"),
        sticky("hot", agent_name="alpha"),
        sticky("hot", zone="eu"),
        sticky("hot", strategy=None),
    )
    queue = [*hot, labelled, other_key, named, other_labels, default_strategy]
    async with store.hot_transaction() as hot_tx:
        await hot_tx.tasks.insert(queue, actors=actors(queue))
    takers = Takers(
        agent_names=("alpha",),
        label_sets=({"zone": "eu", "gpu": "yes"},),
        owner_cannot_take=(
            StickyKind("hot", "", (), "consistent_hash"),
            StickyKind("cold", "", (("zone", "eu"), ("gpu", "yes")), "consistent_hash"),
        ),
    )
    async with store.hot_transaction() as hot_tx:
        claimed = await hot_tx.tasks.claim_queued("cap.a", now=now + 1, limit=20, takers=takers)
        assert [c.id for c in claimed] == [other_key.id, named.id, other_labels.id, default_strategy.id]
    async with store.hot_transaction() as hot_tx:  # the kinds as the scheduler makes them, from claimed rows
        kinds = {c.id: StickyKind.of(c) for c in await hot_tx.tasks.claim_queued("cap.a", now=now + 1, limit=20)}
    from_rows = dataclasses.replace(takers, owner_cannot_take=(kinds[hot[0].id], kinds[labelled.id]))
    async with store.hot_transaction() as hot_tx:
        claimed = await hot_tx.tasks.claim_queued("cap.a", now=now + 1, limit=20, takers=from_rows)
        assert [c.id for c in claimed] == [other_key.id, named.id, other_labels.id, default_strategy.id]


@pytest.mark.postgres
async def test_concurrent_claims_skip_locked_rows(postgres_server: object, tmp_path: object) -> None:
    from tests.support.postgres import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    database = Database(postgres_server.create_database(), pool_size=4)
    await migrate.upgrade(database)
    store = Store(database)
    try:
        queued = [new_task() for _ in range(10)]
        async with store.hot_transaction() as hot:
            await hot.tasks.insert(queued, actors=actors(queued))
        first_claimed = asyncio.Event()
        release = asyncio.Event()

        async def slow_claimer() -> list[str]:
            async with store.hot_transaction() as hot:
                ids = [c.id for c in await hot.tasks.claim_queued("cap.a", now=time.time() + 1, limit=4)]
                first_claimed.set()
                await release.wait()  # hold the row locks
                return ids

        slow = asyncio.ensure_future(slow_claimer())
        await first_claimed.wait()
        async with store.hot_transaction() as hot:
            second = [c.id for c in await hot.tasks.claim_queued("cap.a", now=time.time() + 1, limit=10)]
        release.set()
        first = await slow
        assert len(first) == 4 and len(second) == 6
        assert not set(first) & set(second), "no row claimed twice"
    finally:
        await database.dispose()


async def test_list_filters_and_orders_newest_first(store: Store) -> None:
    tasks = [new_task("cap.a"), new_task("cap.b"), new_task("cap.a")]
    async with store.hot_transaction() as hot:
        await hot.tasks.insert(tasks, actors=actors(tasks))
    async with store.reader() as uow:
        everything = await uow.tasks.list_page(TaskFilter(), limit=10, before_id=None)
        only_a = await uow.tasks.list_page(TaskFilter(capability="cap.a"), limit=10, before_id=None)
        after_first = await uow.tasks.list_page(TaskFilter(), limit=10, before_id=tasks[2].id)
    assert [t.id for t in everything] == [t.id for t in reversed(tasks)]
    assert [t.id for t in only_a] == [tasks[2].id, tasks[0].id]
    assert [t.id for t in after_first] == [tasks[1].id, tasks[0].id]


async def test_state_compare_and_set(store: Store) -> None:
    now = time.time()
    entry = StateEntry("ns", "k", Payload.from_json(1), 1, now, now)
    async with store.transaction() as uow:
        await uow.state.insert(entry)
    newer = StateEntry("ns", "k", Payload.from_json(2), 2, now, now)
    async with store.transaction() as uow:
        assert await uow.state.replace(newer, previous_version=1)
        assert not await uow.state.replace(newer, previous_version=1), "stale version does not match"
    async with store.reader() as uow:
        stored = await uow.state.get("ns", "k", now=now)
    assert stored is not None and stored.version == 2 and stored.value.json_value() == 2


async def test_expired_state_is_invisible_and_purged(store: Store) -> None:
    now = time.time()
    async with store.transaction() as uow:
        await uow.state.insert(StateEntry("ns", "gone", Payload.from_json(1), 1, now, now, expire_time=now - 1))
        await uow.state.insert(StateEntry("ns", "kept", Payload.from_json(1), 1, now, now, expire_time=now + 60))
    async with store.reader() as uow:
        assert await uow.state.get("ns", "gone", now=now) is None
        live = await uow.state.list_live("ns", prefix="", limit=10, after_key=None, now=now)
    assert [e.key for e in live] == ["kept"]
    async with store.transaction() as uow:
        assert await uow.state.purge_expired(now=now) == 1
    async with store.reader() as uow:
        assert await uow.state.get_any("ns", "gone") is None


async def test_expired_state_is_purged_in_bounded_batches(store: Store) -> None:
    now = time.time()
    async with store.transaction() as uow:
        for index in range(5):
            await uow.state.insert(
                StateEntry(f"ns{index % 2}", f"k{index}", Payload.from_json(index), 1, now, now, now - 1)
            )
        await uow.state.insert(StateEntry("ns0", "kept", Payload.from_json(1), 1, now, now, expire_time=now + 60))
        await uow.state.insert(StateEntry("ns1", "forever", Payload.from_json(1), 1, now, now, expire_time=None))
    purged = []
    for _ in range(4):
        async with store.transaction() as uow:
            purged.append(await uow.state.purge_expired(now=now, limit=2))
    assert purged == [2, 2, 1, 0]
    async with store.reader() as uow:
        left = [
            e.key
            for ns in ("ns0", "ns1")
            for e in await uow.state.list_live(ns, prefix="", limit=10, after_key=None, now=now)
        ]
        assert sorted(left) == ["forever", "kept"]


async def test_replica_liveness(store: Store) -> None:
    async with store.transaction() as uow:
        await uow.replicas.heartbeat("r1", address="a:1", now=100.0)
        await uow.replicas.heartbeat("r2", address="a:2", now=200.0)
    async with store.reader() as uow:
        assert await uow.replicas.silent_since(150.0, exclude="r2") == ["r1"]
        assert await uow.replicas.silent_since(150.0, exclude="r1") == []


async def test_deadline_passed_answers_from_the_deadline_indexes(store: Store) -> None:
    task = new_task(now=1_800_000_000.0)  # schedule-to-start 60 s, schedule-to-close 3600 s
    async with store.hot_transaction(single_statement=True) as hot:
        assert not await hot.tasks.deadline_passed(1_900_000_000.0), "no live task, no deadline"
    async with store.hot_transaction(single_statement=True) as hot:
        await hot.tasks.insert([task], actors=actors([task]))
    for now, passed in [(1_800_000_059.0, False), (1_800_000_060.0, True), (1_800_003_601.0, True)]:
        async with store.hot_transaction(single_statement=True) as hot:
            assert await hot.tasks.deadline_passed(now) is passed, now


async def test_instances_owning_active_names_only_instances_with_assigned_or_running_tasks(store: Store) -> None:
    running, queued = new_task(), new_task()
    async with store.hot_transaction(single_statement=True) as hot:
        await hot.tasks.insert([running, queued], actors=actors([running, queued]))
    async with store.transaction() as uow:
        for task, state, instance in [(running, TaskState.RUNNING, "i-busy"), (queued, TaskState.QUEUED, "i-idle")]:
            await uow.connection.execute(
                tasks.update().where(tasks.c.id == task.id).values(state=int(state), agent_instance_id=instance)
            )
    asked = ["i-busy", "i-idle", *(f"i-{n}" for n in range(700))]  # more than one SQLite statement's worth
    async with store.hot_transaction() as hot:
        assert await hot.tasks.instances_owning_active(asked) == {"i-busy"}
        assert await hot.tasks.instances_owning_active([]) == set()


async def _hold_a_transaction(store: Store, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with store.transaction() as uow:
        now = time.time()
        await uow.state.insert(StateEntry("ns", "held", Payload.from_json(1), 1, now, now))
        entered.set()
        await release.wait()


async def test_closing_waits_for_a_transaction_under_way(database_url: str) -> None:
    database = Database(database_url, pool_size=2)
    await migrate.upgrade(database)
    entered, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_a_transaction(Store(database), entered, release))
    await entered.wait()
    closing = asyncio.create_task(database.dispose(grace=60))
    done, _ = await asyncio.wait({closing}, timeout=0.3)
    assert not done, "the database closed under a transaction still in progress"
    release.set()
    await closing
    assert holder.done() and holder.exception() is None
    reopened = Database(database_url)
    try:
        async with Store(reopened).reader() as uow:
            assert await uow.state.get_any("ns", "held") is not None, "the transaction committed"
    finally:
        await reopened.dispose()


async def test_closing_gives_up_on_a_connection_held_past_the_grace(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(database_url, pool_size=2)
    await migrate.upgrade(database)
    entered, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_a_transaction(Store(database), entered, release))
    await entered.wait()
    await database.dispose(grace=0.05)
    assert "1 connection(s) still in use" in caplog.text
    assert not holder.done()
    release.set()
    await holder  # the orphaned connection still finishes its transaction
