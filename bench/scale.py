"""`make bench-scale`: the sign-in steps and the administration reads at a million users.

Two PostgreSQL databases are filled straight through COPY (one precomputed password hash, one
precomputed recovery-code hash): a small one (`--baseline-users`, 1,000 by default) and a large
one (`--users`, 1,000,000, with `--audit-events`, 10,000,000). Each user has an active TOTP
factor (its seed encrypted under the bench key ring), ten recovery codes, a live session and its
refresh token; the audit events are spread over the users and the last 90 days. Then, against
`cloudmfa serve --workers 2` on each database in turn, with Redis:

(a) the password step (`POST /auth/login`) of the same number of sampled users, for --duration s;
(b) the TOTP verify step (`POST /auth/verify`), one prepared mfa_token per sampled user;
(g) `GET /admin/users?query=` for a rare substring (one user's address), a missing one and a
    common one (every address), as an administrator who verified a second factor;
(h) `GET /admin/audit` paging: the newest page and the 20 pages after it, by type, by user.

The result compares each p99 at the large size with the small one, and (g)'s p99 with 200 ms.
Written to bench/results/scale-<time>.{json,md}. Here, on a shared 2-core machine, run it with
a reduced `--users` (bench/README.md says what was run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pyotp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (  # noqa: E402
    PASSWORD,
    Server,
    User4,
    create_pg_database,
    drop_pg_database,
    free_port,
    log,
    machine,
    measure_password_step,
    prepare_mfa_tokens,
    service_env,
    settings_from,
    settle,
    summarise,
    verify_load,
)
from cloudmfa.services import Services  # noqa: E402
from cloudmfa.store import audit_chain  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH = 50_000
RECOVERY_CODES = 10
AUDIT_TYPES = ("auth.login", "auth.mfa_verified", "token.refreshed", "auth.logout", "factor.added")
ADMIN_SEARCH_P99_TARGET_MS = 200
STEP_P99_RATIO_TARGET = 1.2


# --- provisioning ------------------------------------------------------------------------------


class Provisioned:
    def __init__(self, sample: list[User4], admin: User4) -> None:
        self.sample = sample  # users whose TOTP seeds are known here, for (a) and (b)
        self.admin = admin


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


async def provision(
    database_url: str, settings_env: dict[str, str], users: int, events: int, sample: int
) -> Provisioned:
    settings = settings_from(settings_env)
    svc = Services.build(settings)
    await svc.start(migrate=True)  # the schema and the signing key, as `serve` makes them
    password_hash = await svc.hashing.hash(PASSWORD)
    code_hash = await svc.hashing.hash("bench-recovery-code")
    now = datetime.now(UTC)
    chosen = set(random.sample(range(users), min(sample, users)))
    admin_index = next(iter(chosen))
    known: list[User4] = []
    admin: User4 | None = None
    user_ids: list[str] = []
    conn = await asyncpg.connect(_dsn(database_url))
    started = time.monotonic()
    try:
        for start in range(0, users, BATCH):
            rows: dict[str, list[tuple[Any, ...]]] = {
                "users": [],
                "factors": [],
                "recovery_codes": [],
                "sessions": [],
                "refresh_tokens": [],
            }
            for i in range(start, min(users, start + BATCH)):
                user_id, factor_id, session_id = (str(uuid.uuid4()) for _ in range(3))
                email = f"bench-{i:07d}-{secrets.token_hex(2)}@example.com"
                seed = pyotp.random_base32(32)
                roles = '["admin"]' if i == admin_index else "[]"
                rows["users"].append(
                    (user_id, email, f"Bench User {i}", password_hash, roles, None, now, now)
                )
                rows["factors"].append(
                    (
                        *(factor_id, user_id, "totp", "bench", "active"),
                        svc.secretbox.encrypt(seed.encode(), context=factor_id),
                        '{"algorithm": "SHA1", "digits": 6, "period": 30}',
                        *(None, None, now, now, None),
                    )
                )
                for _ in range(RECOVERY_CODES):
                    rows["recovery_codes"].append(
                        (str(uuid.uuid4()), user_id, secrets.token_hex(2), code_hash, now, None)
                    )
                rows["sessions"].append(
                    (
                        *(session_id, user_id, now, now, now, now + timedelta(hours=24)),
                        *('["pwd", "otp", "mfa"]', "aal2", True, "10.0.0.1", "bench", None, None),
                    )
                )
                rows["refresh_tokens"].append((secrets.token_hex(32), session_id, now, None))
                user_ids.append(user_id)
                if i in chosen:
                    record = (user_id, email, factor_id, seed)
                    known.append(record)
                    if i == admin_index:
                        admin = record
            for table, records in rows.items():
                await conn.copy_records_to_table(table, records=records, columns=_columns(table))
            log(f"  {min(users, start + BATCH):,} users ({time.monotonic() - started:.0f} s)")
        chain = _Chain()
        for start in range(0, events, BATCH):
            count = min(BATCH, events - start)
            await conn.copy_records_to_table(
                "audit_events",
                records=_audit_rows(user_ids, count, now, chain),
                columns=_columns("audit_events"),
            )
            if (start // BATCH) % 20 == 19 or start + count == events:
                log(f"  {start + count:,} audit events ({time.monotonic() - started:.0f} s)")
        await conn.execute(
            "UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = $3",
            chain.position,
            chain.head,
            audit_chain.CHAIN_ROW_ID,
        )
    finally:
        await conn.close()
        await svc.close()
    await settle(_dsn(database_url))
    assert admin is not None
    return Provisioned([u for u in known if u != admin], admin)


_EVENT_FIELDS = ("id", "at", "type", "actor_id", "subject_id", "ip", "user_agent", "outcome")


class _Chain:
    """The audit trail's hash chain as the sealer would have built it (store/audit_chain.py):
    a deployment with ten million events has them chained, and unchained ones would keep the
    service's sealers busy chaining them all through the measurements."""

    def __init__(self) -> None:
        self.position = 0
        self.head = audit_chain.GENESIS_HASH

    def seal(self, content: dict[str, Any]) -> tuple[int, str]:
        self.position += 1
        self.head = audit_chain.link(self.head, content)
        return self.position, self.head


def _audit_rows(
    user_ids: list[str], count: int, now: datetime, chain: _Chain
) -> Iterator[tuple[Any, ...]]:
    span = 90 * 86400
    for _ in range(count):
        subject = random.choice(user_ids)
        content: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "at": now - timedelta(seconds=random.randrange(span)),
            "type": random.choice(AUDIT_TYPES),
            "actor_id": subject,
            "subject_id": subject,
            "ip": "10.0.0.1",
            "user_agent": "bench",
            "outcome": "success",
            "details": {},
        }
        position, link = chain.seal({**content, "at": audit_chain.format_time(content["at"])})
        # details as JSON text, as COPY takes it
        yield (*(content[name] for name in _EVENT_FIELDS), "{}", position, link)


def _columns(table: str) -> list[str]:
    return {
        "users": [
            *("id", "email", "display_name", "password_hash", "roles", "locked_at"),
            *("created_at", "updated_at"),
        ],
        "factors": [
            *("id", "user_id", "type", "label", "status", "secret", "data", "lookup_key"),
            *("counter", "created_at", "activated_at", "last_used_at"),
        ],
        "recovery_codes": ["id", "user_id", "lookup", "code_hash", "created_at", "used_at"],
        "sessions": [
            *("id", "user_id", "created_at", "auth_time", "last_seen_at", "expires_at", "amr"),
            *("acr", "mfa_verified", "ip", "user_agent", "revoked_at", "revoked_reason"),
        ],
        "refresh_tokens": ["token_hash", "session_id", "created_at", "used_at"],
        "audit_events": [*_EVENT_FIELDS, "details", "chain_seq", "chain_hash"],
    }[table]


# --- measuring -----------------------------------------------------------------------------------


async def admin_token(base: str, admin: User4) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post("/api/v1/auth/login", json={"email": admin[1], "password": PASSWORD})
        r.raise_for_status()
        body = {
            "mfa_token": r.json()["mfa_token"],
            "factor_id": admin[2],
            "code": pyotp.TOTP(admin[3]).now(),
        }
        r = await client.post("/api/v1/auth/verify", json=body)
        r.raise_for_status()
        return str(r.json()["access_token"])


async def timed_gets(
    base: str, token: str, paths: list[str], *, concurrency: int
) -> dict[str, Any]:
    """Each path once (in order per client), `concurrency` clients at a time; latencies."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    queue = list(reversed(paths))

    async def client_loop() -> None:
        async with httpx.AsyncClient(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            while queue:
                path = queue.pop()
                t0 = time.perf_counter()
                r = await client.get(path)
                latencies.append(time.perf_counter() - t0)
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return {
        "requests": len(latencies),
        "seconds": round(time.perf_counter() - started, 3),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(1000 * latencies[-1], 2),
        "statuses": statuses,
    }


async def audit_pages(base: str, token: str, query: str, pages: int) -> list[str]:
    """The paths of `pages` consecutive pages, following next_cursor."""
    paths = []
    async with httpx.AsyncClient(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        path = f"/api/v1/admin/audit?limit=50{query}"
        for _ in range(pages):
            paths.append(path)
            r = await client.get(path)
            r.raise_for_status()
            cursor = r.json().get("next_cursor")
            if not cursor:
                break
            path = f"/api/v1/admin/audit?limit=50{query}&cursor={cursor}"
    return paths


async def measure(
    label: str, users: int, events: int, args: argparse.Namespace, workdir: str
) -> dict[str, Any]:
    name, url = await create_pg_database()
    prefix = f"cloudmfa-bench-scale-{secrets.token_hex(4)}:"
    env = service_env(url, prefix, workdir)
    try:
        log(f"{label}: provisioning {users:,} users, {events:,} audit events")
        t0 = time.monotonic()
        data = await provision(url, env, users, events, args.sample + 1)
        provisioned_s = time.monotonic() - t0
        port = free_port()
        argv = [
            str(Path(sys.executable).with_name("cloudmfa")),
            *("serve", "--port", str(port), "--workers", "2"),
        ]
        env["CLOUDMFA_AUTO_MIGRATE"] = "false"
        result: dict[str, Any] = {
            "users": users,
            "audit_events": events,
            "provisioning_s": round(provisioned_s, 1),
        }
        with Server(argv, env, port, "/readyz"):
            base = f"http://127.0.0.1:{port}"
            pool = data.sample
            log(f"{label}: (a) password step")
            await measure_password_step(port, pool, 1.0, args)  # warm-up, untimed
            result["a_password_step"] = summarise(
                await measure_password_step(port, pool, args.duration, args)
            )
            log(f"{label}: (b) verify step")
            settings = settings_from(env)
            tokens = await prepare_mfa_tokens(settings, pool)
            result["b_verify_step"] = summarise(await verify_load(port, pool, tokens, args))
            token = await admin_token(base, data.admin)
            someone = random.choice(pool)[1]
            searches = {
                "rare (one user's address)": someone.split("@")[0],
                "missing": "nobody-at-all",
                "common (every address)": "example.com",
                "late (the last tenth of the addresses)": late_substring(users),
            }
            result["g_admin_search"] = {}
            for what, query in searches.items():
                log(f"{label}: (g) /admin/users?query= {what}")
                paths = [f"/api/v1/admin/users?query={query}&limit=50"] * args.admin_requests
                result["g_admin_search"][what] = await timed_gets(
                    base, token, paths, concurrency=args.admin_concurrency
                )
            result["h_audit_paging"] = {}
            for what, query in {
                "all events": "",
                "one type": "&type=token.refreshed",
                "one user": f"&user_id={pool[0][0]}",
            }.items():
                log(f"{label}: (h) /admin/audit paging, {what}")
                paths = await audit_pages(base, token, query, 21)
                result["h_audit_paging"][what] = await timed_gets(
                    base,
                    token,
                    paths * max(1, args.admin_requests // len(paths)),
                    concurrency=args.admin_concurrency,
                )
        return result
    finally:
        if args.keep_databases:
            log(f"{label}: kept database {name} ({url}); drop it when done")
        else:
            await drop_pg_database(name)


def late_substring(users: int) -> str:
    """A substring that about a tenth of the addresses share, all of them sorting last
    (`bench-09` at 1,000,000 users: bench-0900000… to bench-0999999…): the search that once
    walked the email index past nine tenths of the accounts to fill its page."""
    first = users - users // 10
    block = max(0, len(str(max(1, users // 10))) - 1)  # trailing digits left free
    return "bench-" + f"{first:07d}"[: 7 - block]


def table(results: dict[str, Any]) -> str:
    small, large = results["baseline"], results["scaled"]
    head = (
        f"| measurement | p99 at {small['users']:,} users (ms) | p99 at {large['users']:,} "
        f"users, {large['audit_events']:,} events (ms) | ratio | target |\n"
        "| --- | ---: | ---: | ---: | --- |"
    )
    lines = [head]

    def row(name: str, a: dict[str, Any], b: dict[str, Any], target: str) -> None:
        ratio = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else float("nan")
        lines.append(f"| {name} | {a['p99_ms']} | {b['p99_ms']} | {ratio:.2f} | {target} |")

    row("(a) password step", small["a_password_step"], large["a_password_step"], "ratio ≤ 1.2")
    row("(b) verify step", small["b_verify_step"], large["b_verify_step"], "ratio ≤ 1.2")
    for what in small["g_admin_search"]:
        row(
            f"(g) admin search, {what}",
            small["g_admin_search"][what],
            large["g_admin_search"][what],
            "≤ 200 ms",
        )
    for what in small["h_audit_paging"]:
        row(
            f"(h) audit paging, {what}",
            small["h_audit_paging"][what],
            large["h_audit_paging"][what],
            "",
        )
    rates = (
        f"\n(a) {small['a_password_step']['rate']} → {large['a_password_step']['rate']} req/s; "
        f"(b) {small['b_verify_step']['rate']} → {large['b_verify_step']['rate']} req/s; "
        f"provisioning {small['provisioning_s']} s and {large['provisioning_s']} s.\n"
    )
    return "\n".join(lines) + "\n" + rates


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
    }
    workdir = tempfile.mkdtemp(prefix="cloudmfa-bench-scale-")
    try:
        events_per_user = args.audit_events / args.users
        results["baseline"] = await measure(
            "baseline",
            args.baseline_users,
            int(args.baseline_users * events_per_user),
            args,
            workdir,
        )
        results["scaled"] = await measure("scaled", args.users, args.audit_events, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument(
        "--audit-events", type=int, default=None, help="default: 10 per user (10,000,000)"
    )
    parser.add_argument("--baseline-users", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=1_000, help="users signed in, per size")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of (a)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--admin-requests", type=int, default=200)
    parser.add_argument("--admin-concurrency", type=int, default=4)
    parser.add_argument(
        "--keep-databases",
        action="store_true",
        help="leave both databases for EXPLAIN; not dropped",
    )
    args = parser.parse_args()
    if args.audit_events is None:
        args.audit_events = 10 * args.users
    # The sample and the administrator are distinct users of the smaller database.
    args.sample = min(args.sample, args.baseline_users - 1, args.users - 1)
    results = uvloop.run(main_async(args))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S+0000")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scale-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (RESULTS / f"scale-{stamp}.md").write_text(
        f"# make bench-scale, {results['started_at']}\n\n{json.dumps(results['machine'])}\n\n"
        f"`{' '.join(sys.argv[1:]) or '(defaults)'}`\n\n{text}"
    )
    print(text)


if __name__ == "__main__":
    main()
