"""Managing one's own factors (API.md "The signed-in user and their factors"): enrol,
activate, remove, and the backup factor's codes.

The rules that hold for every type live here (step-up, the factor count, recovery codes with the
first factor, single activation); what a type checks or keeps is its own business, reached
through the registry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.delivery.outbox import binding_for_enrolment
from cloudmfa.errors import DeliveryFailed, InvalidCode, NotFound, ValidationFailed
from cloudmfa.factors.base import (
    Activation,
    Enrolment,
    EnrolParams,
    FactorType,
    PreparedSet,
    ProofInput,
    StoredFactor,
    UserRef,
    expect_proof,
)
from cloudmfa.flows import notifications, send_limits
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import Enrolling
from cloudmfa.flows.principal import (
    Principal,
    require_recent_authentication,
    require_recent_sign_in,
)
from cloudmfa.flows.second_factor import UNDELIVERED
from cloudmfa.store import claims
from cloudmfa.store import devices as device_repo
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import AuditEvent, record
from cloudmfa.store.factors import DuplicateLookupKey

MAX_FACTORS_PER_USER = 20
# How long what an enrolment keeps for its activation (a code's hash, a WebAuthn challenge)
# stays: the ten minutes a code sent at enrolment is valid.
ENROLMENT_KEPT_S = 600


def _event(principal: Principal, info: RequestInfo, type_: str, **details: Any) -> AuditEvent:
    return info.event(type_, subject_id=principal.user.id, **details)


def _kept_key(factor_id: str) -> str:
    return f"enrolment_kept:{factor_id}"


def _tries_key(factor_id: str) -> str:
    return f"enrolment_tries:{factor_id}"


async def list_factors(svc: Enrolling, principal: Principal) -> list[StoredFactor]:
    async with svc.reader.connect() as conn:
        return await factor_repo.list_factors(conn, principal.user.id)


async def enrol(
    svc: Enrolling,
    principal: Principal,
    info: RequestInfo,
    factor_type: str,
    raw_params: Mapping[str, Any],
) -> tuple[StoredFactor, Enrolment]:
    require_recent_sign_in(svc.settings, svc.clock.now(), principal)
    kind = svc.factor_types.get(factor_type)
    if kind is None:
        offered = ", ".join(svc.factor_types.row_types) or "none"
        raise ValidationFailed(f"type: factor type {factor_type!r} is not offered here ({offered})")
    params = _parse_params(kind.params, raw_params)
    # Every check that does not depend on the type runs before the type does anything.
    if principal.active_factor_count > 0:
        # A first factor may come from a password-only session; any further one needs step-up.
        await require_recent_authentication(svc, principal)
    user = principal.user
    async with svc.reader.connect() as conn:
        await _check_room(conn, user.id)
    factor_id = str(uuid.uuid4())
    enrolment = await kind.enrol(UserRef(user.id, user.email), factor_id, params)
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
        data=dict(enrolment.data),
        lookup_key=None,
        counter=None,
        created_at=now,
        activated_at=None,
        last_used_at=None,
    )
    if enrolment.send is not None:
        # API.md: this send starts the resend cooldown
        await send_limits.take_send(
            svc, info, enrolment.send.message, user_id=user.id, cooldown_for=factor_id
        )
    if enrolment.keep is not None:  # before anything is sent: a code must be checkable
        await svc.ephemeral.set(_kept_key(factor_id), json.dumps(enrolment.keep), ENROLMENT_KEPT_S)
    events = [
        _event(principal, info, "factor.enrolled", factor_id=factor_id, factor_type=factor_type)
    ]
    async with svc.engine.begin() as conn:
        await user_repo.lock_for_update(conn, user.id)  # parallel enrolments count in turn
        await _check_room(conn, user.id)
        await factor_repo.insert_factor(conn, factor)
        message_ids: list[str] = []
        if enrolment.send is not None:
            message_ids.append(
                await svc.outbox.submit(
                    conn,
                    enrolment.send.message,
                    user_id=user.id,
                    binding=binding_for_enrolment(factor_id),
                )
            )
            channel = enrolment.send.message.channel
            events.append(
                _event(principal, info, "mfa.challenge_sent", factor_id=factor_id, channel=channel)
            )
        await record(conn, now, *events)
    await svc.outbox.dispatch(*message_ids)
    return factor, enrolment


def _parse_params(model: type[EnrolParams], raw: Mapping[str, Any]) -> EnrolParams:
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        # The messages only, never the rejected input.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ValidationFailed(problems) from None


async def _check_room(conn: AsyncConnection, user_id: str) -> None:
    if await factor_repo.count_all(conn, user_id) >= MAX_FACTORS_PER_USER:
        raise ValidationFailed(f"An account may hold at most {MAX_FACTORS_PER_USER} factors.")


@dataclass(frozen=True, slots=True)
class Activated:
    factor: StoredFactor
    recovery_codes: list[str] | None


async def activate(
    svc: Enrolling, principal: Principal, info: RequestInfo, factor_id: str, proof: ProofInput
) -> Activated:
    if principal.active_factor_count > 0:
        # Adding a factor while one is active needs step-up, also for one enrolled earlier
        # (from a password-only session, before the first factor was activated).
        await require_recent_authentication(svc, principal)
    user_id = principal.user.id
    async with svc.reader.connect() as conn:
        factor = await factor_repo.get_factor(conn, factor_id, user_id)
    if factor is None:
        raise NotFound("No such factor.")
    kind = svc.factor_types.get(factor.type)
    if kind is None:
        raise ValidationFailed(f"Factor type {factor.type!r} is not offered here.")
    if factor.status != "pending":
        raise ValidationFailed("This factor is already active.")
    activation = await _check_possession(svc, kind, factor, proof)
    # Recovery codes come with the first factor; their hashes are slow, so they are made
    # before the transaction (and thrown away should this turn out not to be the first).
    backup = svc.factor_types.backup
    prepared = await backup.prepare() if backup and principal.active_factor_count == 0 else None
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        # Two pending factors activated in parallel must not both count as the first (and
        # both issue recovery codes): one user's activations take turns.
        await user_repo.lock_for_update(conn, user_id)
        if not await claims.apply(conn, activation.claim, user_id=user_id, now=now):
            raise InvalidCode("The code is not valid.")  # spent a moment ago by another request
        await _flip_to_active(conn, factor, activation, now)
        events = [
            _event(
                principal, info, "factor.activated", factor_id=factor_id, factor_type=factor.type
            )
        ]
        codes = None
        if backup is not None and await svc.factor_types.count_active(conn, user_id) == 1:
            prepared = prepared or await backup.prepare()
            await backup.store(conn, user_id, prepared)
            codes = prepared.shown
            events.append(_event(principal, info, "recovery_codes.generated", count=len(codes)))
        await record(conn, now, *events)
        notice = await notifications.notify(
            conn,
            svc,
            to=principal.user.email,
            kind="factor_added",
            detail=_named(factor),
            user_id=user_id,
        )
        activated = await factor_repo.get_factor(conn, factor_id, user_id)
    await svc.outbox.dispatch(notice)
    await svc.ephemeral.delete(_kept_key(factor_id))
    assert activated is not None
    return Activated(factor=activated, recovery_codes=codes)


async def _check_possession(
    svc: Enrolling, kind: FactorType, factor: StoredFactor, proof: ProofInput
) -> Activation:
    """The type's check of the proof, after counting the try: a pending factor takes at most
    CLOUDMFA_MFA_MAX_ATTEMPTS wrong proofs, then what its enrolment kept is dropped (a code
    sent at enrolment dies) and only a new enrolment helps. A 6-digit code must not be
    guessable from a session by trying them all."""
    expect_proof(proof, kind.proof)
    tries = await svc.ephemeral.incr(_tries_key(factor.id), ENROLMENT_KEPT_S)
    if tries > svc.settings.mfa_max_attempts:
        await svc.ephemeral.delete(_kept_key(factor.id))
        raise InvalidCode("Too many wrong codes for this factor; remove it and enrol again.")
    kept = None
    if kind.uses_challenge:
        raw = await svc.ephemeral.get(_kept_key(factor.id))
        kept = json.loads(raw) if raw is not None else None
    try:
        activation = await kind.activate(factor, proof, kept)
    except InvalidCode:
        if kind.uses_challenge and await svc.outbox.failed_for(binding_for_enrolment(factor.id)):
            raise DeliveryFailed(UNDELIVERED) from None
        raise
    await svc.ephemeral.delete(_tries_key(factor.id))
    return activation


async def _flip_to_active(
    conn: AsyncConnection, factor: StoredFactor, activation: Activation, now: datetime
) -> None:
    try:
        flipped = await factor_repo.activate(
            conn,
            factor.id,
            now,
            data=activation.data,
            lookup_key=activation.lookup_key,
            counter=activation.counter,
        )
    except DuplicateLookupKey:
        raise ValidationFailed("This authenticator is already registered.") from None
    if not flipped:
        raise ValidationFailed("This factor is already active.")


async def rename(
    svc: Enrolling, principal: Principal, info: RequestInfo, factor_id: str, label: str
) -> StoredFactor:
    await require_recent_authentication(svc, principal)  # the step-up rules of removal
    user_id = principal.user.id
    async with svc.engine.begin() as conn:
        if not await factor_repo.set_label(conn, factor_id, user_id, label):
            raise NotFound("No such factor.")
        await record(
            conn,
            svc.clock.now(),
            _event(principal, info, "factor.renamed", factor_id=factor_id),
        )
        renamed = await factor_repo.get_factor(conn, factor_id, user_id)
    assert renamed is not None
    return renamed


async def remove(svc: Enrolling, principal: Principal, info: RequestInfo, factor_id: str) -> None:
    await require_recent_authentication(svc, principal)
    user_id = principal.user.id
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        factor = await factor_repo.get_factor(conn, factor_id, user_id)
        if factor is None or not await factor_repo.delete_factor(conn, factor_id, user_id):
            raise NotFound("No such factor.")
        backup = svc.factor_types.backup
        if backup is not None and await svc.factor_types.count_active(conn, user_id) == 0:
            # Recovery codes back up a factor; with none left they would be a factor alone.
            await backup.discard(conn, user_id)
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
        notice = await notifications.notify(
            conn,
            svc,
            to=principal.user.email,
            kind="factor_removed",
            detail=_named(factor),
            user_id=user_id,
        )
    await svc.outbox.dispatch(notice)


async def regenerate_recovery_codes(
    svc: Enrolling, principal: Principal, info: RequestInfo
) -> list[str]:
    await require_recent_authentication(svc, principal)
    backup = svc.factor_types.backup
    if backup is None:
        raise ValidationFailed("Recovery codes are not offered here.")
    user_id = principal.user.id
    async with svc.reader.connect() as conn:
        if await svc.factor_types.count_active(conn, user_id) == 0:
            raise ValidationFailed("Set up a second factor before generating recovery codes.")
    prepared: PreparedSet = await backup.prepare()
    async with svc.engine.begin() as conn:
        if await svc.factor_types.count_active(conn, user_id) == 0:  # removed meanwhile
            raise ValidationFailed("Set up a second factor before generating recovery codes.")
        await backup.store(conn, user_id, prepared)
        await record(
            conn,
            svc.clock.now(),
            _event(principal, info, "recovery_codes.generated", count=len(prepared.shown)),
        )
        notice = await notifications.notify(
            conn, svc, to=principal.user.email, kind="recovery_codes_regenerated", user_id=user_id
        )
    await svc.outbox.dispatch(notice)
    return prepared.shown


def _named(factor: StoredFactor) -> str:
    """How a notice names a factor: its label (the user's own words, or the type's default),
    never where its codes go."""
    return f'"{factor.label}"' if factor.label else factor.type
