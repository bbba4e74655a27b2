"""Ids of the rows a sign-in or a code request inserts: UUIDs of version 7 (RFC 9562), whose
first 48 bits are the time in milliseconds and the rest random (74 bits, from `secrets`).

Why not random (version 4) ids: a B-tree on random keys takes each new row on a random leaf
page. At a million accounts those pages are rarely in PostgreSQL's cache, and the first change
to a page after a checkpoint writes the whole page into the WAL: measured in `make
bench-scale`, a TOTP sign-in wrote 58 KB of WAL at a million users against 3 KB at a thousand,
and cost PostgreSQL twice the CPU. Time-ordered ids land next to each other on the index's last
pages, which stay cached. A sign-in's session, remembered device and audit events, and a
code's outbox row, use them; the id reveals only when the row was made, which the row says
anyway (`created_at`, `at`). Accounts, factors and recovery codes keep random ids: they are
made once, and an account id goes into every token a relying party sees.
"""

from __future__ import annotations

from uuid6 import uuid7


def time_ordered_id() -> str:
    return str(uuid7())
