"""Alembic environment: always given a live connection by `backend.database.migrate`."""

from alembic import context
from sqlmodel import SQLModel

from backend import models  # noqa: F401 - registers the tables on SQLModel.metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters a table by copying it; Alembic's batch mode does that for us.
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
