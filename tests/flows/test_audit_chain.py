"""The audit trail's hash chain (store/audit_chain.py, flows/audit_chain.py), on SQLite and on
PostgreSQL: a whole chain verifies and its export recomputes outside the service; changing an
event's content, deleting one (in the middle or at the end) and reordering two are each caught
and the first broken event named; concurrent sealers and late commits leave one gapless chain;
retention pruning cuts the chain's start and what is left still verifies.

Events are made over HTTP (the sign-in's one-statement insert on PostgreSQL included) and
directly through store/audit.py; the tampering is plain SQL, as an attacker with the database
would do it. Each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from cloudmfa.flows import audit_chain, maintenance
from cloudmfa.store import audit as audit_repo
from cloudmfa.store.audit_chain import GENESIS_HASH, ends
from cloudmfa.store.models import audit_events
from conftest import Api, fresh_backend, start_api
from conftest import test_settings as make_settings


@pytest.fixture(params=["sqlite-memory", "postgres-redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def fresh_api(kind: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    async with fresh_backend(kind, tmp_path) as backend:
        settings = make_settings(backend, audit_seal_interval_s=0, **overrides)
        app, api = await start_api(settings)
        async with app.router.lifespan_context(app), api.client:
            yield api


async def some_events(api: Api, count: int = 3) -> None:
    """Events as clients cause them: sign-up, a failed and a good login each."""
    for _ in range(count):
        account = await api.sign_up()
        r = await api.client.post(
            "/api/v1/auth/login", json={"email": account["email"], "password": "wrong" * 4}
        )
        assert r.status_code == 401, r.text
        await api.login(account["email"])


async def record(api: Api, n: int, type_: str = "account.created") -> None:
    async with api.svc.engine.begin() as conn:
        for i in range(n):
            await audit_repo.record(
                conn, api.svc.clock.now(), audit_repo.AuditEvent(type=type_, details={"i": i})
            )


async def chained(api: Api) -> list[dict[str, Any]]:
    """The events in chain order."""
    async with api.svc.engine.connect() as conn:
        rows = await conn.execute(
            select(audit_events.c.id, audit_events.c.chain_seq, audit_events.c.chain_hash)
            .where(audit_events.c.chain_seq.is_not(None))
            .order_by(audit_events.c.chain_seq)
        )
        return [dict(r._mapping) for r in rows]


async def tamper(api: Api, *statements: Any) -> None:
    async with api.svc.engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


def recompute(prev_hash: str, line: dict[str, Any]) -> str:
    """A link computed as docs/operations.md tells an outside verifier to."""
    content = {k: v for k, v in line.items() if k not in ("chain_seq", "prev_hash", "chain_hash")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode()).hexdigest()


async def test_a_whole_chain_verifies_and_its_export_recomputes(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await some_events(api)
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.whole, verdict.problem
        assert verdict.events == 9  # 3 × (account.created, login.failed, login.succeeded)
        lines = [line async for line in audit_chain.export(api.svc.engine)]
        assert [line["chain_seq"] for line in lines] == list(range(1, 10))
        previous = GENESIS_HASH
        for line in lines:
            assert line["prev_hash"] == previous
            assert recompute(previous, line) == line["chain_hash"]
            previous = line["chain_hash"]
        assert previous == verdict.head_hash
        assert {line["type"] for line in lines} == {
            "account.created",
            "login.failed",
            "login.succeeded",
        }
        # Events written after a seal join the same chain.
        await record(api, 2)
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.whole and verdict.events == 11 and verdict.head_seq == 11


async def test_changed_content_names_the_event(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await some_events(api)
        assert (await audit_chain.verify(api.svc.engine)).whole
        victim = (await chained(api))[4]
        await tamper(
            api,
            update(audit_events)
            .where(audit_events.c.id == victim["id"])
            .values(outcome="success", ip="10.9.9.9"),
        )
        verdict = await audit_chain.verify(api.svc.engine)
        assert not verdict.whole
        assert verdict.problem is not None
        assert f"event {victim['id']} at position 5 was changed" in verdict.problem


async def test_a_changed_event_with_a_recomputed_link_breaks_the_next(
    kind: str, tmp_path: Path
) -> None:
    """An attacker who also rewrites the changed event's own hash is caught at its successor."""
    async with fresh_api(kind, tmp_path) as api:
        await record(api, 5)
        assert (await audit_chain.verify(api.svc.engine)).whole
        lines = [line async for line in audit_chain.export(api.svc.engine)]
        forged = {**lines[1], "details": {"i": 99}}
        forged_hash = recompute(lines[1]["prev_hash"], forged)
        await tamper(
            api,
            update(audit_events)
            .where(audit_events.c.id == lines[1]["id"])
            .values(details={"i": 99}, chain_hash=forged_hash),
        )
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.problem is not None
        assert f"event {lines[2]['id']} at position 3 was changed" in verdict.problem


async def test_a_deleted_event_is_named_by_its_position(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await some_events(api)
        assert (await audit_chain.verify(api.svc.engine)).whole
        events = await chained(api)
        await tamper(api, audit_events.delete().where(audit_events.c.id == events[3]["id"]))
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.problem is not None
        assert verdict.problem.startswith("the event at position 4 was removed")
        assert events[4]["id"] in verdict.problem  # where the chain picks up again


async def test_deleting_the_newest_events_is_caught_by_the_head(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await record(api, 4)
        assert (await audit_chain.verify(api.svc.engine)).whole
        events = await chained(api)
        await tamper(api, audit_events.delete().where(audit_events.c.chain_seq >= 3))
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.problem is not None
        assert verdict.problem.startswith("the event at position 3 was removed")
        assert len(events) == 4


async def test_two_events_reordered_are_caught(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await some_events(api)
        assert (await audit_chain.verify(api.svc.engine)).whole
        events = await chained(api)
        first, second = events[2], events[5]
        by_id = audit_events.c.id
        await tamper(  # swap their positions (through a free one: the positions are unique)
            api,
            update(audit_events).where(by_id == first["id"]).values(chain_seq=-1),
            update(audit_events).where(by_id == second["id"]).values(chain_seq=3),
            update(audit_events).where(by_id == first["id"]).values(chain_seq=6),
        )
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.problem is not None
        assert f"event {second['id']} at position 3 was changed" in verdict.problem


async def test_an_unchained_event_leaves_a_gap(kind: str, tmp_path: Path) -> None:
    """Clearing an event's chain columns does not slip it back in: it is chained again at the
    end, and the position it left is reported."""
    async with fresh_api(kind, tmp_path) as api:
        await record(api, 4)
        assert (await audit_chain.verify(api.svc.engine)).whole
        await tamper(
            api,
            update(audit_events)
            .where(audit_events.c.chain_seq == 2)
            .values(chain_seq=None, chain_hash=None),
        )
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.problem is not None
        assert verdict.problem.startswith("the event at position 2 was removed")


async def test_concurrent_sealers_and_writers_make_one_gapless_chain(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_api(kind, tmp_path) as api:
        engine = api.svc.engine

        async def writer() -> None:
            for _ in range(10):
                await record(api, 3)

        async def sealer() -> None:
            for _ in range(10):
                await audit_chain.seal_pending(engine, batch_size=4)

        await asyncio.gather(*(writer() for _ in range(4)), *(sealer() for _ in range(4)))
        verdict = await audit_chain.verify(engine)
        assert verdict.whole, verdict.problem
        assert verdict.events == 120
        async with engine.connect() as conn:
            unchained = await conn.scalar(
                select(func.count()).where(audit_events.c.chain_seq.is_(None))
            )
        assert unchained == 0


async def test_an_event_committed_late_takes_the_next_position(kind: str, tmp_path: Path) -> None:
    """The chain's order is the order of sealing: an event written first but committed after a
    later one was sealed is chained after it, not lost and not breaking the chain."""
    async with fresh_api(kind, tmp_path) as api:
        engine = api.svc.engine
        if kind == "sqlite-memory":
            # SQLite has one writer at a time (a process's writers share one connection): the
            # late event is written, then the others are written and sealed only after it
            # commits, so emulate the order by committing a first batch before.
            await record(api, 2)
            await audit_chain.seal_pending(engine)
            await record(api, 1, "late.event")
        else:
            late = await engine.connect()
            transaction = await late.begin()
            try:
                await audit_repo.record(
                    late, api.svc.clock.now(), audit_repo.AuditEvent(type="late.event")
                )
                await record(api, 2)  # written after, committed before
                assert await audit_chain.seal_pending(engine) == 2
                await transaction.commit()
            finally:
                await late.close()
        verdict = await audit_chain.verify(engine)
        assert verdict.whole, verdict.problem
        assert verdict.events == 3
        lines = [line async for line in audit_chain.export(engine)]
        assert lines[-1]["type"] == "late.event"


async def test_retention_prunes_the_chain_start_and_the_rest_still_verifies(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_api(kind, tmp_path, audit_retention_days=30) as api:
        await record(api, 5, "old.event")  # unchained when the prune comes: it seals first
        api.clock.advance(days=31)
        await record(api, 3, "new.event")
        retention = maintenance.retention_for(api.svc)
        report = await maintenance.prune(
            api.svc.engine, retention, api.svc.clock.now(), batch_size=2
        )
        assert report.audit_events == 5
        async with api.svc.engine.connect() as conn:
            chain = await ends(conn)
        assert chain.base_seq == 5 and chain.head_seq == 8
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.whole, verdict.problem
        assert verdict.events == 3
        lines = [line async for line in audit_chain.export(api.svc.engine)]
        assert [line["type"] for line in lines] == ["new.event"] * 3
        assert lines[0]["prev_hash"] == chain.base_hash
        # Deleting the new start by hand is still caught: only the prune moves the base.
        await tamper(api, audit_events.delete().where(audit_events.c.chain_seq == 6))
        verdict = await audit_chain.verify(api.svc.engine)
        assert verdict.problem is not None
        assert verdict.problem.startswith("the event at position 6 was removed")


async def test_export_since_leaves_out_older_events(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await record(api, 2, "old.event")
        api.clock.advance(hours=1)
        since = api.svc.clock.now()
        await record(api, 2, "new.event")
        lines = [line async for line in audit_chain.export(api.svc.engine, since=since)]
        assert [line["type"] for line in lines] == ["new.event", "new.event"]
        # Each still carries its predecessor, so the exported part verifies on its own.
        assert lines[0]["prev_hash"] != GENESIS_HASH
        assert recompute(lines[0]["prev_hash"], lines[0]) == lines[0]["chain_hash"]


async def test_a_walk_stops_at_the_head_it_read(kind: str, tmp_path: Path) -> None:
    """Verification takes no lock: events sealed after it read the head lie beyond it, and
    are no break (it used to find "the chain ends at … its head is at …")."""
    async with fresh_api(kind, tmp_path) as api:
        await record(api, 3)
        await audit_chain.seal_pending(api.svc.engine)
        async with api.svc.engine.connect() as conn:
            read_first = await ends(conn)
        await record(api, 2)
        await audit_chain.seal_pending(api.svc.engine)  # a sealer elsewhere, meanwhile
        async with api.svc.engine.connect() as conn:
            verdict = await audit_chain._walk_and_check(conn, read_first)  # noqa: SLF001
        assert verdict.whole, verdict.problem
        assert verdict.events == 3
