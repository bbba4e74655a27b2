"""the delivery outbox: messages to users, written in the transaction that decides to send

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:00:00

See store/models.py ``delivery_outbox`` and docs/delivery.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloudmfa.store.models import MYSQL_TABLE, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("binding", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_outbox")),
        **MYSQL_TABLE,
    )
    op.create_index(
        "ix_delivery_outbox_status_next_try_at",
        "delivery_outbox",
        ["status", "next_try_at"],
        unique=False,
    )
    op.create_index("ix_delivery_outbox_binding", "delivery_outbox", ["binding"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_delivery_outbox_binding", table_name="delivery_outbox")
    op.drop_index("ix_delivery_outbox_status_next_try_at", table_name="delivery_outbox")
    op.drop_table("delivery_outbox")
