"""Alembic migrations, run programmatically at every start (`backend.database.migrate`)."""
