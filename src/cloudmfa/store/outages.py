"""Which errors of the stores are outages (worth trying again shortly) rather than bugs.

The edge answers them 503 `unavailable` (api/problems.py); delivery tries again the record of a
message the provider already has (delivery/outbox.py), since a lost record would send it twice.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATE class 53, "insufficient resources" (53300: too many connections), and 57P03 (the
# server is starting or shutting down): PostgreSQL refusing a new connection, worth a retry.
_OUT_OF_ROOM_SQLSTATES = ("53", "57P03")


def is_outage(exc: BaseException) -> bool:
    """A store that is unreachable, busy past its timeout, refusing connections for want of
    room, or that dropped the connection under a statement."""
    if isinstance(exc, OperationalError | ConnectionError):
        return True
    if isinstance(exc, PoolTimeout):
        return True  # no pooled connection came free in time (on SQLite: the writers' queue)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True  # the server closed the pooled connection (a restart, a terminated backend)
    return _database_out_of_room(exc)


def _database_out_of_room(exc: BaseException) -> bool:
    """The refusal arrives wrapped by SQLAlchemy (a DBAPIError whose ``orig``, the driver
    adapter's error, is caused by asyncpg's) or, from the one-statement writes that run on
    asyncpg's connection directly (store/one_statement.py), as asyncpg's own: so the SQLSTATE
    is looked for along the chain of causes."""
    seen: BaseException | None = exc
    for _ in range(4):  # a short chain; never loop on a cycle
        if seen is None:
            break
        for candidate in (seen, getattr(seen, "orig", None)):
            sqlstate = str(getattr(candidate, "sqlstate", None) or "")
            if sqlstate.startswith(_OUT_OF_ROOM_SQLSTATES):
                return True
        seen = seen.__cause__
    return False
