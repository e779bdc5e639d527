"""A safety scorer's score per served answer (`rlhf serve --monitor-scorer`).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("response_scores",
                    sa.Column("response_id", sa.Integer, sa.ForeignKey("responses.id"), primary_key=True),
                    sa.Column("scorer", sa.String(500), primary_key=True),
                    sa.Column("score", sa.Float, nullable=False),
                    sa.Column("flagged", sa.Boolean, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))


def downgrade() -> None:
    op.drop_table("response_scores")
