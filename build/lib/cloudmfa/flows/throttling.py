"""Throttling as the flows see it: refusals are audited, once per account or address and window."""

from __future__ import annotations

from cloudmfa.errors import RateLimited
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import AuditedLimits


async def record_rate_limited(
    svc: AuditedLimits, info: RequestInfo, user_id: str | None, exc: RateLimited
) -> None:
    """One `rate_limited` event per account (or address) and window, not one per refusal:
    an attacker hammering the door must not fill the audit table."""
    subject = user_id or info.ip or "unknown"
    if not await svc.ephemeral.set_if_absent(f"rl_audit:{subject}", "1", exc.retry_after or 60):
        return
    await record_separately(
        svc,
        info.event(
            "rate_limited", subject_id=user_id, outcome="failure", retry_after=exc.retry_after
        ),
    )
