"""indexes for a million users: admin search by substring, audit paging by type

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:30:00

`make bench-scale` (bench/README.md) measures the administration reads at a million users and
ten million audit events:

- `GET /admin/users?query=` matches a substring of the email or the display name
  (`LIKE '%q%'`, store/users.py). No B-tree serves that: for a query that matches few users,
  PostgreSQL walked the whole email index in order looking for 50 matches. Trigram GIN indexes
  (pg_trgm, a trusted extension since PostgreSQL 13, so the database's owner may create it)
  find the matching rows directly; a query that matches many still takes the email order.
  Other databases keep the scan (MariaDB/MySQL and SQLite have no trigram index).
- `GET /admin/audit?type=` pages newest first within one type: `(type, seq)` gives that order
  directly. With `(type)` alone PostgreSQL either sorted every event of the type for each page
  (fine for a rare type, not for one with a hundred thousand events) or walked all events
  newest first, skipping the other types. It replaces the `(type)` index.

Building them on a large existing table holds writes to it for the build (each sign-in writes
audit events). On such a table, build them first with `CREATE INDEX CONCURRENTLY` under the
same names: the PostgreSQL statements here are `IF NOT EXISTS` and keep them.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_users_email_trgm ON users USING gin (email gin_trgm_ops)"
        )
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_users_display_name_trgm "
            "ON users USING gin (lower(display_name) gin_trgm_ops)"
        )
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_audit_events_type_seq ON audit_events (type, seq)"
        )
        op.execute("DROP INDEX IF EXISTS ix_audit_events_type")
        return
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.create_index("ix_audit_events_type_seq", ["type", "seq"], unique=False)
        batch_op.drop_index("ix_audit_events_type")


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.create_index("ix_audit_events_type", ["type"], unique=False)
        batch_op.drop_index("ix_audit_events_type_seq")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_users_display_name_trgm")
        op.execute("DROP INDEX IF EXISTS ix_users_email_trgm")
