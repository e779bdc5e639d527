"""Alembic environment: run migrations on the connection that `rlhf.feedback.store.migrate` passes."""

from alembic import context

from rlhf.feedback.tables import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode rebuilds the table.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
