"""What a flow knows about the request that started it (for the audit trail)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudmfa.store.audit import AuditEvent


@dataclass(frozen=True, slots=True)
class RequestInfo:
    ip: str | None = None
    user_agent: str | None = None

    def clipped_user_agent(self) -> str | None:
        return self.user_agent[:512] if self.user_agent else None

    def event(
        self,
        type_: str,
        *,
        subject_id: str | None,
        actor_id: str | None = None,
        outcome: str = "success",
        **details: Any,
    ) -> AuditEvent:
        """An audit event from this request; the actor is the subject unless said otherwise."""
        return AuditEvent(
            type=type_,
            outcome=outcome,
            actor_id=actor_id if actor_id is not None else subject_id,
            subject_id=subject_id,
            ip=self.ip,
            user_agent=self.clipped_user_agent(),
            details=details,
        )
