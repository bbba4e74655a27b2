"""Managing one's own factors (API.md "The signed-in user and their factors"): enrol, activate,
remove, recovery codes, remembered devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cloudmfa.errors import InvalidCode, NotFound, ValidationFailed
from cloudmfa.factors.base import Enrolment, StoredFactor, UserRef
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.principal import (
    Principal,
    require_recent_authentication,
    require_recent_sign_in,
)
from cloudmfa.services import Services
from cloudmfa.store import claims
from cloudmfa.store import devices as device_repo
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import AuditEvent, record
from cloudmfa.store.devices import RememberedDevice

MAX_FACTORS_PER_USER = 20


def _event(principal: Principal, info: RequestInfo, type_: str, **details: Any) -> AuditEvent:
    return info.event(type_, subject_id=principal.user.id, **details)


async def list_factors(svc: Services, principal: Principal) -> list[StoredFactor]:
    async with svc.reader.connect() as conn:
        return await factor_repo.list_factors(conn, principal.user.id)


async def enrol(
    svc: Services, principal: Principal, info: RequestInfo, factor_type: str, params: dict[str, Any]
) -> tuple[StoredFactor, Enrolment]:
    require_recent_sign_in(svc, principal)
    module = svc.factors.module(factor_type)
    if module is None:
        offered = ", ".join(svc.factors.row_types) or "none"
        raise ValidationFailed(f"type: factor type {factor_type!r} is not offered here ({offered})")
    if principal.active_factor_count > 0:
        # A first factor may come from a password-only session; any further one needs step-up.
        await require_recent_authentication(svc, principal)
    user = principal.user
    factor_id = str(uuid.uuid4())
    enrolment = await module.enrol(
        svc.factor_env, user=UserRef(user.id, user.email), factor_id=factor_id, params=params
    )
    now = svc.clock.now()
    factor = StoredFactor(
        id=factor_id,
        user_id=user.id,
        type=factor_type,
        label=enrolment.label,
        status="pending",
        secret=svc.secretbox.encrypt(enrolment.secret, context=factor_id)
        if enrolment.secret is not None
        else None,
        data=enrolment.data,
        last_used_step=None,
        created_at=now,
        activated_at=None,
        last_used_at=None,
    )
    async with svc.engine.begin() as conn:
        if await factor_repo.count_all(conn, user.id) >= MAX_FACTORS_PER_USER:
            raise ValidationFailed(f"An account may hold at most {MAX_FACTORS_PER_USER} factors.")
        await factor_repo.insert_factor(conn, factor)
        await record(
            conn,
            now,
            _event(
                principal, info, "factor.enrolled", factor_id=factor_id, factor_type=factor_type
            ),
        )
    return factor, enrolment


@dataclass(frozen=True, slots=True)
class Activated:
    factor: StoredFactor
    recovery_codes: list[str] | None


async def activate(
    svc: Services, principal: Principal, info: RequestInfo, factor_id: str, proof: dict[str, Any]
) -> Activated:
    if principal.active_factor_count > 0:
        # Adding a factor while one is active needs step-up, also for one enrolled earlier
        # (from a password-only session, before the first factor was activated).
        await require_recent_authentication(svc, principal)
    user_id = principal.user.id
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        # Two pending factors activated in parallel must not both count as the first (and
        # both issue recovery codes): one user's activations take turns.
        await user_repo.lock_for_update(conn, user_id)
        factor = await factor_repo.get_factor(conn, factor_id, user_id)
        if factor is None:
            raise NotFound("No such factor.")
        module = svc.factors.module(factor.type)
        if module is None:
            raise ValidationFailed(f"Factor type {factor.type!r} is not offered here.")
        if factor.status != "pending":
            raise ValidationFailed("This factor is already active.")
        claim = await module.activate(svc.factor_env, factor, proof)
        if not await claims.apply(conn, claim, now):
            raise InvalidCode("The code is not valid.")  # spent a moment ago by another request
        if not await factor_repo.activate(conn, factor_id, now):
            raise ValidationFailed("This factor is already active.")
        events = [
            _event(
                principal, info, "factor.activated", factor_id=factor_id, factor_type=factor.type
            )
        ]
        codes = None
        recovery = svc.factors.recovery_codes
        if recovery is not None and await svc.factors.count_active(conn, user_id) == 1:
            codes = await recovery.issue(conn, svc.factor_env, user_id)
            events.append(_event(principal, info, "recovery_codes.generated", count=len(codes)))
        await record(conn, now, *events)
        activated = await factor_repo.get_factor(conn, factor_id, user_id)
    assert activated is not None
    return Activated(factor=activated, recovery_codes=codes)


async def remove(svc: Services, principal: Principal, info: RequestInfo, factor_id: str) -> None:
    await require_recent_authentication(svc, principal)
    user_id = principal.user.id
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        factor = await factor_repo.get_factor(conn, factor_id, user_id)
        if factor is None or not await factor_repo.delete_factor(conn, factor_id, user_id):
            raise NotFound("No such factor.")
        if await svc.factors.count_active(conn, user_id) == 0:
            # Recovery codes back up a factor; with none left they would be a factor alone.
            await code_repo.delete_all(conn, user_id)
        forgotten = await device_repo.forget_all(conn, user_id)
        await record(
            conn,
            now,
            _event(
                principal,
                info,
                "factor.removed",
                factor_id=factor_id,
                factor_type=factor.type,
                devices_forgotten=forgotten,
            ),
        )


async def regenerate_recovery_codes(
    svc: Services, principal: Principal, info: RequestInfo
) -> list[str]:
    await require_recent_authentication(svc, principal)
    recovery = svc.factors.recovery_codes
    if recovery is None:
        raise ValidationFailed("Recovery codes are not offered here.")
    user_id = principal.user.id
    async with svc.engine.begin() as conn:
        if await svc.factors.count_active(conn, user_id) == 0:
            raise ValidationFailed("Set up a second factor before generating recovery codes.")
        codes = await recovery.issue(conn, svc.factor_env, user_id)
        await record(
            conn,
            svc.clock.now(),
            _event(principal, info, "recovery_codes.generated", count=len(codes)),
        )
    return codes


async def list_devices(svc: Services, principal: Principal) -> list[RememberedDevice]:
    async with svc.reader.connect() as conn:
        return await device_repo.list_devices(conn, principal.user.id, svc.clock.now())


async def forget_device(
    svc: Services, principal: Principal, info: RequestInfo, device_id: str
) -> None:
    async with svc.engine.begin() as conn:
        if not await device_repo.delete_device(conn, device_id, principal.user.id):
            raise NotFound("No such device.")
        await record(
            conn, svc.clock.now(), _event(principal, info, "device.forgotten", device_id=device_id)
        )
