"""What each flow uses, as small protocols: a flow names what it depends on, and a test can hand
it just that. ``services.Services``, built once from the settings, satisfies every one of them.

Members are read-only properties, so a plain attribute of the right type satisfies them.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.clock import Clock
from cloudmfa.config import Settings
from cloudmfa.delivery.base import Outbox
from cloudmfa.factors.registry import FactorTypes
from cloudmfa.security.password_policy import PasswordPolicy
from cloudmfa.security.passwords import PasswordHashing
from cloudmfa.security.secretbox import SecretBox
from cloudmfa.security.throttle import AccountThrottle
from cloudmfa.security.tokens import AccessTokens
from cloudmfa.store.ephemeral import EphemeralStore
from cloudmfa.store.login_attempts import LoginAttempts
from cloudmfa.store.sign_in import SignInStore


class Database(Protocol):
    """The database (writes in transactions; reads without) and the clock that stamps rows."""

    @property
    def clock(self) -> Clock: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def reader(self) -> AsyncEngine: ...


class Configured(Protocol):
    @property
    def settings(self) -> Settings: ...


class Ephemeral(Protocol):
    @property
    def ephemeral(self) -> EphemeralStore: ...


class AuditedLimits(Database, Ephemeral, Protocol):
    """Throttle refusals, audited once per window (flows/throttling.py)."""


class SendLimits(AuditedLimits, Configured, Protocol):
    """Limits on messages: the resend cooldown, by destination, country and in all
    (flows/send_limits.py)."""


class Sessions(Database, Configured, Ephemeral, Protocol):
    """Opening, refreshing and revoking sessions (flows/sessions.py)."""

    @property
    def tokens(self) -> AccessTokens: ...

    @property
    def revocation_ttl_s(self) -> int: ...


class Principals(Sessions, Protocol):
    """Who is calling, and the rules that follow (flows/principal.py)."""

    @property
    def factor_types(self) -> FactorTypes: ...

    async def reload_keys(self) -> None: ...


class Passwords(Protocol):
    @property
    def hashing(self) -> PasswordHashing: ...

    @property
    def throttle(self) -> AccountThrottle: ...


class Accounts(Principals, Passwords, Protocol):
    """Sign-up, administrators from the command line, password changes and resets
    (flows/accounts.py, flows/password_reset.py)."""

    @property
    def policy(self) -> PasswordPolicy: ...

    @property
    def outbox(self) -> Outbox: ...


class SecondFactors(Principals, Passwords, Protocol):
    """The second step of login and the password step that leads to it (flows/second_factor.py,
    flows/login.py)."""

    @property
    def attempts(self) -> LoginAttempts: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def sign_ins(self) -> SignInStore: ...


class PasskeySignIns(Principals, Passwords, Protocol):
    """Passwordless sign-in with a passkey (flows/passwordless.py)."""

    @property
    def sign_ins(self) -> SignInStore: ...


class Enrolling(Principals, Configured, Ephemeral, Protocol):
    """Adding, activating and removing factors (flows/enrolment.py)."""

    @property
    def secretbox(self) -> SecretBox: ...

    @property
    def outbox(self) -> Outbox: ...


class AdminResets(Principals, Configured, Protocol):
    """An administrator's MFA reset, which tells the user (flows/admin.py ``reset_mfa``)."""

    @property
    def outbox(self) -> Outbox: ...


class Maintenance(Sessions, Protocol):
    """Operator tasks over the whole database (flows/maintenance.py)."""

    @property
    def secretbox(self) -> SecretBox: ...
