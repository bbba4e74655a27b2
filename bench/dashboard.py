"""Draw docs/dashboard.png: the Grafana dashboard (deploy/grafana/cloudmfa.json) rendered from a
real run, offline.

    .venv/bin/pip install -e '.[dashboard]'      # matplotlib
    .venv/bin/python bench/dashboard.py [--duration 40] [--out docs/dashboard.png]

It starts `cloudmfa serve --workers 2` on PostgreSQL and Redis with a metrics token, provisions
users with TOTP, and drives a mixed load for `--duration` seconds (full two-step sign-ins, wrong
passwords, unknown accounts, wrong codes, an account hammered into its limit, recovery codes,
the docs pages) while scraping `/metrics` every `--every` seconds, as Prometheus would. Then it
reads the dashboard's panels and draws each from the scrapes: every target's PromQL expression
is evaluated here (the few forms the dashboard uses: `sum by (…) (rate(m[$__rate_interval]))`,
`histogram_quantile(q, sum by (le, …) (rate(m_bucket[…])))`, `sum by (…) (g)`, `sum(g)`), with
`$__rate_interval` taken as `--window` seconds. No Grafana, no Prometheus: a faithful drawing
of the same queries over the same kind of data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pyotp
import uvloop
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import Send, run_scenario  # noqa: E402
from bench.run import (  # noqa: E402
    PASSWORD,
    PG_ADMIN_DSN,
    Server,
    free_port,
    log,
    provision,
    service_env,
    settings_from,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "cloudmfa.json"
TOKEN = secrets.token_urlsafe(24)

Sample = tuple[str, tuple[tuple[str, str], ...], float]
Scrape = tuple[float, list[Sample]]


# --- the run ---------------------------------------------------------------------------------


async def scrape_every(port: int, every_s: float, stop: asyncio.Event) -> list[Scrape]:
    scrapes: list[Scrape] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while not stop.is_set():
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            r.raise_for_status()
            samples = [
                (s.name, tuple(sorted(s.labels.items())), s.value)
                for family in text_string_to_metric_families(r.text)
                for s in family.samples
            ]
            scrapes.append((time.monotonic(), samples))
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except TimeoutError:
                pass
    return scrapes


async def drive(port: int, users: list[Any], args: argparse.Namespace) -> None:
    """A mix of what a service meets: mostly good sign-ins, some mistakes, a hammered account."""
    hammered = users[0]
    spent: set[tuple[str, int]] = set()  # (user, TOTP step): a code is accepted once

    async def one(i: int, send: Send) -> None:
        kind = i % 20
        user = users[1 + (i * 7919) % (len(users) - 1)]
        if kind == 0:
            await send("GET", ("/docs", "/openapi.json")[(i // 20) % 2], b"")
            return
        if kind in (1, 2):  # a mistyped password
            body = {"email": user[1], "password": PASSWORD + "x"}
            await send("POST", "/api/v1/auth/login", json.dumps(body).encode())
            return
        if kind == 3:  # someone trying addresses
            body = {"email": f"nobody-{i}@example.com", "password": PASSWORD}
            await send("POST", "/api/v1/auth/login", json.dumps(body).encode())
            return
        if kind == 4:  # one account guessed at, into its limit
            body = {"email": hammered[1], "password": f"guess-{i}"}
            await send("POST", "/api/v1/auth/login", json.dumps(body).encode())
            return
        body = {"email": user[1], "password": PASSWORD}
        status, answer = await send("POST", "/api/v1/auth/login", json.dumps(body).encode())
        if status != 200:
            return
        totp = pyotp.TOTP(user[3])
        step = int(time.time()) // 30
        code = totp.now() if (user[0], step) not in spent and kind != 5 else "000000"
        spent.add((user[0], step))
        verify = {"mfa_token": json.loads(answer)["mfa_token"], "factor_id": user[2], "code": code}
        await send("POST", "/api/v1/auth/verify", json.dumps(verify).encode())

    await run_scenario(
        host="127.0.0.1",
        port=port,
        scenario=one,
        duration_s=args.duration,
        concurrency=args.concurrency,
    )


async def run(args: argparse.Namespace) -> list[Scrape]:
    name = "trail_dashboard_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    workdir = tempfile.mkdtemp(prefix="cloudmfa-dashboard-")
    try:
        env = service_env(f"{url}/{name}", f"dashboard-{secrets.token_hex(3)}:", workdir)
        env["CLOUDMFA_METRICS_TOKEN"] = TOKEN
        env["CLOUDMFA_LOGIN_MAX_FAILURES"] = "5"
        log(f"provisioning {args.users} users with TOTP")
        users = await provision(settings_from(env), args.users)
        port = free_port()
        cloudmfa = str(Path(sys.executable).with_name("cloudmfa"))
        argv = [cloudmfa, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        with Server(argv, env, port, "/readyz"):
            stop = asyncio.Event()
            scraping = asyncio.create_task(scrape_every(port, args.every, stop))
            await asyncio.sleep(args.every * 3)  # a quiet start, as a dashboard shows it
            log(f"driving a mixed load for {args.duration:g}s")
            await drive(port, users, args)
            await asyncio.sleep(args.every * 3)
            stop.set()
            return await scraping
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- PromQL, the forms the dashboard uses ----------------------------------------------------

RATE_SUM = re.compile(r"^sum by \(([^)]*)\) \(rate\((\w+)\[[^\]]+\]\)\)$")
QUANTILE = re.compile(
    r"^histogram_quantile\(([\d.]+), sum by \(([^)]*)\) \(rate\((\w+)\[[^\]]+\]\)\)\)$"
)
GAUGE_SUM = re.compile(r"^sum(?: by \(([^)]*)\))? ?\((\w+)\)$")

Series = dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]


def _grouped(samples: list[Sample], metric: str, by: list[str]) -> dict[Any, float]:
    out: dict[Any, float] = defaultdict(float)
    for name, labels, value in samples:
        if name == metric:
            key = tuple((k, v) for k, v in labels if k in by)
            out[key] += value
    return out


def _rates(scrapes: list[Scrape], metric: str, by: list[str], window: float) -> Series:
    series: Series = defaultdict(list)
    grouped = [(t, _grouped(samples, metric, by)) for t, samples in scrapes]
    for i, (t, now) in enumerate(grouped):
        j = next(j for j in range(i + 1) if grouped[j][0] >= t - window)
        if j == i:
            continue
        t0, then = grouped[j]
        for key, value in now.items():
            series[key].append((t, max(0.0, value - then.get(key, 0.0)) / (t - t0)))
    return series


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative (le, count) buckets."""
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return previous_le
            inside = count - previous_count
            return previous_le + (le - previous_le) * ((rank - previous_count) / inside)
        previous_le, previous_count = le, count
    return math.nan


def evaluate(expr: str, scrapes: list[Scrape], window: float) -> Series:
    if m := RATE_SUM.match(expr):
        by = [x.strip() for x in m.group(1).split(",")]
        return _rates(scrapes, m.group(2), by, window)
    if m := QUANTILE.match(expr):
        q, by = float(m.group(1)), [x.strip() for x in m.group(2).split(",")]
        rates = _rates(scrapes, m.group(3), by, window)
        per_group: dict[Any, dict[float, list[tuple[float, float]]]] = defaultdict(dict)
        for key, points in rates.items():
            labels = dict(key)
            group = tuple((k, v) for k, v in key if k != "le")
            per_group[group][float(labels["le"])] = points
        series: Series = {}
        for group, by_le in per_group.items():
            times = [t for t, _ in next(iter(by_le.values()))]
            points = []
            for n, t in enumerate(times):
                value = _quantile(q, [(le, pts[n][1]) for le, pts in by_le.items() if n < len(pts)])
                if not math.isnan(value):
                    points.append((t, value))
            series[group] = points
        return series
    if m := GAUGE_SUM.match(expr):
        by = [x.strip() for x in (m.group(1) or "").split(",") if x.strip()]
        series = defaultdict(list)
        for t, samples in scrapes:
            for key, value in _grouped(samples, m.group(2), by).items():
                series[key].append((t, value))
        return series
    raise ValueError(f"this renderer does not evaluate {expr!r}")


def legend(template: str, key: tuple[tuple[str, str], ...]) -> str:
    labels = dict(key)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: labels.get(m.group(1), ""), template) or "value"


# --- drawing -------------------------------------------------------------------------------


def draw(scrapes: list[Scrape], out: Path, window: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    start = scrapes[0][0]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) // 8
    fig, axes = plt.subplots(rows, 3, figsize=(18, 4.2 * rows), facecolor="#111217")
    for panel, ax in zip(panels, axes.flat, strict=False):
        ax.set_facecolor("#181b1f")
        ax.set_title(panel["title"], color="#d8d9da", fontsize=11, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.6)
        drawn = 0
        for target in panel["targets"]:
            for key, points in sorted(evaluate(target["expr"], scrapes, window).items()):
                if not points:
                    continue
                xs = [t - start for t, _ in points]
                ys = [v for _, v in points]
                ax.plot(xs, ys, linewidth=1.4, label=legend(target["legendFormat"], key)[:38])
                drawn += 1
        if drawn:
            ax.legend(
                fontsize=7,
                loc="upper left",
                facecolor="#181b1f",
                labelcolor="#d8d9da",
                edgecolor="#2c3235",
                ncol=2 if drawn > 5 else 1,
            )
        else:
            ax.text(
                0.5,
                0.5,
                "No data",
                color="#8e8e8e",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_xlim(0, scrapes[-1][0] - start)  # the whole run, as Grafana's time range
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_ylabel(
            {"reqps": "req/s", "ops": "/s", "s": "seconds"}.get(unit, ""),
            color="#8e8e8e",
            fontsize=8,
        )
        ax.set_xlabel("seconds into the run", color="#8e8e8e", fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{dashboard['title']}: deploy/grafana/cloudmfa.json drawn from a real run "
        f"(bench/dashboard.py, rates over {window:g} s)",
        color="#d8d9da",
        fontsize=13,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=72, facecolor=fig.get_facecolor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--every", type=float, default=1.5, help="scrape interval, s")
    parser.add_argument("--window", type=float, default=6.0, help="$__rate_interval, s")
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--scrapes", type=Path, help="also keep the scrapes here (JSON)")
    parser.add_argument("--redraw", type=Path, help="draw from scrapes kept by --scrapes instead")
    args = parser.parse_args()
    if args.redraw:
        scrapes = [
            (t, [(name, tuple(map(tuple, labels)), value) for name, labels, value in samples])
            for t, samples in json.loads(args.redraw.read_text())
        ]
    else:
        scrapes = uvloop.run(run(args))
    if args.scrapes:
        args.scrapes.write_text(json.dumps(scrapes))
    draw(scrapes, args.out, args.window)
    log(f"wrote {args.out} from {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
