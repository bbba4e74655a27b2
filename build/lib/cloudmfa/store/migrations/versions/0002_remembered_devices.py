"""remembered devices

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:20:11.928150
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cloudmfa.store.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remembered_devices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", cloudmfa.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", cloudmfa.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", cloudmfa.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_remembered_devices_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remembered_devices")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_remembered_devices_token_hash")),
    )
    with op.batch_alter_table("remembered_devices", schema=None) as batch_op:
        batch_op.create_index("ix_remembered_devices_user_id", ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("remembered_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_remembered_devices_user_id")

    op.drop_table("remembered_devices")
