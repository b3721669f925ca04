"""audit entries by actor, newest first (ListAuditEntries filters by it and pages by id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_actor", "audit_events", ["actor", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_events_actor", table_name="audit_events")
