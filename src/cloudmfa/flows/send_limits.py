"""Limits on messages to users (API.md "Throttling"): one message per factor per resend cooldown
(``CLOUDMFA_OTP_RESEND_COOLDOWN_S``, for the sends that come from a factor); at most
``CLOUDMFA_DESTINATION_HOURLY_LIMIT`` messages an hour to one number or address, whatever sent
them (codes, enrolments, password-reset links); and hourly budgets for SMS, per country of the
number and in all, against SMS pumping: a fraudster who makes the service text numbers they are
paid for. The per-attempt count of a sign-in's sends is the attempt's own (store/login_attempts.py).

The limits are keyed on the message (its channel and destination), never on a factor type.
A send takes them in one atomic step of the shared store (``EphemeralStore.take_all``, one
Redis script for every worker and replica): the cooldown starts, then a unit of each hourly
count is taken, all or none, so a refused send costs no budget and no two requests can overspend
one. A refusal answers 429 with the wait, and the audit trail says which limit refused (but the
cooldown's, which a double tap meets every day).

Every key of these limits carries one hash tag, ``{send_limits}``: a Redis Cluster keeps a
script's keys in one slot, and the global SMS budget is one key that every text touches, so the
others go to its slot. That node runs one script per message sent (two when a later refusal
gives the units back); spreading the destinations' counts over other slots would take a round
trip per slot instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import phonenumbers

from cloudmfa.delivery.base import Message
from cloudmfa.errors import RateLimited
from cloudmfa.flows import throttling
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import SendLimits
from cloudmfa.store.ephemeral import Cooldown, Reservation

HOUR_S = 3600
TAG = "{send_limits}"  # the hash tag of every key here (see above)


def destination_key(message: Message) -> str:
    # The address or number itself stays out of the store: a digest names it.
    digest = hashlib.sha256(f"{message.channel}:{message.to}".encode()).hexdigest()[:32]
    return f"send_dest:{TAG}:{digest}"


def sms_budget_key(country: str) -> str:
    """The hourly SMS count of one country, or of all of them (``*``)."""
    return f"sms_budget:{TAG}:{country}"


def cooldown_key(factor_id: str) -> str:
    return f"send_cooldown:{TAG}:{factor_id}"


def sms_country(number: str) -> str:
    """The ISO country of an E.164 number ("ZZ" when phonenumbers cannot place it)."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or "ZZ"
    except phonenumbers.NumberParseException:
        return "ZZ"


@dataclass(frozen=True, slots=True)
class HourlyLimit:
    reservation: Reservation
    reason: str  # what the audit event and the metrics call it
    details: dict[str, str]  # more for the audit event (the country)


@dataclass(frozen=True, slots=True)
class Taken:
    """The units a send took, to give back if a later check refuses it (``give_back``)."""

    keys: tuple[str, ...]


async def take_send(
    svc: SendLimits,
    info: RequestInfo,
    message: Message,
    *,
    user_id: str | None,
    cooldown_for: str | None = None,
) -> Taken:
    """Start the resend cooldown of the factor ``cooldown_for`` (when the message comes from
    one) and count the message against every limit that holds for it, in one step. Raises
    RateLimited, nothing counted, when one refuses (audited, but for the cooldown)."""
    limits = _hourly_limits(svc, message)
    cooldown = None
    if cooldown_for is not None and svc.settings.otp_resend_cooldown_s > 0:
        cooldown = Cooldown(cooldown_key(cooldown_for), svc.settings.otp_resend_cooldown_s)
    reservations = [limit.reservation for limit in limits]
    refusal = await svc.ephemeral.take_all(reservations, cooldown=cooldown)
    if refusal is None:
        return Taken(tuple(limit.reservation.key for limit in limits))
    if isinstance(refusal.refused_by, Cooldown):
        raise RateLimited(
            "A code was sent a moment ago; wait before asking for another.",
            retry_after=refusal.retry_after or refusal.refused_by.ttl_s,
            kind="resend_cooldown",
        )
    limit = next(limit for limit in limits if limit.reservation == refusal.refused_by)
    exc = RateLimited(
        _REFUSALS[limit.reason],
        retry_after=refusal.retry_after or HOUR_S,
        kind="destination" if limit.reason == "destination_limit" else "sms_budget",
    )
    await throttling.record_rate_limited(
        svc, info, user_id, exc, reason=limit.reason, channel=message.channel, **limit.details
    )
    raise exc


async def give_back(svc: SendLimits, taken: Taken) -> None:
    """The units of a send that a later check refused: it costs no budget."""
    await svc.ephemeral.decr_if_exists(*taken.keys)


def _hourly_limits(svc: SendLimits, message: Message) -> list[HourlyLimit]:
    settings = svc.settings
    limits = [
        HourlyLimit(
            Reservation(destination_key(message), HOUR_S, settings.destination_hourly_limit),
            "destination_limit",
            {},
        )
    ]
    if message.channel == "sms":
        country = sms_country(message.to)
        if settings.sms_country_hourly_budget > 0:
            limits.append(
                HourlyLimit(
                    Reservation(
                        sms_budget_key(country), HOUR_S, settings.sms_country_hourly_budget
                    ),
                    "sms_country_budget",
                    {"country": country},
                )
            )
        if settings.sms_global_hourly_budget > 0:
            limits.append(
                HourlyLimit(
                    Reservation(sms_budget_key("*"), HOUR_S, settings.sms_global_hourly_budget),
                    "sms_global_budget",
                    {},
                )
            )
    return limits


_REFUSALS = {
    "destination_limit": "Too many messages were sent to this destination; try again later.",
    "sms_country_budget": "Text messages to this country are paused for now; try again later.",
    "sms_global_budget": "Text messages are paused for now; try again later.",
}
