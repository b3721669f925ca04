"""Tables. The Alembic migrations in store/migrations create exactly this (a test compares them)."""

from __future__ import annotations

import sqlalchemy as sa

from controlplane.store.types import EpochTime, JSONType

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# State numbers (see domain.tasks.TaskState): 1 QUEUED, 2 ASSIGNED, 3 RUNNING, 4.. terminal.
QUEUED, ASSIGNED, RUNNING = 1, 2, 3

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),  # ULID: ordering by id is FIFO
    sa.Column("capability", sa.String(200), nullable=False),
    sa.Column("agent_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("label_selector", JSONType, nullable=True),
    sa.Column("routing_key", sa.String(512), nullable=False, server_default=""),
    sa.Column("strategy", sa.String(32), nullable=True),
    sa.Column("input_data", sa.LargeBinary, nullable=False),
    sa.Column("input_content_type", sa.String(200), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("initial_backoff", sa.Float, nullable=False),
    sa.Column("max_backoff", sa.Float, nullable=False),
    sa.Column("backoff_multiplier", sa.Float, nullable=False),
    sa.Column("non_retryable_error_codes", JSONType, nullable=True),
    sa.Column("schedule_to_start", sa.Float, nullable=False),
    sa.Column("start_to_close", sa.Float, nullable=False),
    sa.Column("heartbeat_timeout", sa.Float, nullable=False),
    sa.Column("schedule_to_close", sa.Float, nullable=False),
    sa.Column("correlation_id", sa.String(200), nullable=False, server_default=""),
    sa.Column("metadata", JSONType, nullable=True),
    sa.Column("traceparent", sa.String(128), nullable=False, server_default=""),
    sa.Column("tracestate", sa.String(512), nullable=False, server_default=""),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_data", sa.LargeBinary, nullable=True),
    sa.Column("output_content_type", sa.String(200), nullable=True),
    sa.Column("error", JSONType, nullable=True),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("progress_message", sa.String(1000), nullable=False, server_default=""),
    sa.Column("resubmitted_from", sa.String(26), nullable=False, server_default=""),
    sa.Column("cancel_reason", sa.String(1000), nullable=False, server_default=""),
    sa.Column("create_time", EpochTime, nullable=False),
    sa.Column("update_time", EpochTime, nullable=False),
    sa.Column("end_time", EpochTime, nullable=True),
    # Scheduling bookkeeping.
    sa.Column("scheduled_time", EpochTime, nullable=False),  # not before (retry backoff)
    sa.Column("start_deadline", EpochTime, nullable=True),  # schedule-to-start, for the current wait
    sa.Column("deadline", EpochTime, nullable=True),  # schedule-to-close (overall)
    sa.Column("attempt_deadline", EpochTime, nullable=True),  # start-to-close of the current attempt
    sa.Column("session_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("agent_instance_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("replica_id", sa.String(200), nullable=False, server_default=""),
    sa.Column("event_seq", sa.Integer, nullable=False, server_default="0"),
    # The claim query walks this partial index: queued rows only, by priority then FIFO.
    sa.Index(
        "ix_tasks_queue",
        "capability",
        sa.text("priority DESC"),
        "id",
        postgresql_where=sa.text("state = 1"),
        sqlite_where=sa.text("state = 1"),
    ),
    sa.Index(
        "ix_tasks_active_replica",
        "replica_id",
        "session_id",
        postgresql_where=sa.text("state IN (2, 3)"),
        sqlite_where=sa.text("state IN (2, 3)"),
    ),
    sa.Index(
        "ix_tasks_attempt_deadline",
        "attempt_deadline",
        postgresql_where=sa.text("state IN (2, 3)"),
        sqlite_where=sa.text("state IN (2, 3)"),
    ),
    sa.Index(
        "ix_tasks_start_deadline",
        "start_deadline",
        postgresql_where=sa.text("state = 1"),
        sqlite_where=sa.text("state = 1"),
    ),
    sa.Index(
        "ix_tasks_deadline",
        "deadline",
        postgresql_where=sa.text("state IN (1, 2, 3)"),
        sqlite_where=sa.text("state IN (1, 2, 3)"),
    ),
    sa.Index("ix_tasks_state_id", "state", "id"),
    # Most tasks have neither key nor correlation id: partial indexes keep them out of the index.
    sa.Index(
        "ux_tasks_idempotency_key",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    sa.Index(
        "ix_tasks_correlation_id",
        "correlation_id",
        postgresql_where=sa.text("correlation_id <> ''"),
        sqlite_where=sa.text("correlation_id <> ''"),
    ),
)

task_attempts = sa.Table(
    "task_attempts",
    metadata,
    # No foreign key: attempts are written in the same transaction as their task, which is never
    # deleted, and the per-row referential check would cost more than the rest of the insert.
    sa.Column("task_id", sa.String(26), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("agent_name", sa.String(128), nullable=False),
    sa.Column("agent_instance_id", sa.String(128), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("outcome", sa.SmallInteger, nullable=False),
    sa.Column("error", JSONType, nullable=True),
    sa.Column("assign_time", EpochTime, nullable=False),
    sa.Column("start_time", EpochTime, nullable=True),
    sa.Column("end_time", EpochTime, nullable=True),
)

# A task's history; doubles as the audit trail of task transitions.
task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("task_id", sa.String(26), primary_key=True),  # no foreign key, as for attempts
    sa.Column("sequence", sa.Integer, primary_key=True),
    sa.Column("type", sa.SmallInteger, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("time", EpochTime, nullable=False),
    sa.Column("actor", sa.String(300), nullable=False, server_default=""),
    sa.Column("agent_instance_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("message", sa.String(1000), nullable=False, server_default=""),
    sa.Column("error", JSONType, nullable=True),
)

# Every mutating API call that is not a task transition (state writes, drains, resubmits...).
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), primary_key=True, autoincrement=True),
    sa.Column("time", EpochTime, nullable=False),
    sa.Column("actor", sa.String(300), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("resource", sa.String(500), nullable=False),
    sa.Column("correlation_id", sa.String(200), nullable=False, server_default=""),
    sa.Column("details", JSONType, nullable=True),
    sa.Index("ix_audit_events_resource", "resource"),
    sa.Index("ix_audit_events_correlation_id", "correlation_id"),  # what did one request change?
    sa.Index("ix_audit_events_actor", "actor", "id"),  # what did one caller do, newest first?
    sa.Index("ix_audit_events_time", "time"),  # retention deletes the oldest
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("description", sa.String(2000), nullable=False, server_default=""),
    sa.Column("capabilities", JSONType, nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("create_time", EpochTime, nullable=False),
    sa.Column("update_time", EpochTime, nullable=False),
)

agent_instances = sa.Table(
    "agent_instances",
    metadata,
    sa.Column("instance_id", sa.String(128), primary_key=True),
    sa.Column("agent_name", sa.String(128), sa.ForeignKey("agents.name", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("sdk_language", sa.String(50), nullable=False, server_default=""),
    sa.Column("sdk_version", sa.String(50), nullable=False, server_default=""),
    sa.Column("node", sa.String(255), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("capabilities", JSONType, nullable=False),
    sa.Column("max_concurrency", sa.Integer, nullable=False),
    sa.Column("weight", sa.Integer, nullable=False, server_default="1"),
    sa.Column("replica_id", sa.String(200), nullable=False),
    sa.Column("in_flight", sa.Integer, nullable=False, server_default="0"),
    sa.Column("load", sa.Float, nullable=False, server_default="0"),
    sa.Column("connect_time", EpochTime, nullable=False),
    sa.Column("last_seen_time", EpochTime, nullable=False),
    sa.Column("disconnect_time", EpochTime, nullable=True),
    sa.Index("ix_agent_instances_agent_name", "agent_name"),
    sa.Index("ix_agent_instances_replica_id", "replica_id"),
)

# Control plane replicas and their liveness; a replica silent past the lease loses its tasks.
replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("replica_id", sa.String(200), primary_key=True),
    sa.Column("address", sa.String(300), nullable=False, server_default=""),
    sa.Column("start_time", EpochTime, nullable=False),
    sa.Column("last_seen_time", EpochTime, nullable=False),
)

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("create_time", EpochTime, nullable=False),
    sa.Column("last_use_time", EpochTime, nullable=False),
    sa.Index("ix_channels_last_use_time", "last_use_time"),
)

state_entries = sa.Table(
    "state_entries",
    metadata,
    sa.Column("namespace", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value_data", sa.LargeBinary, nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("create_time", EpochTime, nullable=False),
    sa.Column("update_time", EpochTime, nullable=False),
    sa.Column("expire_time", EpochTime, nullable=True),
    sa.Index("ix_state_entries_expire_time", "expire_time"),
)
