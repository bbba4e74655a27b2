"""admin search: the addresses that start with a query read in order from an index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00

PostgreSQL only (store/users.py ``search``, bench/README.md "Matches that all sort late, again"). A
query matches where it starts an address, or further inside it, or inside the display name.

- `ix_users_email_by_code_point`, a B-tree on `email COLLATE "C"`: the admin search lists
  accounts in the order of the addresses' code points, as SQLite (BINARY) and MariaDB/MySQL
  (`utf8mb4_bin`) compare them. In that order the addresses that start with a query are one
  range of this index, so the first of them are read without looking at the rest. Under a
  language's collation (`en_US.UTF-8`, the default of many servers, which the column keeps)
  they are not one range of the email's unique index: such collations weigh punctuation last,
  or take two letters as one (Czech "ch" sorts after "h").
- The trigram index on the whole address gives way to one on the address less its first
  character, `substr(email, 2)`: what matches further inside an address. A query that starts
  many addresses (`bench-09` starts 100,000 of a million) then takes no candidate from it for
  those addresses.

The column itself is left as it is: changing its collation would hold the table while its
unique index is rebuilt, and would change the type of every cached statement that returns the
email, so replicas still running through the upgrade would fail one statement per pooled
connection. Building the two indexes holds writes to `users` (not reads) while they build:
20–28 s at a million users on a 2-core VM that other work kept busy. On a large table, build
them first with `CREATE INDEX CONCURRENTLY` under the same names; the statements here are `IF
NOT EXISTS` and keep them.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        'CREATE INDEX IF NOT EXISTS ix_users_email_by_code_point ON users (email COLLATE "C")'
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_users_email_tail_trgm "
        "ON users USING gin (substr(email, 2) gin_trgm_ops)"
    )
    op.execute("DROP INDEX IF EXISTS ix_users_email_trgm")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_users_email_trgm ON users USING gin (email gin_trgm_ops)"
    )
    op.execute("DROP INDEX IF EXISTS ix_users_email_tail_trgm")
    op.execute("DROP INDEX IF EXISTS ix_users_email_by_code_point")
