"""factor columns every type may use; recovery codes under a salted hash

``factors.last_used_step`` (TOTP only) becomes ``counter``, which any type's claim may advance
(a WebAuthn signature count too), and ``lookup_key`` gives a type a value found fast and unique
(a WebAuthn credential id) instead of a JSON field. Existing rows keep their values.

Recovery codes gain ``lookup``, the first group of a code, which finds its row so that one
salted hash is checked per redemption. Codes issued before keep their SHA-256 hash and a NULL
lookup, and stay usable until the user's next set replaces them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("factors", schema=None) as batch_op:
        batch_op.alter_column("last_used_step", new_column_name="counter")
        batch_op.add_column(sa.Column("lookup_key", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_factors_type_lookup_key", ["type", "lookup_key"], unique=True)
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lookup", sa.String(length=8), nullable=True))
        batch_op.alter_column(
            "code_hash", existing_type=sa.String(length=128), type_=sa.String(length=255)
        )
        batch_op.drop_index("ix_recovery_codes_user_id")
        batch_op.create_index("ix_recovery_codes_user_id_lookup", ["user_id", "lookup"])


def downgrade() -> None:
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_recovery_codes_user_id_lookup")
        batch_op.create_index("ix_recovery_codes_user_id", ["user_id"])
        batch_op.alter_column(
            "code_hash", existing_type=sa.String(length=255), type_=sa.String(length=128)
        )
        batch_op.drop_column("lookup")
    with op.batch_alter_table("factors", schema=None) as batch_op:
        batch_op.drop_index("ix_factors_type_lookup_key")
        batch_op.drop_column("lookup_key")
        batch_op.alter_column("counter", new_column_name="last_used_step")
