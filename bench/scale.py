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

from bench.loadgen import collector_frozen  # noqa: E402
from bench.run import (  # noqa: E402
    PASSWORD,
    Server,
    User4,
    cpu_seconds,
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
    worker_pids,
)
from cloudmfa.services import Services  # noqa: E402
from cloudmfa.store import audit_chain  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH = 50_000
RECOVERY_CODES = 10
AUDIT_TYPES = ("auth.login", "auth.mfa_verified", "token.refreshed", "auth.logout", "factor.added")
ADMIN_SEARCH_P99_TARGET_MS = 200
WARMUP_SEARCHES = 16  # untimed requests of each search before it is measured
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


class CpuMeter:
    """CPU time (/proc/<pid>/stat) of serve's workers and of the database's client backends
    (serve's pooled connections; one that opens during a batch counts whole). Per request it is
    the figure the machine's other load moves least (latency on 2 shared cores moves with
    whatever else runs). Parallel query workers are not counted: they live for one statement."""

    def __init__(self, server_pid: int, database_url: str) -> None:
        self.server_pid, self.dsn = server_pid, _dsn(database_url)
        self.conn: asyncpg.Connection | None = None

    async def snapshot(self) -> dict[int, float]:
        if self.conn is None:
            self.conn = await asyncpg.connect(self.dsn)
        backends = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        seconds = {}
        for pid in [*worker_pids(self.server_pid), *(row["pid"] for row in backends)]:
            try:
                seconds[pid] = cpu_seconds([pid])
            except OSError:  # it ended meanwhile
                pass
        return seconds

    @staticmethod
    def spent_since(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def admin_clients(base: str, token: str, count: int) -> list[httpx.AsyncClient]:
    """The administrator's clients, made before anything is timed and kept for every batch:
    making one costs ~45 ms of the load generator's loop (httpx builds its TLS context), and
    clients made while another's request was in flight put that time into the first requests
    of every batch."""
    headers = {"Authorization": f"Bearer {token}"}
    return [httpx.AsyncClient(base_url=base, timeout=30, headers=headers) for _ in range(count)]


async def timed_gets(
    clients: list[httpx.AsyncClient], paths: list[str], *, meter: CpuMeter | None = None
) -> dict[str, Any]:
    """Each path once (in order per client), one request at a time per client; latencies,
    and with a meter the CPU time per request."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    queue = list(reversed(paths))

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue:
            path = queue.pop()
            t0 = time.perf_counter()
            r = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

    cpu_before = await meter.snapshot() if meter else {}
    with collector_frozen():
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for client in clients))
        elapsed = time.perf_counter() - started
    cpu_after = await meter.snapshot() if meter else {}
    cpu = CpuMeter.spent_since(cpu_before, cpu_after)
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(1000 * latencies[-1], 2),
        "statuses": statuses,
        **({"cpu_ms_per_request": per_request(cpu, len(latencies))} if meter else {}),
    }


async def audit_pages(client: httpx.AsyncClient, query: str, pages: int) -> list[str]:
    """The paths of `pages` consecutive pages, following next_cursor."""
    paths = []
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
        with Server(argv, env, port, "/readyz") as server:
            base = f"http://127.0.0.1:{port}"
            assert server.proc is not None
            meter = CpuMeter(server.proc.pid, url)
            try:
                result.update(await sign_in_steps(label, port, data.sample, env, args, meter))
                token = await admin_token(base, data.admin)
                someone = random.choice(data.sample)
                result.update(
                    await admin_reads(base, token, users, (someone[0], someone[1]), args, meter)
                )
            finally:
                await meter.close()
        return result
    finally:
        if args.keep_databases:
            log(f"{label}: kept database {name} ({url}); drop it when done")
        else:
            await drop_pg_database(name)


async def sign_in_steps(
    label: str,
    port: int,
    pool: list[User4],
    env: dict[str, str],
    args: argparse.Namespace,
    meter: CpuMeter,
) -> dict[str, Any]:
    """(a) and (b) for the sampled users, each with the CPU it cost per request (serve's
    workers and the database's backends): the figure that tells a slower statement from a
    busier machine."""
    log(f"{label}: (a) password step")
    await measure_password_step(port, pool, 1.0, args)  # warm-up, untimed
    before = await meter.snapshot()
    a = await measure_password_step(port, pool, args.duration, args)
    a_cpu = meter.spent_since(before, await meter.snapshot())
    log(f"{label}: (b) verify step")
    tokens = await prepare_mfa_tokens(settings_from(env), pool)
    before = await meter.snapshot()
    b = await verify_load(port, pool, tokens, args)
    b_cpu = meter.spent_since(before, await meter.snapshot())
    return {
        "a_password_step": {**summarise(a), "cpu_ms_per_request": per_request(a_cpu, a.count)},
        "b_verify_step": {**summarise(b), "cpu_ms_per_request": per_request(b_cpu, b.count)},
    }


def per_request(cpu_s: float, requests: int) -> float:
    return round(1000 * cpu_s / max(requests, 1), 2)


async def admin_reads(
    base: str,
    token: str,
    users: int,
    someone: tuple[str, str],
    args: argparse.Namespace,
    meter: CpuMeter,
) -> dict[str, Any]:
    """(g) and (h) as the administrator whose access token is `token`; `someone` is an
    account's (id, email)."""
    searches = {
        "rare (one user's address)": someone[1].split("@")[0],
        "missing": "nobody-at-all",
        "common (every address)": "example.com",
        "a display name": display_name_substring(users),
        "from half way (a tenth of the addresses)": tenth_from(users // 2, users),
        "late (the last tenth of the addresses)": late_substring(users),
    }
    result: dict[str, Any] = {"g_admin_search": {}, "h_audit_paging": {}}
    clients = admin_clients(base, token, args.admin_concurrency)
    try:
        for what, query in searches.items():
            log(f"  (g) /admin/users?query={query}: {what}")
            paths = [f"/api/v1/admin/users?query={query}&limit=50"] * args.admin_requests
            # Untimed first: both workers' pools filled and the statements prepared, as every
            # measurement of bench/run.py starts (a server just started answered its first
            # searches in up to 320 ms, four to six times its median).
            await timed_gets(clients, paths[:WARMUP_SEARCHES])
            result["g_admin_search"][what] = await timed_gets(clients, paths, meter=meter)
        for what, query in {
            "all events": "",
            "one type": "&type=token.refreshed",
            "one user": f"&user_id={someone[0]}",
        }.items():
            log(f"  (h) /admin/audit paging, {what}")
            paths = await audit_pages(clients[0], query, 21)
            result["h_audit_paging"][what] = await timed_gets(
                clients, paths * max(1, args.admin_requests // len(paths)), meter=meter
            )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return result


async def measure_kept(url: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """(a), (b), (g) and (h) on a database an earlier run kept (--keep-databases), as it
    stands: no provisioning. The sampled users are `--sample` accounts drawn at random, the
    administrator the account with the admin role; their TOTP seeds are decrypted under the
    bench key ring that encrypted them. The rare search is the address in the middle of the
    email order, so that runs on copies of one database ask the same."""
    env = service_env(url, f"cloudmfa-bench-scale-{secrets.token_hex(4)}:", workdir)
    env["CLOUDMFA_AUTO_MIGRATE"] = "false"
    svc = Services.build(settings_from(env))
    conn = await asyncpg.connect(_dsn(url))
    try:
        users = await conn.fetchval("SELECT count(*) FROM users")
        with_seed = (
            "SELECT u.id, u.email, f.id AS factor_id, f.secret FROM users u "
            "JOIN factors f ON f.user_id = u.id AND f.type = 'totp' AND f.status = 'active' "
        )
        row = await conn.fetchrow(with_seed + "WHERE u.roles::text LIKE '%\"admin\"%' LIMIT 1")
        sampled = await conn.fetch(
            with_seed + "WHERE u.roles::text NOT LIKE '%\"admin\"%' ORDER BY random() LIMIT $1",
            args.sample,
        )
        middle = await conn.fetchrow(
            "SELECT id, email FROM users ORDER BY email OFFSET $1 LIMIT 1", users // 2
        )
        revision = await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
        await svc.close()

    def with_plain_seed(row: asyncpg.Record) -> User4:
        seed = svc.secretbox.decrypt(row["secret"], context=row["factor_id"]).decode()
        return (row["id"], row["email"], row["factor_id"], seed)

    admin, pool = with_plain_seed(row), [with_plain_seed(r) for r in sampled]
    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("cloudmfa")),
        *("serve", "--port", str(port), "--workers", "2"),
    ]
    result: dict[str, Any] = {"users": users, "schema_revision": revision}
    log(f"kept database: {users:,} users, schema {revision}")
    with Server(argv, env, port, "/readyz") as server:
        base = f"http://127.0.0.1:{port}"
        token = await admin_token(base, admin)
        assert server.proc is not None
        meter = CpuMeter(server.proc.pid, url)
        try:
            result.update(await sign_in_steps("kept database", port, pool, env, args, meter))
            someone = (middle["id"], middle["email"])
            result.update(await admin_reads(base, token, users, someone, args, meter))
        finally:
            await meter.close()
    return result


def kept_table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['users']:,} users, schema {result['schema_revision']}\n",
        "| measurement | requests | p50 (ms) | p99 (ms) | max (ms) | CPU per request (ms) "
        "| target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for step in ("a_password_step", "b_verify_step"):
        m = result[step]
        lines.append(
            f"| ({step[0]}) {step[2:].replace('_', ' ')}, {m['rate']} req/s | {m['requests']} "
            f"| {m['p50_ms']} | {m['p99_ms']} | | {m['cpu_ms_per_request']} | |"
        )
    for part, target in (("g_admin_search", "p99 ≤ 200 ms"), ("h_audit_paging", "")):
        for what, m in result[part].items():
            name = f"({part[0]}) {what}"
            lines.append(
                f"| {name} | {m['requests']} | {m['p50_ms']} | {m['p99_ms']} | {m['max_ms']} "
                f"| {m['cpu_ms_per_request']} | {target} |"
            )
    return "\n".join(lines) + "\n"


def tenth_from(first: int, users: int) -> str:
    """A substring that the tenth of the addresses from the `first`th share (`bench-05` at
    1,000,000 users: bench-0500000… to bench-0599999…)."""
    block = max(0, len(str(max(1, users // 10))) - 1)  # trailing digits left free
    return "bench-" + f"{first:07d}"[: 7 - block]


def display_name_substring(users: int) -> str:
    """A substring of a hundred-odd display names (`user 5123` at 1,000,000 users: Bench User
    5123, 51230…51239, 512300…512399)."""
    return "user " + str(users * 5123 // 10_000)[:4]


def late_substring(users: int) -> str:
    """A substring that about a tenth of the addresses share, all of them sorting last
    (`bench-09` at 1,000,000 users: bench-0900000… to bench-0999999…): the search that once
    walked the email index past nine tenths of the accounts to fill its page."""
    return tenth_from(users - users // 10, users)


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
    a, b = (small["a_password_step"], large["a_password_step"])
    c, d = (small["b_verify_step"], large["b_verify_step"])
    rates = (
        f"\n(a) {a['rate']} → {b['rate']} req/s, CPU per request {a['cpu_ms_per_request']} → "
        f"{b['cpu_ms_per_request']} ms; (b) {c['rate']} → {d['rate']} req/s, CPU per request "
        f"{c['cpu_ms_per_request']} → {d['cpu_ms_per_request']} ms; provisioning "
        f"{small['provisioning_s']} s and {large['provisioning_s']} s.\n"
    )
    return "\n".join(lines) + "\n" + rates


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
    }
    workdir = tempfile.mkdtemp(prefix="cloudmfa-bench-scale-")
    if args.reuse_database:
        try:
            results["kept"] = await measure_kept(args.reuse_database, args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return results
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
    parser.add_argument(
        "--reuse-database",
        metavar="URL",
        help="measure on a database kept by an earlier --keep-databases run "
        "(postgresql+asyncpg://…), as it stands: no provisioning, no baseline",
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
    text = kept_table(results["kept"]) if args.reuse_database else table(results)
    (RESULTS / f"scale-{stamp}.md").write_text(
        f"# make bench-scale, {results['started_at']}\n\n{json.dumps(results['machine'])}\n\n"
        f"`{' '.join(sys.argv[1:]) or '(defaults)'}`\n\n{text}"
    )
    print(text)


if __name__ == "__main__":
    main()
