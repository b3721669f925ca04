"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import controlplane.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=2000), server_default="", nullable=False),
        sa.Column(
            "capabilities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("create_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("update_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agents")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), autoincrement=True, nullable=False),
        sa.Column("time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("resource", sa.String(length=500), nullable=False),
        sa.Column("correlation_id", sa.String(length=200), server_default="", nullable=False),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_resource", "audit_events", ["resource"], unique=False)

    op.create_table(
        "channels",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("create_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channels")),
    )
    op.create_table(
        "replicas",
        sa.Column("replica_id", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), server_default="", nullable=False),
        sa.Column("start_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("last_seen_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.PrimaryKeyConstraint("replica_id", name=op.f("pk_replicas")),
    )
    op.create_table(
        "state_entries",
        sa.Column("namespace", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("value_data", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("create_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("update_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("expire_time", controlplane.store.types.EpochTime(), nullable=True),
        sa.PrimaryKeyConstraint("namespace", "key", name=op.f("pk_state_entries")),
    )
    op.create_index("ix_state_entries_expire_time", "state_entries", ["expire_time"], unique=False)

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("capability", sa.String(length=200), nullable=False),
        sa.Column("agent_name", sa.String(length=128), server_default="", nullable=False),
        sa.Column(
            "label_selector",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("routing_key", sa.String(length=512), server_default="", nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=True),
        sa.Column("input_data", sa.LargeBinary(), nullable=False),
        sa.Column("input_content_type", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("initial_backoff", sa.Float(), nullable=False),
        sa.Column("max_backoff", sa.Float(), nullable=False),
        sa.Column("backoff_multiplier", sa.Float(), nullable=False),
        sa.Column(
            "non_retryable_error_codes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("schedule_to_start", sa.Float(), nullable=False),
        sa.Column("start_to_close", sa.Float(), nullable=False),
        sa.Column("heartbeat_timeout", sa.Float(), nullable=False),
        sa.Column("schedule_to_close", sa.Float(), nullable=False),
        sa.Column("correlation_id", sa.String(length=200), server_default="", nullable=False),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("traceparent", sa.String(length=128), server_default="", nullable=False),
        sa.Column("tracestate", sa.String(length=512), server_default="", nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_data", sa.LargeBinary(), nullable=True),
        sa.Column("output_content_type", sa.String(length=200), nullable=True),
        sa.Column(
            "error", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("progress", sa.Float(), server_default="0", nullable=False),
        sa.Column("progress_message", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("resubmitted_from", sa.String(length=26), server_default="", nullable=False),
        sa.Column("cancel_reason", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("create_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("update_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("end_time", controlplane.store.types.EpochTime(), nullable=True),
        sa.Column("scheduled_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("start_deadline", controlplane.store.types.EpochTime(), nullable=True),
        sa.Column("deadline", controlplane.store.types.EpochTime(), nullable=True),
        sa.Column("attempt_deadline", controlplane.store.types.EpochTime(), nullable=True),
        sa.Column("session_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("agent_instance_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("replica_id", sa.String(length=200), server_default="", nullable=False),
        sa.Column("event_seq", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    # The claim query walks this partial index: queued rows only, by priority then FIFO.
    op.create_index(
        "ix_tasks_queue",
        "tasks",
        ["capability", sa.text("priority DESC"), "id"],
        unique=False,
        postgresql_where=sa.text("state = 1"),
        sqlite_where=sa.text("state = 1"),
    )
    op.create_index(
        "ix_tasks_active_replica",
        "tasks",
        ["replica_id", "session_id"],
        unique=False,
        postgresql_where=sa.text("state IN (2, 3)"),
        sqlite_where=sa.text("state IN (2, 3)"),
    )
    op.create_index(
        "ix_tasks_attempt_deadline",
        "tasks",
        ["attempt_deadline"],
        unique=False,
        postgresql_where=sa.text("state IN (2, 3)"),
        sqlite_where=sa.text("state IN (2, 3)"),
    )
    # Most tasks have neither key nor correlation id: partial indexes keep them out of the index.
    op.create_index(
        "ux_tasks_idempotency_key",
        "tasks",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_tasks_correlation_id",
        "tasks",
        ["correlation_id"],
        unique=False,
        postgresql_where=sa.text("correlation_id <> ''"),
        sqlite_where=sa.text("correlation_id <> ''"),
    )
    op.create_index(
        "ix_tasks_deadline",
        "tasks",
        ["deadline"],
        unique=False,
        postgresql_where=sa.text("state IN (1, 2, 3)"),
        sqlite_where=sa.text("state IN (1, 2, 3)"),
    )
    op.create_index(
        "ix_tasks_start_deadline",
        "tasks",
        ["start_deadline"],
        unique=False,
        postgresql_where=sa.text("state = 1"),
        sqlite_where=sa.text("state = 1"),
    )
    op.create_index("ix_tasks_state_id", "tasks", ["state", "id"], unique=False)

    op.create_table(
        "agent_instances",
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("agent_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("sdk_language", sa.String(length=50), server_default="", nullable=False),
        sa.Column("sdk_version", sa.String(length=50), server_default="", nullable=False),
        sa.Column("node", sa.String(length=255), server_default="", nullable=False),
        sa.Column("pid", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "capabilities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), server_default="1", nullable=False),
        sa.Column("replica_id", sa.String(length=200), nullable=False),
        sa.Column("in_flight", sa.Integer(), server_default="0", nullable=False),
        sa.Column("load", sa.Float(), server_default="0", nullable=False),
        sa.Column("connect_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("last_seen_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("disconnect_time", controlplane.store.types.EpochTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_name"], ["agents.name"], name=op.f("fk_agent_instances_agent_name_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_agent_instances")),
    )
    op.create_index("ix_agent_instances_agent_name", "agent_instances", ["agent_name"], unique=False)
    op.create_index("ix_agent_instances_replica_id", "agent_instances", ["replica_id"], unique=False)

    op.create_table(
        "task_attempts",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("agent_name", sa.String(length=128), nullable=False),
        sa.Column("agent_instance_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column(
            "error", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("assign_time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("start_time", controlplane.store.types.EpochTime(), nullable=True),
        sa.Column("end_time", controlplane.store.types.EpochTime(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_task_attempts")),
    )
    op.create_table(
        "task_events",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time", controlplane.store.types.EpochTime(), nullable=False),
        sa.Column("actor", sa.String(length=300), server_default="", nullable=False),
        sa.Column("agent_instance_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("progress", sa.Float(), server_default="0", nullable=False),
        sa.Column("message", sa.String(length=1000), server_default="", nullable=False),
        sa.Column(
            "error", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.PrimaryKeyConstraint("task_id", "sequence", name=op.f("pk_task_events")),
    )


def downgrade() -> None:
    op.drop_table("task_events")
    op.drop_table("task_attempts")
    op.drop_index("ix_agent_instances_replica_id", table_name="agent_instances")
    op.drop_index("ix_agent_instances_agent_name", table_name="agent_instances")

    op.drop_table("agent_instances")
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.drop_index("ix_tasks_state_id", table_name="tasks")
    op.drop_index(
        "ix_tasks_start_deadline",
        table_name="tasks",
        postgresql_where=sa.text("state = 1"),
        sqlite_where=sa.text("state = 1"),
    )
    op.drop_index(
        "ix_tasks_deadline",
        table_name="tasks",
        postgresql_where=sa.text("state IN (1, 2, 3)"),
        sqlite_where=sa.text("state IN (1, 2, 3)"),
    )
    op.drop_index("ix_tasks_correlation_id", table_name="tasks")
    op.drop_index("ux_tasks_idempotency_key", table_name="tasks")
    op.drop_index(
        "ix_tasks_attempt_deadline",
        table_name="tasks",
        postgresql_where=sa.text("state IN (2, 3)"),
        sqlite_where=sa.text("state IN (2, 3)"),
    )
    op.drop_index(
        "ix_tasks_active_replica",
        table_name="tasks",
        postgresql_where=sa.text("state IN (2, 3)"),
        sqlite_where=sa.text("state IN (2, 3)"),
    )

    op.drop_table("tasks")
    op.drop_index("ix_state_entries_expire_time", table_name="state_entries")

    op.drop_table("state_entries")
    op.drop_table("replicas")
    op.drop_table("channels")
    op.drop_index("ix_audit_events_resource", table_name="audit_events")

    op.drop_table("audit_events")
    op.drop_table("agents")
