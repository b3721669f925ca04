"""channels remember their last use (retention deletes the unused)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import controlplane.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("channels", sa.Column("last_use_time", controlplane.store.types.EpochTime(), nullable=True))
    op.execute("UPDATE channels SET last_use_time = create_time")
    with op.batch_alter_table("channels") as batch:  # SQLite cannot alter a column in place
        batch.alter_column("last_use_time", existing_type=controlplane.store.types.EpochTime(), nullable=False)
    op.create_index("ix_channels_last_use_time", "channels", ["last_use_time"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_channels_last_use_time", table_name="channels")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("last_use_time")
