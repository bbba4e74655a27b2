"""The one registry of factor types, built at start from ``CLOUDMFA_ENABLED_FACTORS``.

A new factor type is its package under ``factors/`` and one line in ``FACTORIES``; the flows
only ever talk to the registry and never import a factor package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.config import Settings
from cloudmfa.factors.base import BackupFactor, FactorDeps, FactorType, OfferedFactor, StoredFactor
from cloudmfa.factors.recovery import RecoveryCodes
from cloudmfa.factors.totp import TotpFactor
from cloudmfa.factors.totp.verify import TotpParameters
from cloudmfa.store import factors as factor_repo

FactorFactory = Callable[[Settings, FactorDeps], FactorType | BackupFactor]

# Every factor type this release builds, by the name CLOUDMFA_ENABLED_FACTORS uses.
FACTORIES: dict[str, FactorFactory] = {
    "totp": lambda settings, deps: TotpFactor(
        deps,
        TotpParameters(
            algorithm=settings.totp_algorithm,
            digits=settings.totp_digits,
            period=settings.totp_period,
        ),
    ),
    "recovery": lambda _settings, deps: RecoveryCodes(deps),
}


class FactorTypeUnavailable(ValueError):
    """A factor type is enabled that this release does not build."""


def check_enabled(enabled: Iterable[str], factories: dict[str, FactorFactory] = FACTORIES) -> None:
    """Raise FactorTypeUnavailable, saying what is provided, for an enabled type not built."""
    missing = [name for name in enabled if name not in factories]
    if missing:
        built = ", ".join(factories) or "none"
        raise FactorTypeUnavailable(
            f"CLOUDMFA_ENABLED_FACTORS names {', '.join(missing)}, which this release does "
            f"not provide (it provides: {built})"
        )


@dataclass(frozen=True, slots=True)
class SecondStepOffer:
    """What the password step offers for the second one."""

    factors: list[OfferedFactor]
    # The offered factors whose types verify from a snapshot, as read now.
    snapshots: list[StoredFactor]


class FactorTypes:
    def __init__(
        self,
        enabled: Iterable[str],
        settings: Settings,
        deps: FactorDeps,
        factories: dict[str, FactorFactory] | None = None,
    ) -> None:
        factories = FACTORIES if factories is None else factories
        check_enabled(enabled, factories)
        self.types: dict[str, FactorType] = {}
        self.backup: BackupFactor | None = None
        for name in dict.fromkeys(enabled):
            built_type = factories[name](settings, deps)
            if _is_backup(built_type):
                self.backup = built_type  # type: ignore[assignment]
            else:
                self.types[name] = built_type  # type: ignore[assignment]

    @property
    def row_types(self) -> tuple[str, ...]:
        return tuple(self.types)

    def get(self, factor_type: str) -> FactorType | None:
        return self.types.get(factor_type)

    def backup_for(self, factor_id: str) -> BackupFactor | None:
        """The backup factor when ``factor_id`` is its fixed id."""
        if self.backup is not None and factor_id == self.backup.factor_id:
            return self.backup
        return None

    async def count_active(self, conn: AsyncConnection, user_id: str) -> int:
        """Active factors of the types this deployment offers (disabled types do not count)."""
        return await factor_repo.count_active(conn, user_id, self.row_types)

    async def second_step(self, conn: AsyncConnection, user_id: str) -> SecondStepOffer:
        rows = await factor_repo.list_factors(conn, user_id, types=self.row_types, active_only=True)
        offered = [self.types[row.type].describe(row) for row in rows]
        if offered and self.backup is not None:  # a backup alone is no second factor
            option = await self.backup.offered(conn, user_id)
            if option is not None:
                offered.append(option)
        snapshots = [row for row in rows if self.types[row.type].verifies_from_snapshot]
        return SecondStepOffer(offered, snapshots)


def _is_backup(built: FactorType | BackupFactor) -> bool:
    return hasattr(built, "factor_id")
