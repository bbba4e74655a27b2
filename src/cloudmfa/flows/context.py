"""What a flow knows about the request that started it (for the audit trail)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestInfo:
    ip: str | None = None
    user_agent: str | None = None

    def clipped_user_agent(self) -> str | None:
        return self.user_agent[:512] if self.user_agent else None
