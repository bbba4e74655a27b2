"""The one registry of factor types, built at start from ``CLOUDMFA_ENABLED_FACTORS``.

A new factor type is its package under ``factors/`` and one line in ``FACTORIES``; the flows
only ever talk to the registry and never import a factor package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.config import Settings
from cloudmfa.factors.base import (
    BackupFactor,
    FactorDeps,
    FactorType,
    OfferedFactor,
    OwnerDetails,
    PasswordlessFactor,
    StoredFactor,
)
from cloudmfa.factors.email import EmailFactor
from cloudmfa.factors.recovery import RecoveryCodes
from cloudmfa.factors.sms import SmsFactor
from cloudmfa.factors.totp import TotpFactor
from cloudmfa.factors.totp.verify import TotpParameters
from cloudmfa.factors.webauthn import WebAuthnFactor
from cloudmfa.factors.webauthn.relying_party import RelyingParty
from cloudmfa.store import factors as factor_repo
from cloudmfa.store.factors import SignInAccount
from cloudmfa.store.models import users

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
    "sms": lambda settings, deps: SmsFactor(
        deps,
        digits=settings.otp_digits,
        allowed_countries=settings.sms_allowed_countries,
        webotp_host=urlsplit(settings.public_url).hostname or "localhost",
    ),
    "email": lambda settings, deps: EmailFactor(deps, digits=settings.otp_digits),
    "webauthn": lambda settings, deps: WebAuthnFactor(deps, RelyingParty.from_settings(settings)),
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
        backup_left = self.backup.left_column(users.c.id) if self.backup is not None else None
        self._sign_in_read = factor_repo.sign_in_read(backup_left)

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

    @property
    def passwordless(self) -> PasswordlessFactor | None:
        """The enabled type that signs in without a password (factors/base.py), if any."""
        for built in self.types.values():
            if hasattr(built, "passwordless_challenge"):
                return built  # type: ignore[return-value]
        return None

    def owner_details(self, factor: StoredFactor) -> Mapping[str, Any]:
        """What the factor's type shows its owner beyond the common fields (may be empty)."""
        kind = self.types.get(factor.type)
        if kind is None or not hasattr(kind, "owner_details"):
            return {}
        described: OwnerDetails = kind  # type: ignore[assignment]
        return described.owner_details(factor)

    async def count_active(self, conn: AsyncConnection, user_id: str) -> int:
        """Active factors of the types this deployment offers (disabled types do not count)."""
        return await factor_repo.count_active(conn, user_id, self.row_types)

    async def account_for_sign_in(self, conn: AsyncConnection, email: str) -> SignInAccount | None:
        """The account and what its second step may offer, in one read (the password step)."""
        return await factor_repo.get_for_sign_in(conn, self._sign_in_read, email, self.row_types)

    def second_step_of(self, account: SignInAccount) -> SecondStepOffer:
        offered = [self.types[row.type].describe(row) for row in account.factors]
        if offered and self.backup is not None:  # a backup alone is no second factor
            backup = self.backup.offered_with(account.backup_left)
            if backup is not None:
                offered.append(backup)
        snapshots = [row for row in account.factors if self.types[row.type].verifies_from_snapshot]
        return SecondStepOffer(offered, snapshots)


def _is_backup(built: FactorType | BackupFactor) -> bool:
    return hasattr(built, "factor_id")
