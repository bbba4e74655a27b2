"""`cloudmfa serve` with CLOUDMFA_DELIVERY=worker plus `cloudmfa worker`, as real processes on
PostgreSQL and Redis: the full sign-in with SMS and with email over HTTP, each code read from
where the worker delivered it (the `webhook` provider's POST to a receiver that checks its
signature, the `smtp` provider's message to an SMTP server); a worker SIGKILLed mid-queue and
restarted still delivers it all."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

import conftest
from cloudmfa.config import Settings
from cloudmfa.delivery.base import Message
from cloudmfa.delivery.worker import QueueDispatcher, open_queue
from cloudmfa.services import Services
from peers.smtp import SmtpSink
from peers.webhook import WebhookReceiver
from serving import Serve, clean_env
from support import cloudmfa_command

pytestmark = pytest.mark.slow


class Worker:
    def __init__(self, workdir: Path, env: dict[str, str], *args: str) -> None:
        self.env, self.args, self.workdir = env, args, workdir
        self.log_path = workdir / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*cloudmfa_command(), "worker", *self.args],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


CODE = re.compile(r"\b(\d{6})\b")
WEBHOOK_SECRET = secrets.token_urlsafe(32)


class Sinks:
    """Where the worker delivers: the SMS webhook receiver and the SMTP server."""

    def __init__(self, sms: WebhookReceiver, mail: SmtpSink) -> None:
        self.sms, self.mail = sms, mail

    def texts_to(self, to: str) -> list[str]:
        sms = [m["body"] for m in self.sms.messages if m["to"] == to]
        with self.mail.lock:
            mails = [m for m in self.mail.messages if m["To"] == to]
        return sms + [m.get_body(("plain",)).get_content() for m in mails]

    def code_to(self, to: str, nth: int, timeout_s: float = 20) -> str:
        """The code in the ``nth`` (from 1) message delivered to ``to``."""
        deadline = time.monotonic() + timeout_s
        while True:
            texts = self.texts_to(to)
            if len(texts) >= nth:
                found = CODE.search(texts[nth - 1])
                assert found, texts[nth - 1]
                return found.group(1)
            if time.monotonic() > deadline:
                pytest.fail(f"no message {nth} to {to}: {len(texts)} arrived")
            time.sleep(0.05)

    def mailed_to(self) -> list[str]:
        with self.mail.lock:
            return [str(m["To"]) for m in self.mail.messages]


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("delivery-worker")
    sms, mail = WebhookReceiver(WEBHOOK_SECRET), SmtpSink()
    async with conftest.fresh_backend("postgres-redis", workdir) as backend:
        sms.start()
        mail.start()
        env = clean_env(
            CLOUDMFA_SMS_PROVIDER="webhook",
            CLOUDMFA_SMS_WEBHOOK_URL=f"{sms.url}/sms",
            CLOUDMFA_SMS_WEBHOOK_SECRET=WEBHOOK_SECRET,
            CLOUDMFA_EMAIL_PROVIDER="smtp",
            CLOUDMFA_SMTP_HOST="127.0.0.1",
            CLOUDMFA_SMTP_PORT=str(mail.port),
            CLOUDMFA_SMTP_SECURITY="none",
            CLOUDMFA_EMAIL_FROM="no-reply@example.com",
            CLOUDMFA_DATABASE_URL=backend["database_url"],
            CLOUDMFA_REDIS_URL=backend["redis_url"],
            CLOUDMFA_REDIS_KEY_PREFIX=backend["redis_key_prefix"],
            CLOUDMFA_DELIVERY="worker",
            CLOUDMFA_SECRET_KEYS=conftest.TEST_SECRET_KEYS,
            CLOUDMFA_ENABLED_FACTORS="totp,sms,email,recovery",
            CLOUDMFA_MFA_POLICY="optional",
            CLOUDMFA_ARGON2_MEMORY_KIB="8192",
            CLOUDMFA_ARGON2_TIME_COST="1",
            CLOUDMFA_DATA_DIR=str(workdir),
            CLOUDMFA_OTP_RESEND_COOLDOWN_S="0",  # no wait between enrolment and sign-in
        )
        serve = Serve(workdir, env, "--workers", "1").start()
        given: dict[str, Any] = {
            "serve": serve,
            "worker": Worker(workdir, env).start(),
            "env": env,
            "sinks": Sinks(sms, mail),
        }
        try:
            yield given
        finally:
            given["worker"].kill()
            serve.kill()
            sms.stop()
            mail.stop()


@pytest.fixture
def client(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    with stack["serve"].client() as c:
        yield c


def sign_in_with(client: httpx.Client, sinks: Sinks, kind: str, destination: str) -> None:
    email = f"w-{secrets.token_hex(5)}@example.com"
    password = conftest.PASSWORD
    assert client.post("/api/v1/accounts", json={"email": email, "password": password}).is_success
    tokens = client.post("/api/v1/auth/login", json={"email": email, "password": password}).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    field = "phone" if kind == "sms" else "email"
    r = client.post("/api/v1/me/factors", json={"type": kind, field: destination}, headers=headers)
    assert r.status_code == 201, r.text
    factor_id = r.json()["id"]
    r = client.post(
        f"/api/v1/me/factors/{factor_id}/activate",
        json={"code": sinks.code_to(destination, 1)},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    login = client.post("/api/v1/auth/login", json={"email": email, "password": password}).json()
    assert login["status"] == "mfa_required"
    r = client.post(
        "/api/v1/auth/challenge", json={"mfa_token": login["mfa_token"], "factor_id": factor_id}
    )
    assert r.status_code == 202, r.text
    r = client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": login["mfa_token"],
            "factor_id": factor_id,
            "code": sinks.code_to(destination, 2),
        },
    )
    assert r.status_code == 200, r.text
    assert "access_token" in r.json()


def test_sign_in_with_sms_and_with_email_through_the_worker(
    stack: dict[str, Any], client: httpx.Client
) -> None:
    sinks: Sinks = stack["sinks"]
    phone = "+14155550" + f"{secrets.randbelow(900) + 100}"
    address = f"e-{secrets.token_hex(5)}@example.com"
    sign_in_with(client, sinks, "sms", phone)
    sign_in_with(client, sinks, "email", address)
    # Each code was delivered once, and only requests that carried a valid signature came in.
    assert len(sinks.texts_to(phone)) == 2 and len(sinks.texts_to(address)) == 2
    assert sinks.sms.refused == []
    # serve itself sent nothing (it only queues); the worker did.
    assert "NOT DELIVERED" not in stack["serve"].output()


async def test_a_worker_killed_mid_queue_and_restarted_delivers_everything(
    stack: dict[str, Any],
) -> None:
    worker: Worker = stack["worker"]
    sinks: Sinks = stack["sinks"]
    worker.kill()
    settings = Settings(_env_file=None, **_settings_from(stack["env"]))  # type: ignore[call-arg]
    svc = Services.build(settings)
    await svc.start()  # close() below counts the pool's capacity out again
    queue = open_queue(settings)
    ids: list[str] = []
    try:
        async with svc.engine.begin() as conn:
            tag = secrets.token_hex(4)
            addresses = [f"bulk-{tag}-{n}@example.com" for n in range(300)]
            for n, to in enumerate(addresses):
                message = Message("email", to, "notice", f"notice {n}")
                ids.append(await svc.outbox.submit(conn, message))

        def delivered() -> set[str]:
            return set(sinks.mailed_to()) & set(addresses)

        await QueueDispatcher(queue).hand_over(ids)
        slow = Worker(worker.workdir, stack["env"], "--concurrency", "1")
        slow.log_path = worker.workdir / "worker-killed.log"
        slow.start()
        deadline = time.monotonic() + 30
        while len(delivered()) < 5:
            assert time.monotonic() < deadline, slow.output()[-3000:]
            await asyncio.sleep(0.02)
        slow.kill()  # SIGKILL: mid-queue, perhaps mid-message
        assert len(delivered()) < len(ids)
        restarted = Worker(worker.workdir, stack["env"]).start()
        stack["worker"] = restarted
        deadline = time.monotonic() + 90
        while len(delivered()) < len(addresses):
            assert time.monotonic() < deadline, f"{len(delivered())} of {len(ids)}"
            await asyncio.sleep(0.2)
        # At least once towards the provider: only a message cut short by the kill may come twice.
        copies = [to for to in sinks.mailed_to() if to in set(addresses)]
        assert len(copies) - len(addresses) <= 1, len(copies)
        from sqlalchemy import func, select

        from cloudmfa.store.models import delivery_outbox as t

        async with svc.reader.connect() as conn:
            statuses = dict(
                (
                    await conn.execute(
                        select(t.c.status, func.count()).where(t.c.id.in_(ids)).group_by(t.c.status)
                    )
                ).all()
            )
        # All sent; one cut short by the kill may still wait out its lease, already delivered.
        assert statuses.get("sent", 0) >= len(ids) - 1, statuses
    finally:
        await queue.disconnect()
        await svc.close()


def _settings_from(env: dict[str, str]) -> dict[str, Any]:
    return {
        k.removeprefix("CLOUDMFA_").lower(): v for k, v in env.items() if k.startswith("CLOUDMFA_")
    }


@pytest.mark.parametrize(
    ("redis_url", "says"),
    [(None, "needs CLOUDMFA_REDIS_URL"), ("redis+cluster://127.0.0.1:7000", "Redis Cluster")],
)
def test_a_worker_without_a_usable_queue_says_why_in_one_line(
    tmp_path: Path, redis_url: str | None, says: str
) -> None:
    env = clean_env(CLOUDMFA_DELIVERY="worker", CLOUDMFA_DATA_DIR=str(tmp_path))
    if redis_url:
        env["CLOUDMFA_REDIS_URL"] = redis_url
    result = subprocess.run(
        [*cloudmfa_command(), "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("cloudmfa: error: ") and says in line
