"""What the audit trail's hash chain costs the full two-step login, on PostgreSQL + Redis.

    .venv/bin/python bench/audit_chain.py [--duration 10] [--rounds 3] [--interval 1]

`cloudmfa serve --workers 2` runs the full login (password, then TOTP; bench/run.py's (c)) at
32 clients, alternately with the chain's sealer off (`CLOUDMFA_AUDIT_SEAL_INTERVAL_S=0`: events
are inserted exactly as before, nothing chains them) and on (every `--interval` s in each
worker), one round of each side by side, `--rounds` times: this VM's speed drifts too much for
runs minutes apart to compare. The sign-in path itself is the same either way (it only inserts
its events); what differs is the sealers' work beside it. After the last round with the sealer
on, `cloudmfa audit verify` must find the chain whole, and the report says how many events were
left to seal when the load stopped (the sealer's lag).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (  # noqa: E402
    PG_ADMIN_DSN,
    Server,
    drop_pg_database,
    free_port,
    log,
    measure_full_login,
    provision,
    service_env,
    settings_from,
    summarise,
)


async def unsealed(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit_events WHERE chain_seq IS NULL"))
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    name = "trail_chain_bench_" + secrets.token_hex(4)  # a name no other bench cleans up
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url += "/" + name
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    workdir = tempfile.mkdtemp(prefix="cloudmfa-bench-chain-")
    cloudmfa = str(Path(sys.executable).with_name("cloudmfa"))
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    lag: list[int] = []
    try:
        env = service_env(url, "bench-chain:", workdir)
        # Enough users that none signs in twice within one TOTP step (a code is accepted once).
        per_run = int(args.duration * args.users_per_second)
        log(f"provisioning {per_run * args.rounds * 2} users with TOTP")
        users = await provision(settings_from(env), per_run * args.rounds * 2)
        for round_ in range(args.rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                env["CLOUDMFA_AUDIT_SEAL_INTERVAL_S"] = "0" if mode == "off" else str(args.interval)
                pool, users = users[:per_run], users[per_run:]
                port = free_port()
                argv = [cloudmfa, "serve", "--host", "127.0.0.1", "--port", str(port)]
                with Server([*argv, "--workers", "2"], env, port, "/readyz"):
                    log(f"round {round_ + 1}, sealer {mode}: full login for {args.duration}s")
                    run = summarise(await measure_full_login(port, pool, args))
                    if mode == "on":
                        lag.append(await unsealed(dsn))
                results[mode].append(run)
                log(f"  {run['rate']:.0f} logins/s, p50 {run['p50_ms']:.1f} ms")
        verify = await asyncio.to_thread(
            subprocess.run,
            [cloudmfa, "audit", "verify"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        await drop_pg_database(name)
    off = [r["rate"] for r in results["off"]]
    on = [r["rate"] for r in results["on"]]
    return {
        "duration_s": args.duration,
        "seal_interval_s": args.interval,
        "off_rps": off,
        "on_rps": on,
        "off_p50_ms": [r["p50_ms"] for r in results["off"]],
        "on_p50_ms": [r["p50_ms"] for r in results["on"]],
        "off_p99_ms": [r["p99_ms"] for r in results["off"]],
        "on_p99_ms": [r["p99_ms"] for r in results["on"]],
        "median_change_pct": round(
            statistics.median(100 * (b - a) / a for a, b in zip(off, on, strict=True)), 1
        ),
        "unsealed_when_load_stopped": lag,
        "verify_exit": verify.returncode,
        "verify_output": (verify.stdout or verify.stderr).strip(),
    }


async def seal_cost(events: int) -> dict[str, Any]:
    """What chaining costs by itself: ``events`` events written (as sign-ins write them), then
    sealed in one `seal_pending`, timed, on a PostgreSQL database of its own."""
    import time

    from cloudmfa.flows.audit_chain import seal_pending, verify
    from cloudmfa.store.audit import AuditEvent, record
    from cloudmfa.store.db import create_engine
    from cloudmfa.store.migrate import upgrade_to_head

    name = "trail_seal_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    engine = create_engine(f"{url}/{name}", pool_size=2)
    try:
        await upgrade_to_head(engine)
        from datetime import UTC, datetime

        event = AuditEvent(
            type="login.succeeded",
            subject_id="00000000-0000-0000-0000-000000000000",
            ip="203.0.113.7",
            user_agent="bench",
            details={"amr": ["pwd", "otp", "mfa"], "session_id": "s" * 36},
        )
        for start in range(0, events, 500):
            async with engine.begin() as conn:
                await record(conn, datetime.now(UTC), *([event] * min(500, events - start)))
        began_cpu, began = time.process_time(), time.perf_counter()
        sealed = await seal_pending(engine)
        wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
        began = time.perf_counter()
        verdict = await verify(engine)
        return {
            "events": sealed,
            "seal_wall_ms": round(1000 * wall, 1),
            "seal_cpu_ms": round(1000 * cpu, 1),
            "seal_us_per_event": round(1e6 * wall / sealed, 1),
            "verify_wall_ms": round(1000 * (time.perf_counter() - began), 1),
            "whole": verdict.whole,
        }
    finally:
        await engine.dispose()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=int, default=1, help="the sealer's interval, s")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--users-per-second",
        type=int,
        default=200,
        help="users provisioned per second of each run (more than the logins/s reached)",
    )
    parser.add_argument(
        "--seal-only",
        type=int,
        metavar="N",
        help="instead: time sealing N events by itself (no server, no load)",
    )
    args = parser.parse_args()
    if args.seal_only:
        print(json.dumps(uvloop.run(seal_cost(args.seal_only)), indent=2))
        return
    print(json.dumps(uvloop.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
