"""Limits on messages to users beyond the per-factor cooldown and the per-attempt count
(API.md "Throttling"): at most ``CLOUDMFA_DESTINATION_HOURLY_LIMIT`` messages an hour to one
number or address, whatever sent them (codes, enrolments, password-reset links), and hourly
budgets for SMS, per country of the number and in all, against SMS pumping: a fraudster who
makes the service text numbers they are paid for.

The limits are keyed on the message (its channel and destination), never on a factor type.
Each count is one atomic step of the shared store (INCR that starts its hour, in Redis for
every worker and replica); a send takes a unit of each limit in turn and, when one is spent,
gives back what it took, so a refused send costs no budget and no two requests can overspend
one. A refusal answers 429 with the wait, and the audit trail says which limit refused.
"""

from __future__ import annotations

import hashlib

import phonenumbers

from cloudmfa.delivery.base import Message
from cloudmfa.errors import RateLimited
from cloudmfa.flows import throttling
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import SendLimits

HOUR_S = 3600


def destination_key(message: Message) -> str:
    # The address or number itself stays out of the store: a digest names it.
    digest = hashlib.sha256(f"{message.channel}:{message.to}".encode()).hexdigest()[:32]
    return f"send_dest:{digest}"


def sms_country(number: str) -> str:
    """The ISO country of an E.164 number ("ZZ" when phonenumbers cannot place it)."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or "ZZ"
    except phonenumbers.NumberParseException:
        return "ZZ"


async def take_send(
    svc: SendLimits, info: RequestInfo, message: Message, *, user_id: str | None
) -> None:
    """Count one message against every limit that holds for it; RateLimited (audited, and
    nothing counted) when one is spent."""
    settings = svc.settings
    limits: list[tuple[str, int, str, dict[str, str]]] = [
        (destination_key(message), settings.destination_hourly_limit, "destination_limit", {})
    ]
    if message.channel == "sms":
        country = sms_country(message.to)
        if settings.sms_country_hourly_budget > 0:
            limits.append(
                (
                    f"sms_budget:{country}",
                    settings.sms_country_hourly_budget,
                    "sms_country_budget",
                    {"country": country},
                )
            )
        if settings.sms_global_hourly_budget > 0:
            limits.append(
                ("sms_budget:*", settings.sms_global_hourly_budget, "sms_global_budget", {})
            )
    taken: list[str] = []
    for key, limit, reason, details in limits:
        taken.append(key)
        if await svc.ephemeral.incr(key, HOUR_S) > limit:
            retry_after = await svc.ephemeral.ttl(key) or HOUR_S
            for done in taken:
                await svc.ephemeral.decr_if_exists(done)
            exc = RateLimited(_REFUSALS[reason], retry_after=retry_after)
            await throttling.record_rate_limited(
                svc, info, user_id, exc, reason=reason, channel=message.channel, **details
            )
            raise exc


_REFUSALS = {
    "destination_limit": "Too many messages were sent to this destination; try again later.",
    "sms_country_budget": "Text messages to this country are paused for now; try again later.",
    "sms_global_budget": "Text messages are paused for now; try again later.",
}
