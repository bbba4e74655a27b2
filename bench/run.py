"""`make bench`: measure the login paths of a running `cloudmfa serve --workers 2` against their
ceilings, side by side on this machine, and write the results under bench/results/.

(a) the password step of login            vs (d) argon2id hashes/s on both cores
(b) the TOTP verify step alone            vs (e) a bare asyncpg UPDATE … RETURNING endpoint
(c) the full two-step login                  (f) (b)'s round trips and crypto, nothing else
(h) the verify step with a passkey assertion, each round right after (b)'s (bench/passkeys.py)
(g) POST /auth/challenge for an SMS factor: serve queues, `cloudmfa worker` sends through the
    `webhook` provider to a local receiver (bench/code_delivery.py); and in-process, to compare

Each of (a)–(c) runs on SQLite and on PostgreSQL, both with Redis (two workers need it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import asyncpg
import httpx
import pyotp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import code_delivery, floor_app, passkeys  # noqa: E402
from bench.loadgen import (  # noqa: E402
    LoadResult,
    PacedResult,
    Schedule,
    Send,
    percentile,
    run_load,
    run_paced,
    run_scenario,
)
from cloudmfa.config import Settings  # noqa: E402
from cloudmfa.factors.base import StoredFactor  # noqa: E402
from cloudmfa.flows import second_factor  # noqa: E402
from cloudmfa.security.passwords import IDLE_TRIM_S, PasswordHashing  # noqa: E402
from cloudmfa.services import Services  # noqa: E402
from cloudmfa.store import factors as factor_repo  # noqa: E402
from cloudmfa.store import users as user_repo  # noqa: E402
from cloudmfa.store.users import User  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Untimed load on each server before its first measurement: connection pools fill, statements
# get prepared, scripts loaded. Without it the first round ran up to a third slower.
WARMUP_S = 1.0
WARMUP_VERIFIES = 400  # (b) spends tokens, so its warm-up is counted in requests
PG_ADMIN_DSN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
PASSWORD = "bench-plum-orbit-velvet-canyon-42"
User4 = tuple[str, str, str, str]  # user id, email, TOTP factor id, TOTP secret
SECRET_KEYS = "bench:" + "QkVOQ0hCRU5DSEJFTkNIQkVOQ0hCRU5DSEJFTkNIQkU="


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# Issue 12: each server worker stays at or under this much resident memory under load.
WORKER_RSS_TARGET_MIB = 120


def worker_pids(server_pid: int) -> list[int]:
    """The worker processes of `cloudmfa serve`: uvicorn starts them as multiprocessing spawn
    children of the supervisor (its resource tracker, also a child, is not a worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        if parent == server_pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def resident_mib(pid: int) -> float:
    """VmRSS from /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def workers_rss(server: Server, workers: int = 2) -> list[float]:
    """Each worker's resident memory now, in MiB (with one worker, uvicorn serves in the
    server's own process)."""
    assert server.proc is not None
    pids = worker_pids(server.proc.pid) if workers > 1 else [server.proc.pid]
    if not pids:
        raise RuntimeError(f"no worker processes found under the server (pid {server.proc.pid})")
    return [resident_mib(pid) for pid in pids]


async def record_rss(measured: dict[str, Any], server: Server, workers: int = 2) -> None:
    """Each worker's resident memory after a measurement: as the load ends (a worker that has
    just hashed still holds argon2id's buffer) and once idle (``worker_rss_mib``, against the
    target), past the hashing pool's idle trim (security/passwords.py)."""
    measured["worker_rss_mib_at_end"] = workers_rss(server, workers)
    await asyncio.sleep(IDLE_TRIM_S + 0.5)
    measured["worker_rss_mib"] = workers_rss(server, workers)


# --- (d) the argon2id ceiling --------------------------------------------------------------


def _hash_for(seconds: float, params: dict[str, int], out: Any) -> None:
    hashing = PasswordHashing(
        time_cost=params["time_cost"],
        memory_kib=params["memory_kib"],
        parallelism=params["parallelism"],
    )
    stored = hashing.hash_sync(PASSWORD)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        hashing.verify_sync(stored, PASSWORD)
        count += 1
    out.put(count)


def argon2_ceiling(seconds: float, settings: Settings) -> dict[str, float]:
    """Verifications per second with the service's parameters, one process per core."""
    params = {
        "time_cost": settings.argon2_time_cost,
        "memory_kib": settings.argon2_memory_kib,
        "parallelism": settings.argon2_parallelism,
    }
    cores = os.cpu_count() or 1
    queue: Any = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_hash_for, args=(seconds, params, queue))
        for _ in range(cores)
    ]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return {"rate": total / seconds, "single_hash_ms": 1000 * seconds * cores / total}


# --- provisioning ---------------------------------------------------------------------------


async def provision(settings: Settings, count: int) -> list[User4]:
    """`count` users with an active TOTP factor, written straight through the stores (one
    password hash computed once: hashing each would only measure provisioning)."""
    svc = Services.build(settings)
    await svc.start(migrate=True)
    password_hash = await svc.hashing.hash(PASSWORD)
    now = svc.clock.now()
    users: list[User4] = []
    batch = 500
    try:
        for start in range(0, count, batch):
            async with svc.engine.begin() as conn:
                for i in range(start, min(count, start + batch)):
                    user_id, factor_id = str(uuid.uuid4()), str(uuid.uuid4())
                    email = f"bench-{i}-{secrets.token_hex(3)}@example.com"
                    secret = pyotp.random_base32(32)
                    await user_repo.insert_user(
                        conn, User(user_id, email, None, password_hash, (), None, now)
                    )
                    await factor_repo.insert_factor(
                        conn,
                        StoredFactor(
                            id=factor_id,
                            user_id=user_id,
                            type="totp",
                            label="bench",
                            status="active",
                            secret=svc.secretbox.encrypt(secret.encode(), context=factor_id),
                            data={"algorithm": "SHA1", "digits": 6, "period": 30},
                            lookup_key=None,
                            counter=None,
                            created_at=now,
                            activated_at=now,
                            last_used_at=None,
                        ),
                    )
                    users.append((user_id, email, factor_id, secret))
    finally:
        await svc.close()
    return users


async def prepare_mfa_tokens(settings: Settings, users: list[User4]) -> list[str]:
    """mfa_tokens as the password step would leave them, written into the shared Redis."""
    svc = Services.build(settings)
    try:
        tokens = []
        for user_id, email, _, _ in users:
            async with svc.reader.connect() as conn:
                account = await svc.factor_types.account_for_sign_in(conn, email)
            assert account is not None and account.user.id == user_id
            offer = svc.factor_types.second_step_of(account)
            started = await second_factor.begin(svc, user_id=user_id, email=email, offer=offer)
            tokens.append(started.mfa_token)
        return tokens
    finally:
        await svc.close()


# --- servers --------------------------------------------------------------------------------


def stop_gracefully(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, as an orchestrator stops a process; killed if it has not exited in 20 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class Server:
    def __init__(self, argv: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        self.argv, self.env, self.port, self.ready_path = argv, env, port, ready_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(
            prefix="cloudmfa-bench-", suffix=".log", delete=False
        )

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.env.get("BENCH_CWD"),
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log.name}")
            try:
                if (
                    httpx.get(
                        f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1
                    ).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become ready; see {self.log.name}")

    def __exit__(self, *_: object) -> None:
        stop_gracefully(self.proc)


def service_env(database_url: str, prefix: str, workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env.update(
        {
            "CLOUDMFA_DATABASE_URL": database_url,
            "CLOUDMFA_REDIS_URL": REDIS_URL,
            "CLOUDMFA_REDIS_KEY_PREFIX": prefix,
            "CLOUDMFA_SECRET_KEYS": SECRET_KEYS,
            "CLOUDMFA_MFA_POLICY": "optional",
            # The benchmark is one client address; the per-IP limit is still evaluated.
            "CLOUDMFA_IP_RATE_LIMIT": "100000000/minute",
            "CLOUDMFA_LOG_LEVEL": "warning",
            "CLOUDMFA_DATA_DIR": workdir,
            "BENCH_CWD": workdir,
        }
    )
    return env


def settings_from(env: dict[str, str]) -> Settings:
    values = {k[len("CLOUDMFA_") :].lower(): v for k, v in env.items() if k.startswith("CLOUDMFA_")}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]


# --- the measured scenarios -----------------------------------------------------------------


def summarise(result: LoadResult) -> dict[str, Any]:
    return {
        "requests": result.count,
        "seconds": round(result.elapsed_s, 3),
        "rate": round(result.rate, 1),
        "p50_ms": round(1000 * result.percentile(50), 2),
        "p99_ms": round(1000 * result.percentile(99), 2),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
    }


async def measure_password_step(
    port: int, pool: list[User4], seconds: float, args: argparse.Namespace
) -> LoadResult:
    bodies = [json.dumps({"email": u[1], "password": PASSWORD}).encode() for u in pool]
    return await run_load(
        host="127.0.0.1",
        port=port,
        make_request=lambda i: ("POST", "/api/v1/auth/login", bodies[i % len(bodies)]),
        duration_s=seconds,
        concurrency=args.concurrency,
    )


async def measure_totp_verify(
    port: int, pool: list[User4], settings: Settings, args: argparse.Namespace
) -> LoadResult:
    return await verify_load(port, pool, await prepare_mfa_tokens(settings, pool), args)


async def verify_load(
    port: int, pool: list[User4], tokens: list[str], args: argparse.Namespace
) -> LoadResult:
    """Each request spends a different user's mfa_token, so replay protection never bites."""
    totps = [pyotp.TOTP(u[3]) for u in pool]

    def verify_request(i: int) -> tuple[str, str, bytes]:
        body = {"mfa_token": tokens[i], "factor_id": pool[i][2], "code": totps[i].now()}
        return "POST", "/api/v1/auth/verify", json.dumps(body).encode()

    return await run_load(
        host="127.0.0.1",
        port=port,
        make_request=verify_request,
        total=len(tokens),
        concurrency=args.concurrency,
    )


async def measure_full_login(port: int, pool: list[User4], args: argparse.Namespace) -> LoadResult:
    async def full_login(i: int, send: Send) -> None:
        user = pool[i % len(pool)]
        login = json.dumps({"email": user[1], "password": PASSWORD}).encode()
        status, body = await send("POST", "/api/v1/auth/login", login)
        if status != 200:
            return
        verify = {
            "mfa_token": json.loads(body)["mfa_token"],
            "factor_id": user[2],
            "code": pyotp.TOTP(user[3]).now(),
        }
        await send("POST", "/api/v1/auth/verify", json.dumps(verify).encode())

    return await run_scenario(
        host="127.0.0.1",
        port=port,
        scenario=full_login,
        duration_s=args.duration,
        concurrency=args.concurrency,
    )


class Ceilings:
    """The lean servers of (e) and (f), started once and kept running (idle in between), so
    that each round can measure a ceiling right beside the service's measurement."""

    def __init__(self, database_url: str, args: argparse.Namespace) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.args = args
        self.rounds: dict[str, list[LoadResult]] = {"e": [], "e1": [], "f": []}
        self.hash_rates: list[float] = []
        self._servers: list[Server] = []
        self.ports: dict[str, int] = {}
        self._env = {
            **os.environ,
            "BENCH_PG_DSN": self.dsn,
            "BENCH_REDIS_URL": REDIS_URL,
            "PYTHONPATH": str(ROOT),
        }
        # Built before any clock starts, once: (e) and (e0) post a row id, (f) a row id and code.
        self._step_bodies = [json.dumps({"id": i}).encode() for i in range(args.users)]
        self._verify_bodies = [
            json.dumps({"id": i, "code": "123456"}).encode() for i in range(args.users)
        ]

    async def __aenter__(self) -> Ceilings:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "CREATE TABLE bench_steps (id int PRIMARY KEY, step bigint NOT NULL)"
            )
            await conn.execute(
                "INSERT INTO bench_steps SELECT g, 0 FROM generate_series(0, $1) g",
                self.args.users,
            )
        finally:
            await conn.close()
        await floor_app.create_tables(self.dsn, self.args.users)
        for key, target, reset in (
            ("e", "bench.lean_app:app", "on"),
            ("e1", "bench.lean_app:app", "off"),
            ("f", "bench.floor_app:app", "off"),
        ):
            if key[0] in self.args.only:
                port = free_port()
                env = {**self._env, "BENCH_POOL_RESET": reset}
                server = Server(_uvicorn_argv(target, port), env, port, "/")
                server.__enter__()
                self._servers.append(server)
                self.ports[key] = port
        for key in self.ports:
            await self._load_ceiling(key, WARMUP_S)
        return self

    async def __aexit__(self, *_: object) -> None:
        for server in self._servers:
            server.__exit__()

    def hashes(self, seconds: float) -> None:
        log(f"(d) argon2id ceiling, {seconds:g}s on every core")
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        self.hash_rates.append(argon2_ceiling(seconds, settings)["rate"])

    async def lean(self, seconds: float, keys: tuple[str, ...] = ("e", "e1", "f")) -> None:
        labels = {
            "e": "(e) lean UPDATE … RETURNING ceiling",
            "e1": "(e1) the same, no pool reset query",
            "f": "(f) the verify step's floor",
        }
        for key in keys:
            if key in self.ports:
                log(f"[postgres] {labels[key]}, {seconds:g}s")
                self.rounds[key].append(await self._load_ceiling(key, seconds))

    async def _load_ceiling(self, key: str, seconds: float) -> LoadResult:
        if key == "f":
            return await self._load(self.ports[key], "/verify", self._verify_bodies, seconds)
        return await self._load(self.ports[key], "/step", self._step_bodies, seconds)

    async def bare_asgi(self, seconds: float) -> dict[str, Any]:
        """(e0), for information: (e)'s endpoint as a bare ASGI callable, without the framework."""
        port = free_port()
        with Server(_uvicorn_argv("bench.lean_app:raw_app", port), self._env, port, "/"):
            await self._load(port, "/step", self._step_bodies, WARMUP_S)
            log(f"[postgres] (e0) the same endpoint as a bare ASGI callable, {seconds:g}s")
            return summarise(await self._load(port, "/step", self._step_bodies, seconds))

    async def _load(self, port: int, path: str, bodies: list[bytes], seconds: float) -> LoadResult:
        return await run_load(
            host="127.0.0.1",
            port=port,
            make_request=lambda i: ("POST", path, bodies[i % len(bodies)]),
            duration_s=seconds,
            concurrency=self.args.concurrency,
        )


async def measure_backend(
    name: str,
    database_url: str,
    workdir: str,
    args: argparse.Namespace,
    ceilings: Ceilings | None = None,
) -> dict[str, Any]:
    """(a)–(c) on one backend. With ``ceilings``, (a) and (b) run in ``args.rounds`` rounds,
    each right after a round of their ceilings (d) and (e), (f): this VM's speed drifts by tens
    of percent over minutes, so only ratios taken side by side mean anything."""
    prefix = f"bench-{secrets.token_hex(4)}:"
    port = free_port()
    env = service_env(database_url, prefix, workdir)
    # What serve would set itself from its port: the origin (h)'s assertions are signed for.
    env["CLOUDMFA_PUBLIC_URL"] = f"http://localhost:{port}"
    settings = settings_from(env)
    # A pool of users for each measurement asked for; (b) also spends some untimed first.
    sizes = {
        letter: args.users + (WARMUP_VERIFIES if letter == "b" else 0)
        for letter in "abc"
        if letter in args.only
    }
    log(f"[{name}] provisioning {sum(sizes.values())} users with TOTP")
    users = await provision(settings, sum(sizes.values()))
    passkey_users: list[tuple[str, ...]] = []
    if "h" in args.only:
        log(f"[{name}] provisioning {args.users + WARMUP_VERIFIES} users with a passkey")
        passkey_users = await passkeys.provision(settings, args.users + WARMUP_VERIFIES, PASSWORD)
    if ceilings is not None:
        await settle(ceilings.dsn)
    pools: dict[str, list[User4]] = {}
    for letter, size in sizes.items():
        pools[letter], users = users[:size], users[size:]
    rounds = args.rounds if ceilings else 1
    share = args.duration / rounds
    argv = [args.serve, "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(args.workers)]
    out: dict[str, Any] = {}
    with Server(argv, env, port, "/readyz") as server:
        if "a" in args.only:
            await measure_password_step(port, pools["a"], WARMUP_S, args)
            runs = []
            for _ in range(rounds):
                if ceilings and "d" in args.only:
                    ceilings.hashes(share)
                log(f"[{name}] (a) password step, {share:g}s at {args.concurrency} clients")
                runs.append(await measure_password_step(port, pools["a"], share, args))
            out["a_password_step"] = summarise_rounds(runs)
            await record_rss(out["a_password_step"], server, args.workers)
        h = PasskeyRounds(name, port, passkey_users, settings, args, rounds)
        if "h" in args.only:
            await h.warm_up()
        if "b" in args.only:
            warmup, pools["b"] = pools["b"][:WARMUP_VERIFIES], pools["b"][WARMUP_VERIFIES:]
            await measure_totp_verify(port, warmup, settings, args)
            runs = []
            chunk = len(pools["b"]) // rounds
            for r in range(rounds):
                users_b = pools["b"][r * chunk : (r + 1) * chunk]
                tokens = await prepare_mfa_tokens(settings, users_b)
                # (b) runs between (e) and (e1), so each is paired with a ceiling measured
                # right next to it; (f) follows.
                if ceilings:
                    await ceilings.lean(share, ("e",))
                log(f"[{name}] (b) TOTP verify step, {len(tokens)} prepared mfa_tokens")
                runs.append(await verify_load(port, users_b, tokens, args))
                if ceilings:
                    await ceilings.lean(share, ("e1", "f"))
                if "h" in args.only:
                    await h.round(r)  # in the same round as (b), after its ceilings
            out["b_totp_verify"] = summarise_rounds(runs)
            await record_rss(out["b_totp_verify"], server, args.workers)
        elif "h" in args.only:
            for r in range(rounds):
                await h.round(r)
        if h.runs:
            out["h_passkey_verify"] = summarise_rounds(h.runs)
            await record_rss(out["h_passkey_verify"], server, args.workers)
        if "c" in args.only:
            log(f"[{name}] (c) full two-step login, {args.duration}s at {args.concurrency} clients")
            out["c_full_login"] = summarise(await measure_full_login(port, pools["c"], args))
            await record_rss(out["c_full_login"], server, args.workers)
    return out


# --- (g) codes by SMS ------------------------------------------------------------------------

G_WARMUP = 200  # untimed challenges first: pools fill, the queue and the webhook connect
G_SETTLE_S = 15.0  # after the load, wait this long without a new arrival before giving up


class SmsReceiver(Server):
    """bench/sms_receiver.py under uvicorn, one process (its memory holds the arrivals)."""

    def __init__(self, secret: str) -> None:
        port = free_port()
        argv = _uvicorn_argv("bench.sms_receiver:app", port)
        argv[argv.index("--workers") + 1] = "1"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_SMS_SECRET": secret}
        super().__init__(argv, env, port, "/")
        self.url = f"http://127.0.0.1:{port}"

    def arrivals(self) -> tuple[list[tuple[float, str, str]], int]:
        answer = httpx.get(f"{self.url}/arrivals", timeout=30).json()
        return [tuple(a) for a in answer["arrivals"]], int(answer["refused"])

    def forget(self) -> None:
        httpx.delete(f"{self.url}/arrivals", timeout=30)

    async def wait_for(
        self, count: int, numbers: Collection[str]
    ) -> tuple[list[tuple[float, str, str]], int]:
        """Poll until messages to ``count`` of these ``numbers`` arrived, or none arrived for
        G_SETTLE_S. Only these numbers count: a message of an earlier load sent again (its
        record lost, its lease run out) must not end the wait early."""
        seen, still_since = -1, time.monotonic()
        while True:
            arrived, refused = await asyncio.to_thread(self.arrivals)
            reached = len({to for _, to, _ in arrived if to in numbers})
            if reached >= count:
                return arrived, refused
            if reached != seen:
                seen, still_since = reached, time.monotonic()
            elif time.monotonic() - still_since > G_SETTLE_S:
                log(f"(g) only {reached} of {count} messages arrived")
                return arrived, refused
            await asyncio.sleep(0.2)


async def measure_code_delivery(
    pg_url: str, workdir: str, args: argparse.Namespace
) -> dict[str, Any]:
    """(g) in worker mode (serve --workers 2 queues on Redis, one `cloudmfa worker` sends), then
    in-process mode (each serve worker sends what it committed), each on its own users: in each,
    first the rate the issue names (paced, open loop), then saturation (closed loop)."""
    out: dict[str, Any] = {}
    secret = secrets.token_urlsafe(32)
    with SmsReceiver(secret) as receiver:
        for mode in ("worker", "in-process"):
            runs = await _code_delivery_runs(pg_url, workdir, args, receiver, secret, mode)
            for load, run in runs.items():
                out[f"g_sms_{load}_{mode.replace('-', '_')}"] = run
    return out


async def _code_delivery_runs(
    pg_url: str,
    workdir: str,
    args: argparse.Namespace,
    receiver: SmsReceiver,
    secret: str,
    mode: str,
) -> dict[str, dict[str, Any]]:
    """One serve (and in worker mode one worker), warmed up, then the paced run and the closed
    loop on users of their own, each waited for until its last message arrived."""
    prefix = f"bench-{secrets.token_hex(4)}:"
    env = {
        **service_env(pg_url, prefix, workdir),
        **code_delivery.delivery_env(receiver.url, secret, mode),
    }
    settings = settings_from(env)
    paced = Schedule.of(args.g_rate, duration_s=args.duration).count
    count = G_WARMUP + paced + args.users
    log(f"[postgres] (g, {mode}) provisioning {count} users with an SMS factor")
    first = 0 if mode == "worker" else 10 * count  # numbers distinct across the two modes
    password_hash = await PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1).hash(
        PASSWORD
    )
    users = await code_delivery.provision(settings, count, first, password_hash)
    warmup, paced_users, closed_users = (
        users[:G_WARMUP],
        users[G_WARMUP : G_WARMUP + paced],
        users[G_WARMUP + paced :],
    )
    # The mfa_tokens before serve starts: made later, the bench's own pool came on top of
    # serve's and the worker's and PostgreSQL refused it (max_connections, 100).
    tokens = {
        "warm-up": await prepare_mfa_tokens(settings, warmup),
        "paced": await prepare_mfa_tokens(settings, paced_users),
        "closed": await prepare_mfa_tokens(settings, closed_users),
    }
    await settle(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    since = datetime.now(UTC)
    port = free_port()
    cloudmfa = args.serve
    serve_argv = [cloudmfa, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    runs: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as running:
        server = running.enter_context(Server(serve_argv, env, port, "/readyz"))
        worker = None
        if mode == "worker":
            worker = running.enter_context(DeliveryWorker([cloudmfa, "worker"], env))
        assert server.proc is not None
        pids = worker_pids(server.proc.pid), [worker.proc.pid] if worker and worker.proc else []
        receiver.forget()
        warm = ChallengeLoad(port, warmup, tokens["warm-up"])
        await warm.closed_loop(args.concurrency)
        await receiver.wait_for(len(warmup), {user[3] for user in warmup})
        for load, pool in (("paced", paced_users), ("closed", closed_users)):
            receiver.forget()
            challenges = ChallengeLoad(port, pool, tokens[load])
            what = f"{args.g_rate:g} requests/s offered" if load == "paced" else "closed loop"
            log(
                f"[postgres] (g, {mode}) SMS challenges, {what}, {args.duration:g}s "
                f"at {args.concurrency} clients"
            )
            cpu_before = cpu_seconds(pids[0]), cpu_seconds(pids[1])
            if load == "paced":
                result: LoadResult = await challenges.paced(args.g_rate, args.concurrency)
            else:
                result = await challenges.closed_loop(args.concurrency, args.duration)
            load_ended = time.monotonic()
            answered = result.statuses.get(202, 0)
            sent_at = challenges.sent_at(result)
            arrived, refused = await receiver.wait_for(answered, sent_at)
            cpu = cpu_seconds(pids[0]) - cpu_before[0], cpu_seconds(pids[1]) - cpu_before[1]
            figures = code_delivery.Arrivals(
                sent_at, answered, load_ended, arrived, refused
            ).figures()
            runs[load] = {
                **summarise(result),
                **figures,
                **(paced_figures(result) if isinstance(result, PacedResult) else {}),
                "mode": mode,
                "load": load,
                # CPU time per message, less sensitive to a busy machine than the rates:
                # serve's workers (the request, and in-process the send too) and `cloudmfa
                # worker`.
                "serve_cpu_ms_per_message": round(1000 * cpu[0] / max(answered, 1), 2),
                "worker_cpu_ms_per_message": round(1000 * cpu[1] / max(answered, 1), 2)
                if worker
                else None,
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
    # Once serve and the worker are gone: their pools (up to 80 connections) and one more may
    # pass PostgreSQL's default max_connections of 100.
    unsent = await outbox_not_sent(pg_url, since)
    for run in runs.values():
        run["outbox_not_sent"] = unsent  # both loads' rows together
    return runs


def paced_figures(result: PacedResult) -> dict[str, Any]:
    """Whether the load generator kept to the offered rate, and how late requests left."""
    return {
        "offered_rate": result.schedule.rate,
        "sent_rate": round(result.sent_rate, 1),
        "rate_kept": result.rate_kept,
        "send_lag_p99_ms": round(1000 * percentile(result.send_lags_s, 99), 1),
    }


async def outbox_not_sent(pg_url: str, since: datetime) -> list[dict[str, Any]]:
    """The outbox rows not sent when (g) stopped waiting, by status and tries (empty when every
    message went out): where a missing message is."""
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT status, attempts, count(*) AS n, min(next_try_at) AS next_try_at "
            "FROM delivery_outbox WHERE status <> 'sent' AND created_at >= $1 "
            "GROUP BY status, attempts",
            since,
        )
    finally:
        await conn.close()
    return [{**dict(r), "next_try_at": r["next_try_at"].isoformat()} for r in rows]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time used so far by these processes (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


class DeliveryWorker:
    """`cloudmfa worker`, ready once its log says it started."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self.log = tempfile.NamedTemporaryFile(
            prefix="cloudmfa-bench-worker-", suffix=".log", delete=False
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        env = {**self.env, "CLOUDMFA_LOG_LEVEL": "info"}
        self.proc = subprocess.Popen(
            self.argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=env.get("BENCH_CWD")
        )
        deadline = time.time() + 60
        while b"delivery worker started" not in Path(self.log.name).read_bytes():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the delivery worker did not start; see {self.log.name}")
            time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        stop_gracefully(self.proc)


class ChallengeLoad:
    """One SMS challenge per user (each its own mfa_token and number), closed loop or paced,
    remembering which number each request asked a code for."""

    def __init__(self, port: int, users: list[User4], tokens: list[str]) -> None:
        self.port, self.users = port, users
        self.bodies = [
            json.dumps({"mfa_token": token, "factor_id": user[2]}).encode()
            for user, token in zip(users, tokens, strict=True)
        ]
        self.left_at: dict[int, float] = {}  # request index → when it left (monotonic)

    async def _challenge(self, i: int, send: Send) -> None:
        self.left_at[i] = time.monotonic()
        await send("POST", "/api/v1/auth/challenge", self.bodies[i])

    async def closed_loop(self, concurrency: int, duration_s: float | None = None) -> LoadResult:
        return await run_scenario(
            host="127.0.0.1",
            port=self.port,
            scenario=self._challenge,
            total=len(self.bodies),
            duration_s=duration_s,
            concurrency=concurrency,
        )

    async def paced(self, rate: float, concurrency: int) -> PacedResult:
        return await run_paced(
            host="127.0.0.1",
            port=self.port,
            scenario=self._challenge,
            rate=rate,
            total=len(self.bodies),
            concurrency=concurrency,
        )

    def sent_at(self, result: LoadResult) -> dict[str, float]:
        """Each number's request time, for request → arrival: when it left in a closed loop,
        when it was due in a paced run (so a wait for a free connection counts there too)."""
        if isinstance(result, PacedResult):
            return {self.users[i][3]: result.due_at(i) for i in self.left_at}
        return {self.users[i][3]: at for i, at in self.left_at.items()}


class PasskeyRounds:
    """(h): as (b), with a WebAuthn assertion instead of a TOTP code (bench/passkeys.py); each
    round runs in one of (b)'s rounds, so that their ratio is taken side by side."""

    def __init__(
        self,
        name: str,
        port: int,
        users: list[tuple[str, ...]],
        settings: Settings,
        args: argparse.Namespace,
        rounds: int,
    ) -> None:
        self.name, self.port, self.settings, self.args = name, port, settings, args
        self.warmup, self.users = users[:WARMUP_VERIFIES], users[WARMUP_VERIFIES:]
        self.chunk = len(self.users) // rounds
        self.runs: list[LoadResult] = []

    async def warm_up(self) -> None:
        bodies = await passkeys.prepare_verifies(self.settings, self.warmup)
        await _load_bodies(self.port, bodies, self.args)

    async def round(self, r: int) -> None:
        pool = self.users[r * self.chunk : (r + 1) * self.chunk]
        bodies = await passkeys.prepare_verifies(self.settings, pool)
        log(f"[{self.name}] (h) passkey verify step, {len(bodies)} prepared assertions")
        self.runs.append(await _load_bodies(self.port, bodies, self.args))


async def _load_bodies(port: int, bodies: list[bytes], args: argparse.Namespace) -> LoadResult:
    return await run_load(
        host="127.0.0.1",
        port=port,
        make_request=lambda i: ("POST", "/api/v1/auth/verify", bodies[i]),
        total=len(bodies),
        concurrency=args.concurrency,
    )


def summarise_rounds(runs: list[LoadResult]) -> dict[str, Any]:
    """All rounds together, and each round's rate (the ratios pair them up)."""
    return {**summarise(LoadResult.merged(runs)), "round_rates": [round(r.rate, 1) for r in runs]}


def _uvicorn_argv(target: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


async def create_pg_database() -> tuple[str, str]:
    name = "cloudmfa_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, PG_ADMIN_DSN.rsplit("/", 1)[0].replace(
        "postgresql://", "postgresql+asyncpg://"
    ) + "/" + name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def settle(dsn: str) -> None:
    """After provisioning: analyse the new rows and write the dirty pages out now, so that no
    autovacuum or checkpoint triggered by the bulk load lands in the middle of a measurement."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def ratio(part: float, whole: float) -> float:
    return round(100 * part / whole, 1) if whole else float("nan")


def paired_ratios(parts: list[float], wholes: list[float]) -> list[float]:
    return [ratio(p, w) for p, w in zip(parts, wholes, strict=False)]


def table(results: dict[str, Any]) -> str:
    d = results.get("d_argon2_ceiling", {}).get("rate", 0.0)
    e = results.get("e_lean_ceiling", {}).get("rate", 0.0)
    pairs = results.get("pairs", {})
    names = {
        "a_password_step": ("(a) password step", d, "(d)", "a/d"),
        "b_totp_verify": ("(b) TOTP verify step", e, "(e)", "b/e"),
        "c_full_login": ("(c) full two-step login", 0.0, "", ""),
        "h_passkey_verify": ("(h) passkey verify step", 0.0, "", ""),
    }
    offered = results.get("g_rate", code_delivery.DELIVERY_RATE_TARGET)
    for mode, sender in (("worker", "`cloudmfa worker` sends"), ("in_process", "serve sends")):
        for load, how in (("paced", f"{offered:g}/s offered"), ("closed", "closed loop")):
            names[f"g_sms_{load}_{mode}"] = (f"(g) SMS challenge, {how}, {sender}", 0.0, "", "")
    lines = [
        f"cloudmfa benchmark, {results['started_at']}, {results['machine']['cpus']} cores "
        f"({results['machine']['cpu_model']}), {results['concurrency']} concurrent clients, "
        f"{results['rounds']} rounds, serve --workers {results.get('workers', 2)}",
        "",
        "| backend | measurement | req/s | p50 ms | p99 ms | of ceiling "
        "| worker RSS MiB once idle (as the load ended) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, runs in results["backends"].items():
        for key, run in runs.items():
            label, ceiling, ceiling_name, pair = names[key]
            failed = {code: n for code, n in run["statuses"].items() if not code.startswith("2")}
            if failed:  # a measurement of refusals measures nothing the target is about
                label += f" **(not all answered 2xx: {failed})**"
            share = ""
            if backend == "postgres+redis" and pairs.get(pair):
                share = f"{round(statistics.median(pairs[pair]), 1)} % of {ceiling_name} (median)"
            elif ceiling:
                share = f"{ratio(run['rate'], ceiling)} % of {ceiling_name}"
            rss = ", ".join(f"{mib:g}" for mib in run.get("worker_rss_mib", []))
            if run.get("worker_rss_mib_at_end"):
                rss += " (" + ", ".join(f"{mib:g}" for mib in run["worker_rss_mib_at_end"]) + ")"
            lines.append(
                f"| {backend} | {label} | {run['rate']} | {run['p50_ms']} | {run['p99_ms']} "
                f"| {share} | {rss} |"
            )
    if "d_argon2_ceiling" in results:
        dd = results["d_argon2_ceiling"]
        lines.append(
            f"| — | (d) argon2id verifications/s, all cores | {round(dd['rate'], 1)} | "
            f"{round(dd['single_hash_ms'], 1)} (one hash) | | | |"
        )

    def median_of(pair: str, text: str) -> str:
        return text.format(round(statistics.median(pairs[pair]), 1)) if pairs.get(pair) else ""

    ceiling_rows = (
        ("e_lean_ceiling", "postgres", "(e) asyncpg UPDATE … RETURNING, FastAPI endpoint", ""),
        (
            "e1_no_pool_reset",
            "postgres",
            "(e1) the same, no pool reset query (one statement)",
            median_of("b/e1", "(b) is {} % of it (median)"),
        ),
        ("e0_bare_asgi", "postgres", "(e0) the same as a bare ASGI callable", ""),
        (
            "f_verify_floor",
            "postgres+redis",
            "(f) (b)'s round trips and crypto alone, FastAPI endpoint",
            median_of("f/e", "{} % of (e) (median)"),
        ),
    )
    for key, backend, label, share in ceiling_rows:
        if key in results:
            run = results[key]
            lines.append(
                f"| {backend} | {label} | {run['rate']} | {run['p50_ms']} | {run['p99_ms']} "
                f"| {share} | |"
            )
    lines.append("")
    lines.extend(code_delivery_table(results))
    largest = max(
        (
            mib
            for runs in results["backends"].values()
            for run in runs.values()
            for mib in run.get("worker_rss_mib", [])
        ),
        default=None,
    )
    if largest is not None:
        verdict = "within" if largest <= WORKER_RSS_TARGET_MIB else "OVER"
        lines.append(
            f"Largest worker RSS once idle after a measurement: {largest:g} MiB, {verdict} the "
            f"target of {WORKER_RSS_TARGET_MIB} MiB per worker."
        )
    if pairs:
        lines.append(
            "Ratios round by round (%): "
            + "; ".join(f"{name} {values}" for name, values in pairs.items() if values)
        )
    lines.append(
        "Statuses: "
        + "; ".join(
            f"{backend} {key}: {run['statuses']}"
            for backend, runs in results["backends"].items()
            for key, run in runs.items()
        )
    )
    return "\n".join(lines)


def code_delivery_table(results: dict[str, Any]) -> list[str]:
    """(g)'s delivery figures, one row per mode and load, and the targets of issue 13 part 7."""
    runs = {
        key: run
        for key, run in results["backends"].get("postgres+redis", {}).items()
        if key.startswith("g_")
    }
    if not runs:
        return []
    lines = [
        "(g) delivery: the load (paced: the offered rate, the rate the requests left at and "
        "whether it was kept; closed: 32 clients, each sending when answered), requests "
        "answered 202, messages that arrived at the receiver, the rate from the first request "
        "to the last arrival, the rate while the load ran, the backlog when it stopped and the "
        "rate it drained at, and the time from request (paced: its due time) to arrival:",
        "",
        "| mode | load | req/s | request p50, p99 ms | 202 | arrived | msg/s overall "
        "| msg/s under load | backlog | drain msg/s | arrival p50, p99 ms "
        "| CPU ms/msg serve, worker | targets |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in runs.values():
        load = "closed loop"
        if run["load"] == "paced":
            kept = "kept" if run["rate_kept"] else "NOT kept"
            load = f"{run['offered_rate']:g}/s offered, left at {run['sent_rate']:g}/s ({kept})"
        lines.append(
            f"| {run['mode']} | {load} | {run['rate']} | {run['p50_ms']}, {run['p99_ms']} "
            f"| {run['answered_202']} | {run['arrived']} | {run['delivery_rate']} "
            f"| {run['rate_during_load']} | {run['backlog_at_load_end']} "
            f"| {run['drain_rate'] or '—'} | {run['arrival_p50_ms']}, {run['arrival_p99_ms']} "
            f"| {run['serve_cpu_ms_per_message']}, {run['worker_cpu_ms_per_message'] or '—'} "
            f"| {code_delivery.verdicts(run)} |"
        )
    lines.append("")
    return lines


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "users_per_pool": args.users,
        "g_rate": args.g_rate,
        "serve": args.serve,
        "workers": args.workers,
        "backends": {},
    }
    workdir = tempfile.mkdtemp(prefix="cloudmfa-bench-")
    pg_name, pg_url = await create_pg_database()
    share = args.duration / args.rounds
    try:
        async with Ceilings(pg_url, args) as ceilings:
            if "sqlite" in args.backends and set("abch") & set(args.only):
                results["backends"]["sqlite+redis"] = await measure_backend(
                    "sqlite", f"sqlite+aiosqlite:///{workdir}/bench.db", workdir, args
                )
            if "postgres" in args.backends and set("abch") & set(args.only):
                results["backends"]["postgres+redis"] = await measure_backend(
                    "postgres", pg_url, workdir, args, ceilings
                )
            # Ceilings with nothing to pair with (their service measurement not asked for).
            if "d" in args.only and not ceilings.hash_rates:
                for _ in range(args.rounds):
                    ceilings.hashes(share)
            if ceilings.ports and not any(ceilings.rounds.values()):
                for _ in range(args.rounds):
                    await ceilings.lean(share)
            if "e" in args.only:
                results["e0_bare_asgi"] = await ceilings.bare_asgi(args.duration)
        # Once the ceilings' servers and their pools are gone: beside serve's and the worker's,
        # they took PostgreSQL past max_connections (100), and (g) measured the refusals.
        if "postgres" in args.backends and "g" in args.only:
            results["backends"].setdefault("postgres+redis", {}).update(
                await measure_code_delivery(pg_url, workdir, args)
            )
    finally:
        await drop_pg_database(pg_name)
        shutil.rmtree(workdir, ignore_errors=True)
    cores = os.cpu_count() or 1
    if ceilings.hash_rates:
        rate = statistics.fmean(ceilings.hash_rates)
        results["d_argon2_ceiling"] = {
            "rate": rate,
            "single_hash_ms": 1000 * cores / rate,
            "round_rates": [round(r, 1) for r in ceilings.hash_rates],
        }
    for key, name in (("e", "e_lean_ceiling"), ("e1", "e1_no_pool_reset"), ("f", "f_verify_floor")):
        if ceilings.rounds[key]:
            results[name] = summarise_rounds(ceilings.rounds[key])
    results["pairs"] = _pairs(results)
    return results


def _pairs(results: dict[str, Any]) -> dict[str, list[float]]:
    """Each round's ratio of a measurement to the ceiling measured right before it."""
    pg = results["backends"].get("postgres+redis", {})
    rates = {
        "a": pg.get("a_password_step", {}).get("round_rates", []),
        "b": pg.get("b_totp_verify", {}).get("round_rates", []),
        "d": results.get("d_argon2_ceiling", {}).get("round_rates", []),
        "e": results.get("e_lean_ceiling", {}).get("round_rates", []),
        "e1": results.get("e1_no_pool_reset", {}).get("round_rates", []),
        "f": results.get("f_verify_floor", {}).get("round_rates", []),
        "h": pg.get("h_passkey_verify", {}).get("round_rates", []),
    }
    return {
        "a/d": paired_ratios(rates["a"], rates["d"]),
        "b/e": paired_ratios(rates["b"], rates["e"]),
        "b/e1": paired_ratios(rates["b"], rates["e1"]),
        "f/e": paired_ratios(rates["f"], rates["e"]),
        "b/f": paired_ratios(rates["b"], rates["f"]),
        # A passkey's verify step against TOTP's: it should cost at most a quarter more
        # (h/b at least 80 %).
        "h/b": paired_ratios(rates["h"], rates["b"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=6000, help="users per pool (three pools)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--only", default="abcdefgh", help="measurements to run (letters a-h)")
    parser.add_argument(
        "--g-rate",
        type=float,
        default=code_delivery.DELIVERY_RATE_TARGET,
        help="(g)'s paced run: SMS challenges offered per second, for --duration seconds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="(a) and (b) alternate with their ceilings this many times on PostgreSQL",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="serve's workers for (a), (b), (c) and (h) ((g) always runs two)",
    )
    parser.add_argument(
        "--serve",
        default=str(Path(sys.executable).with_name("cloudmfa")),
        help="the cloudmfa command to start and measure (default: this install's); `make "
        "bench` gives it the runtime-only install, as `make run` and the container have it",
    )
    args = parser.parse_args()
    args.serve = str(Path(args.serve).absolute())  # servers start in a directory of their own
    uvloop.install()
    results = asyncio.run(main_async(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("-", "")
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / f"{stamp}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
