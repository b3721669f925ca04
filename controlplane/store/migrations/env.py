"""Alembic environment. Migrations run on a connection handed in by controlplane.store.migrate."""

from __future__ import annotations

from alembic import context

from controlplane.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `meshplane db upgrade` (controlplane.store.migrate)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
