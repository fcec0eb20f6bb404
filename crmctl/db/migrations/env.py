"""Alembic environment: crmctl always hands it a live connection (see crmctl.db.migrate)."""

from alembic import context
from sqlmodel import SQLModel

import crmctl.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("crmctl migrations run through 'crmctl db upgrade', which provides a connection")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
