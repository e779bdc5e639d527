"""The first schema: settings, projects, prompts, responses, tasks, annotators, labels.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("settings", sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.String(256), nullable=False))
    op.create_table("projects", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(200), nullable=False, unique=True),
                    sa.Column("mode", sa.String(16), nullable=False),
                    sa.Column("overlap", sa.Integer, nullable=False),
                    sa.Column("gold_share", sa.Float, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table("prompts", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
                    sa.Column("content", sa.JSON, nullable=False))
    op.create_table("responses", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("prompt_id", sa.Integer, sa.ForeignKey("prompts.id"), nullable=False, index=True),
                    sa.Column("text", sa.Text, nullable=False),
                    sa.Column("source", sa.String(500), nullable=False))
    op.create_table("tasks", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
                    sa.Column("prompt_id", sa.Integer, sa.ForeignKey("prompts.id"), nullable=False),
                    sa.Column("response_ids", sa.JSON, nullable=False),
                    sa.Column("gold", sa.JSON, nullable=True))
    op.create_table("annotators", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
                    sa.Column("name", sa.String(200), nullable=False),
                    sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
                    sa.Column("created_at", sa.DateTime, nullable=False),
                    sa.UniqueConstraint("project_id", "name"))
    op.create_table("labels", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False, index=True),
                    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False, index=True),
                    sa.Column("request_id", sa.String(64), nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False),
                    sa.Column("undone_at", sa.DateTime, nullable=True),
                    sa.Column("outcome", sa.String(16), nullable=False),
                    sa.Column("winner_id", sa.Integer, nullable=True),
                    sa.Column("strength", sa.Integer, nullable=True),
                    sa.Column("ranking", sa.JSON, nullable=True),
                    sa.Column("thumbs", sa.Boolean, nullable=True),
                    sa.Column("reason", sa.Text, nullable=False),
                    sa.UniqueConstraint("annotator_id", "request_id"))


def downgrade() -> None:
    for table in ("labels", "annotators", "tasks", "responses", "prompts", "projects", "settings"):
        op.drop_table(table)
