"""Lineage of `rlhf iterate`: training rounds and the labels each one read.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("training_rounds", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("series", sa.String(200), nullable=False, index=True),
                    sa.Column("round", sa.Integer, nullable=False),
                    sa.Column("run_dir", sa.String(1000), nullable=False, unique=True),
                    sa.Column("policy", sa.String(1000), nullable=False),
                    sa.Column("parent_policy", sa.String(1000), nullable=False),
                    sa.Column("method", sa.String(32), nullable=False),
                    sa.Column("result", sa.JSON, nullable=True),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table("round_labels",
                    sa.Column("round_id", sa.Integer, sa.ForeignKey("training_rounds.id"), primary_key=True),
                    sa.Column("label_id", sa.Integer, sa.ForeignKey("labels.id"), primary_key=True, index=True),
                    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
                    sa.Column("used", sa.Boolean, nullable=False))


def downgrade() -> None:
    op.drop_table("round_labels")
    op.drop_table("training_rounds")
