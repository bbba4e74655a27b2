"""``cloudmfa rotate-secret-key``: a new key for the stored TOTP seeds, and every seed
re-encrypted under it, one committed batch at a time, resumable after an interruption.

The accounts and factors are made in-process through the HTTP app (ASGI), on a SQLite database
and a zero-configuration key file in a temporary data directory; the command itself runs as a
real subprocess against the same files.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyotp
import pytest

from cloudmfa.clock import FrozenClock
from cloudmfa.flows import maintenance
from cloudmfa.security.secretbox import (
    KEY_FILE_NAME,
    SecretBox,
    SecretKey,
    format_key,
    new_key,
    parse_key_ring,
    write_key_file,
)
from cloudmfa.services import Services
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import keys as key_repo
from conftest import FAST_ARGON2, PASSWORD, TEST_SECRET_KEYS, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import cloudmfa_command

pytestmark = pytest.mark.slow

CLI_TIMEOUT_S = 120


# --- helpers -------------------------------------------------------------------------------


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment without any CLOUDMFA_* variable, pointed at ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env.update(
        PYTHONUNBUFFERED="1",
        CLOUDMFA_DATA_DIR=str(data_dir),
        CLOUDMFA_DATABASE_URL=db_url(data_dir),
        CLOUDMFA_MFA_POLICY="optional",
        CLOUDMFA_ARGON2_MEMORY_KIB=str(FAST_ARGON2["argon2_memory_kib"]),
        CLOUDMFA_ARGON2_TIME_COST=str(FAST_ARGON2["argon2_time_cost"]),
    )
    env.update(extra)
    return env


def run_cli(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cloudmfa_command(), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def rotate(cwd: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    result = await asyncio.to_thread(run_cli, ["rotate-secret-key", *extra], cwd=cwd, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def db_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'cloudmfa.db'}"


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def key_ids(data_dir: Path) -> list[str]:
    return [k.id for k in parse_key_ring(key_file(data_dir).read_text())]


@asynccontextmanager
async def served(
    data_dir: Path, clock: FrozenClock, *, secret_keys: str | None = None
) -> AsyncIterator[Api]:
    """The app, in-process, on the data directory's database and key file (or ring)."""
    settings = make_settings(
        {"database_url": db_url(data_dir), "redis_url": None},
        data_dir=str(data_dir),
        secret_keys=secret_keys,
    )
    app, api = await start_api(settings, clock)
    async with app.router.lifespan_context(app), api.client:
        yield api


async def user_with_totp(api: Api) -> dict[str, Any]:
    account = await api.sign_up()
    headers = bearer((await api.login(account["email"]))["access_token"])
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    factor_id, secret = r.json()["id"], r.json()["secret"]
    r = await api.client.post(
        f"/api/v1/me/factors/{factor_id}/activate",
        json={"code": pyotp.TOTP(secret).at(api.clock.now())},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return {**account, "factor_id": factor_id, "secret": secret}


async def pending_totp(api: Api) -> str:
    """A user whose TOTP enrolment was started and never finished: a stored seed all the same."""
    _, headers = await api.signed_in("pending")
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def sign_in_with_code(api: Api, user: dict[str, Any]) -> None:
    """Password, then the authenticator app's current code (a fresh time step each time)."""
    api.clock.advance(seconds=30)
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "mfa_required", body
    r = await api.client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": body["mfa_token"],
            "factor_id": user["factor_id"],
            "code": pyotp.TOTP(user["secret"]).at(api.clock.now()),
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "authenticated"


async def stored_key_ids(api: Api) -> dict[str, str]:
    """factor id → the key id its stored secret names."""
    async with api.svc.engine.connect() as conn:
        rows = await factor_repo.secrets_after(conn, "", 100_000)
    return {factor_id: SecretBox.key_id_of(blob) for factor_id, blob in rows}


async def signing_keys_sealed_under(api: Api) -> set[str | None]:
    async with api.svc.engine.connect() as conn:
        stored = await key_repo.stored_private_keys(conn)
    return {key_repo.sealed_under(private) for _, private in stored}


async def stored_secrets(api: Api) -> dict[str, bytes]:
    async with api.svc.engine.connect() as conn:
        return dict(await factor_repo.secrets_after(conn, "", 100_000))


def new_clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


# --- rotation with the generated key file --------------------------------------------------


async def test_rotation_adds_a_key_and_reencrypts_every_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    clock = new_clock()
    async with served(data_dir, clock) as api:
        # Zero configuration: the first start generated a key file with one key.
        (old_id,) = key_ids(data_dir)
        old_key = parse_key_ring(key_file(data_dir).read_text())[0]
        user = await user_with_totp(api)
        pending_id = await pending_totp(api)
        before = await stored_secrets(api)
        assert set(before) == {user["factor_id"], pending_id}
        assert all(blob.startswith(old_id.encode() + b"\x00") for blob in before.values())

        # The running app keeps running while the command rotates underneath it.
        result = await rotate(tmp_path, cli_env(data_dir))
        assert result.returncode == 0, result.stderr
        ids = key_ids(data_dir)
        assert len(ids) == 2
        new_id = ids[0]
        assert new_id != old_id and ids[1] == old_id, ids
        assert parse_key_ring(key_file(data_dir).read_text())[1] == old_key
        assert stat.S_IMODE(key_file(data_dir).stat().st_mode) == 0o600
        assert new_id in result.stdout
        # Both seeds and the private half of the token signing key.
        assert re.search(r"done: 3 secret\(s\) re-encrypted", result.stdout), result.stdout
        assert "resuming" not in result.stdout

        after = await stored_secrets(api)
        assert set(after) == set(before)
        for factor_id, blob in after.items():
            assert blob.startswith(new_id.encode() + b"\x00"), factor_id
            assert blob != before[factor_id]
        for secret in (user["secret"].encode(),):
            assert all(secret not in blob for blob in after.values())
        assert await signing_keys_sealed_under(api) == {new_id}

        # The app that was already running reads the rotated key file when it meets the new id.
        await sign_in_with_code(api, user)
        # And it encrypts new seeds under the new key from then on.
        fresh_pending = await pending_totp(api)
        assert (await stored_key_ids(api))[fresh_pending] == new_id

    # A freshly started app, with the rotated key file, verifies the same factor.
    async with served(data_dir, clock) as api:
        assert api.svc.secretbox.current_id == new_id
        await sign_in_with_code(api, user)
        assert set((await stored_key_ids(api)).values()) == {new_id}

    # Nothing left to do: a second run adds yet another key (rotating again) and re-encrypts.
    result = await rotate(tmp_path, cli_env(data_dir))
    assert result.returncode == 0, result.stderr
    assert len(key_ids(data_dir)) == 3
    async with served(data_dir, clock) as api:
        newest = key_ids(data_dir)[0]
        assert set((await stored_key_ids(api)).values()) == {newest}
        await sign_in_with_code(api, user)


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C between two committed batches."""


async def test_interrupted_rotation_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    clock = new_clock()
    async with served(data_dir, clock) as api:
        users = [await user_with_totp(api) for _ in range(6)]
    (old_id,) = key_ids(data_dir)

    # What the command does first: a new key, put first in the key file...
    ring = parse_key_ring(key_file(data_dir).read_text())
    fresh = new_key(ring)
    write_key_file(key_file(data_dir), [fresh, *ring])
    # ...then batches, here of two, with the "process" dying after the first one committed.
    monkeypatch.setattr(maintenance, "BATCH_SIZE", 2)
    settings = make_settings(
        {"database_url": db_url(data_dir), "redis_url": None},
        data_dir=str(data_dir),
        secret_keys=None,
    )
    svc = Services.build(settings, clock=clock)
    try:
        await svc.start()
        assert svc.secretbox.current_id == fresh.id
        assert await maintenance.pending_reencryption(svc) == 7  # six seeds, one signing key

        def die(_report: maintenance.ReencryptReport) -> None:
            raise Interrupted

        with pytest.raises(Interrupted):
            await maintenance.reencrypt_secrets(svc, progress=die)
        assert await maintenance.pending_reencryption(svc) == 4
    finally:
        await svc.close()

    async with served(data_dir, clock) as api:
        by_key = await stored_key_ids(api)
    assert sorted(by_key.values()) == sorted([fresh.id] * 2 + [old_id] * 4)

    result = await rotate(tmp_path, cli_env(data_dir))
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout, result.stdout
    assert re.search(r"\b4 secret\(s\)", result.stdout), result.stdout
    assert re.search(r"done: 4 secret\(s\) re-encrypted", result.stdout), result.stdout
    # Resuming finishes the interrupted rotation; it does not start another one.
    assert key_ids(data_dir) == [fresh.id, old_id]

    async with served(data_dir, clock) as api:
        assert set((await stored_key_ids(api)).values()) == {fresh.id}
        for user in users:
            await sign_in_with_code(api, user)


async def test_interrupted_rotation_resumes_with_the_default_batch_size(tmp_path: Path) -> None:
    """The other way to be interrupted: the key file was written, no secret re-encrypted yet."""
    data_dir = tmp_path / "data"
    clock = new_clock()
    async with served(data_dir, clock) as api:
        users = [await user_with_totp(api) for _ in range(3)]
    ring = parse_key_ring(key_file(data_dir).read_text())
    fresh = new_key(ring)
    write_key_file(key_file(data_dir), [fresh, *ring])

    result = await rotate(tmp_path, cli_env(data_dir))
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "4 secret(s)" in result.stdout, result.stdout
    assert len(key_ids(data_dir)) == 2

    async with served(data_dir, clock) as api:
        assert set((await stored_key_ids(api)).values()) == {fresh.id}
        for user in users:
            await sign_in_with_code(api, user)


# --- rotation with CLOUDMFA_SECRET_KEYS ------------------------------------------------------


async def test_configured_ring_with_nothing_to_do_prints_guidance(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    clock = new_clock()
    async with served(data_dir, clock, secret_keys=TEST_SECRET_KEYS) as api:
        await user_with_totp(api)
    assert not key_file(data_dir).exists()

    result = await rotate(tmp_path, cli_env(data_dir, CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CLOUDMFA_SECRET_KEYS" in out, out
    assert "--generate-key" in out, out
    assert "t1" in out
    assert "re-encrypted" not in out
    assert not key_file(data_dir).exists(), "a configured ring never writes a key file"
    assert TEST_SECRET_KEYS.split(":", 1)[1] not in out + result.stderr


async def test_configured_ring_with_a_new_first_key_reencrypts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    clock = new_clock()
    async with served(data_dir, clock, secret_keys=TEST_SECRET_KEYS) as api:
        users = [await user_with_totp(api) for _ in range(2)]

    generated = await rotate(tmp_path, cli_env(data_dir), "--generate-key")
    assert generated.returncode == 0, generated.stderr
    (fresh,) = parse_key_ring(generated.stdout)
    fresh = SecretKey("t2", fresh.key)  # the operator names it in their ring
    ring = f"{format_key(fresh)},{TEST_SECRET_KEYS}"

    result = await rotate(tmp_path, cli_env(data_dir, CLOUDMFA_SECRET_KEYS=ring))
    assert result.returncode == 0, result.stderr
    assert re.search(r"done: 3 secret\(s\) re-encrypted under key t2", result.stdout), result.stdout
    assert not key_file(data_dir).exists()

    async with served(data_dir, clock, secret_keys=ring) as api:
        assert set((await stored_key_ids(api)).values()) == {"t2"}
        assert await signing_keys_sealed_under(api) == {"t2"}
        for user in users:
            await sign_in_with_code(api, user)
    # Once everything is under t2, the old key can go.
    async with served(data_dir, clock, secret_keys=format_key(fresh)) as api:
        for user in users:
            await sign_in_with_code(api, user)


async def test_malformed_configured_ring_is_a_one_line_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = await rotate(tmp_path, cli_env(data_dir, CLOUDMFA_SECRET_KEYS="k1:not-a-key"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloudmfa: error:"), lines
    assert "CLOUDMFA_SECRET_KEYS" in lines[0]


# --- --generate-key ------------------------------------------------------------------------


async def test_generate_key_prints_id_and_32_byte_base64_key(tmp_path: Path) -> None:
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    first = await asyncio.to_thread(
        run_cli, ["rotate-secret-key", "--generate-key"], cwd=workdir, env=env
    )
    second = await asyncio.to_thread(
        run_cli, ["rotate-secret-key", "--generate-key"], cwd=workdir, env=env
    )
    keys = []
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 1, result.stdout
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}:[A-Za-z0-9+/]{43}=", lines[0]), lines[0]
        (key,) = parse_key_ring(lines[0])
        assert len(key.key) == 32
        keys.append(key.key)
    assert keys[0] != keys[1]
    # It only prints: no database, no key file, nothing written.
    assert list(workdir.iterdir()) == []
