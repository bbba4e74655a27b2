"""The one registry of factor types, built from ``CLOUDMFA_ENABLED_FACTORS``.

Adding a factor type means writing its package and naming it in ``FactorRegistry.__init__``
(or ``_VIRTUAL_FACTORS``); the flows only ever talk to the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.factors.base import FactorModule, FactorOption, StoredFactor, VirtualFactor
from cloudmfa.factors.recovery import RecoveryCodes
from cloudmfa.factors.totp import TotpFactor
from cloudmfa.factors.totp.verify import TotpParameters
from cloudmfa.store import factors as factor_repo

_VIRTUAL_FACTORS: tuple[type[VirtualFactor], ...] = (RecoveryCodes,)


@dataclass(frozen=True, slots=True)
class LoginFactors:
    """What the password step offers for the second one."""

    options: list[FactorOption]
    # The offered factors whose modules verify from a snapshot (FactorModule), as read now.
    snapshots: list[StoredFactor]


class FactorRegistry:
    def __init__(self, enabled: Iterable[str], *, totp: TotpParameters | None = None) -> None:
        wanted = set(enabled)
        available: list[FactorModule] = [TotpFactor(totp)]
        self.modules: dict[str, FactorModule] = {m.type: m for m in available if m.type in wanted}
        self.virtual: dict[str, VirtualFactor] = {
            cls.factor_id: cls() for cls in _VIRTUAL_FACTORS if cls.type in wanted
        }

    @property
    def recovery_codes(self) -> RecoveryCodes | None:
        """Recovery codes, when offered: issued with the first factor and on request."""
        codes = self.virtual.get(RecoveryCodes.factor_id)
        return codes if isinstance(codes, RecoveryCodes) else None

    @property
    def row_types(self) -> tuple[str, ...]:
        return tuple(self.modules)

    def module(self, factor_type: str) -> FactorModule | None:
        return self.modules.get(factor_type)

    async def count_active(self, conn: AsyncConnection, user_id: str) -> int:
        """Active factors of the types this deployment offers (disabled types do not count)."""
        return await factor_repo.count_active(conn, user_id, self.row_types)

    async def login_factors(self, conn: AsyncConnection, user_id: str) -> LoginFactors:
        rows = await factor_repo.list_factors(conn, user_id, types=self.row_types, active_only=True)
        options = [self.modules[row.type].describe(row) for row in rows]
        if options:  # recovery codes back up a real factor; alone they are no second factor
            for virtual in self.virtual.values():
                option = await virtual.offered(conn, user_id)
                if option is not None:
                    options.append(option)
        snapshots = [row for row in rows if self.modules[row.type].verifies_from_snapshot]
        return LoginFactors(options, snapshots)
