"""Audit events that must outlive a failed operation, written in a transaction of their own."""

from __future__ import annotations

from cloudmfa.flows.deps import Database
from cloudmfa.store.audit import AuditEvent, record


async def record_separately(svc: Database, *events: AuditEvent) -> None:
    """For failures: the operation's own transaction rolled back, its audit trail must not."""
    async with svc.engine.begin() as conn:
        await record(conn, svc.clock.now(), *events)
