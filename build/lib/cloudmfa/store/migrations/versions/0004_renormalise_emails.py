"""re-normalise stored emails

Releases before this one stored an email lower-cased, with its domain as email-validator gave
it (Unicode, not IDNA) and its local part lower-cased rather than case-folded. Login now looks
an address up by ``normalise_email`` (NFC, IDNA domain, case-folded), so rows in the old
spelling would no longer be found. This rewrites them.

Two old rows can fold into one address (``straße@…`` and ``strasse@…``): the row already in
that spelling, or else the oldest, takes it; the others keep their old spelling (their owners
cannot sign in until an administrator sorts them out) and are named, by id, in the log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:30:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

# The live function, not a copy: the point is that stored rows match what login computes.
from cloudmfa.email_address import normalise_email

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_users = sa.table(
    "users",
    sa.column("id", sa.String),
    sa.column("email", sa.String),
    sa.column("created_at", sa.DateTime),
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_users.c.id, _users.c.email).order_by(_users.c.created_at))
    changes = [(id_, new) for id_, email in rows if (new := normalise_email(email)) != email]
    for user_id, new in changes:
        taken = bind.execute(sa.select(_users.c.id).where(_users.c.email == new)).first()
        if taken is not None:
            log.warning(
                "user %s keeps its old email spelling: its normalised form belongs to user %s",
                user_id,
                taken.id,
            )
            continue
        bind.execute(sa.update(_users).where(_users.c.id == user_id).values(email=new))


def downgrade() -> None:
    # Irreversible: the old spellings are not kept. Under the old code an account with a
    # non-ASCII domain is then found only by its xn-- spelling.
    pass
