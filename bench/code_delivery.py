"""(g): codes by SMS at speed. Users with an SMS factor (a number each), the environment that
points the `webhook` provider at bench/sms_receiver.py and moves the sending limits out of the
way, and the figures drawn from the receiver's arrivals matched to the requests by number."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from bench.loadgen import RATE_KEPT_SHARE
from cloudmfa.config import Settings
from cloudmfa.factors.base import StoredFactor
from cloudmfa.services import Services
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.users import User

# Issue 13 part 7.
REQUEST_P99_TARGET_MS = 50.0
DELIVERY_RATE_TARGET = 200.0
ARRIVAL_P99_TARGET_MS = 1000.0
CODE = re.compile(r"\b\d{6}\b")
SmsUser = tuple[str, str, str, str]  # user id, email, SMS factor id, its number (E.164)


def number_for(index: int) -> str:
    # +1 415 2xx xxxx: a US number (fixed-line-or-mobile, accepted for SMS), distinct per user.
    return f"+1415{2000000 + index:07d}"


def delivery_env(receiver_url: str, secret: str, mode: str) -> dict[str, str]:
    """What (g)'s serve (and worker) run with, beside the bench's usual environment."""
    return {
        "CLOUDMFA_DELIVERY": mode,
        "CLOUDMFA_ENABLED_FACTORS": "totp,sms,email,recovery",
        "CLOUDMFA_SMS_PROVIDER": "webhook",
        "CLOUDMFA_SMS_WEBHOOK_URL": f"{receiver_url}/sms",
        "CLOUDMFA_SMS_WEBHOOK_SECRET": secret,
        # The limits that would stop a benchmark, out of the way (each is still evaluated):
        # every user is challenged once, but all numbers are in one country.
        "CLOUDMFA_OTP_RESEND_COOLDOWN_S": "0",
        "CLOUDMFA_DESTINATION_HOURLY_LIMIT": "1000000",
        "CLOUDMFA_SMS_COUNTRY_HOURLY_BUDGET": "100000000",
        "CLOUDMFA_SMS_GLOBAL_HOURLY_BUDGET": "100000000",
        "CLOUDMFA_MFA_MAX_SENDS": "20",
    }


async def provision(
    settings: Settings, count: int, first: int, password_hash: str
) -> list[SmsUser]:
    """``count`` users with an active SMS factor each, straight through the stores."""
    svc = Services.build(settings)
    await svc.start(migrate=True)
    now = svc.clock.now()
    users: list[SmsUser] = []
    try:
        for start in range(first, first + count, 500):
            async with svc.engine.begin() as conn:
                for i in range(start, min(first + count, start + 500)):
                    user_id, factor_id = str(uuid.uuid4()), str(uuid.uuid4())
                    email = f"bench-sms-{i}-{secrets.token_hex(3)}@example.com"
                    phone = number_for(i)
                    await user_repo.insert_user(
                        conn, User(user_id, email, None, password_hash, (), None, now)
                    )
                    await factor_repo.insert_factor(
                        conn, _sms_factor(factor_id, user_id, phone, now)
                    )
                    users.append((user_id, email, factor_id, phone))
    finally:
        await svc.close()
    return users


def _sms_factor(factor_id: str, user_id: str, phone: str, now: Any) -> StoredFactor:
    return StoredFactor(
        id=factor_id,
        user_id=user_id,
        type="sms",
        label="Phone",
        status="active",
        secret=None,
        data={"phone": phone},
        lookup_key=None,
        counter=None,
        created_at=now,
        activated_at=now,
        last_used_at=None,
    )


@dataclass
class Arrivals:
    """The receiver's arrivals matched to the requests that asked for them."""

    sent_at: dict[str, float]  # number → when its challenge request left (monotonic)
    answered: int  # requests answered 202
    load_ended: float
    arrived: list[tuple[float, str, str]]  # (monotonic, to, body)
    refused: int  # arrivals whose signature did not verify

    def figures(self) -> dict[str, Any]:
        matched = [(t, to, body) for t, to, body in self.arrived if to in self.sent_at]
        waits = sorted(t - self.sent_at[to] for t, to, _ in matched)
        first_request = min(self.sent_at.values())
        last_arrival = max((t for t, _, _ in matched), default=first_request)
        during = sum(1 for t, _, _ in matched if t <= self.load_ended)
        backlog = self.answered - during
        load_s = self.load_ended - first_request
        drain_s = last_arrival - self.load_ended
        return {
            "answered_202": self.answered,
            "arrived": len(matched),
            "arrived_twice": len(matched) - len({to for _, to, _ in matched}),
            "without_code": sum(1 for _, _, body in matched if not CODE.search(body)),
            "refused_signature": self.refused,
            "delivery_rate": _rate(len(matched), last_arrival - first_request),
            "rate_during_load": _rate(during, load_s),
            "backlog_at_load_end": backlog,
            "drain_rate": _rate(backlog, drain_s) if backlog > 0 and drain_s > 0 else None,
            "arrival_p50_ms": _ms(_percentile(waits, 50)),
            "arrival_p99_ms": _ms(_percentile(waits, 99)),
            "arrival_max_ms": _ms(waits[-1]) if waits else None,
        }


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def _ms(seconds: float | None) -> float | None:
    return round(1000 * seconds, 1) if seconds is not None else None


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def verdicts(run: dict[str, Any]) -> str:
    """The targets of issue 13 part 7, met or not, for the table. They are set at a rate, so
    the paced run answers all three: the request, delivery keeping to the offered rate (every
    message arrived, at no less than RATE_KEPT_SHARE of it), request to arrival. The closed loop
    runs at saturation, where the request waits for the 31 before it whatever the service does;
    it answers only how fast delivery goes, while the load runs and draining what is left."""

    def check(value: float | None, target: float, at_most: bool) -> str:
        if value is None:
            return "n/a"
        ok = value <= target if at_most else value >= target
        return "met" if ok else "MISSED"

    if run["load"] == "closed":
        return (
            f"msg/s under load {check(run['rate_during_load'], DELIVERY_RATE_TARGET, False)}, "
            f"drain msg/s {check(run['drain_rate'], DELIVERY_RATE_TARGET, False)}"
        )
    offered = run["offered_rate"]
    if offered < DELIVERY_RATE_TARGET:
        delivery = f"n/a (offered below {DELIVERY_RATE_TARGET:g}/s)"
    elif run["arrived"] < run["answered_202"]:
        delivery = "MISSED (not every message arrived)"
    else:
        delivery = check(run["delivery_rate"], RATE_KEPT_SHARE * offered, False)
    return (
        f"request p99 {check(run['p99_ms'], REQUEST_P99_TARGET_MS, True)}, "
        f"delivery at the offered rate {delivery}, "
        f"request→arrival p99 {check(run['arrival_p99_ms'], ARRIVAL_P99_TARGET_MS, True)}"
    )
