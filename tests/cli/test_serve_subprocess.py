"""The ``cloudmfa`` command as an operator runs it: real processes, real sockets, real HTTP.

API.md "Running it": ``serve`` works with zero configuration (SQLite under ./var, an in-process
store, a signing key kept in the database), keeps its state across restarts, serves HTTPS with
``--tls-cert/--tls-key``, and turns operator mistakes into one line on stderr and a non-zero
exit; ``create-admin``, ``migrate`` and ``rotate-signing-key`` act on the same database; with
PostgreSQL and Redis, several workers share revocations.

Every server runs in its own process group and is killed in a ``finally`` whatever happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from cloudmfa.store.migrate import head_revision
from conftest import REDIS_URL, PgDatabase, bearer, drop_redis_prefix
from support import cloudmfa_command, free_port

pytestmark = pytest.mark.slow

PASSWORD = "plum-orbit-velvet-canyon-42"  # 27 characters, on no list: fine for either policy
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
CLI_TIMEOUT_S = 60
METRICS_TOKEN = "scrape-token-" + "m" * 20


# --- helpers -----------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any CLOUDMFA_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    args: list[str], *, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one ``cloudmfa`` command to completion (``subprocess.run`` kills it on timeout)."""
    return subprocess.run(
        [*cloudmfa_command(), *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("cloudmfa: error:"), line
    for needle in needles:
        assert needle.lower() in line.lower(), line
    return line


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on a loop of its own, away from the test runner's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Server:
    """``cloudmfa serve`` in a process group of its own, stopped with SIGTERM."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        *extra_args: str,
        scheme: str = "http",
    ) -> None:
        self.workdir = workdir
        self.env = env
        self.extra_args = extra_args
        self.scheme = scheme
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        # Beside the working directory, not in it: zero configuration means an empty one.
        self.log_path = workdir.parent / f"{workdir.name}-server.log"
        self.starts = 0
        self.log_offset = 0

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        # verify=False: the HTTPS test serves a self-signed certificate made on the spot.
        return httpx.Client(base_url=self.base_url, verify=False, timeout=15, **kwargs)  # noqa: S501

    @property
    def workers(self) -> int:
        args = list(self.extra_args)
        return int(args[args.index("--workers") + 1]) if "--workers" in args else 1

    def run_log(self) -> str:
        """What the current (or last) run has logged so far."""
        try:
            return self.log_path.read_bytes()[self.log_offset :].decode(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def start(self, *, same_port: bool = False) -> Server:
        """``same_port``: a restart where the service was (its tokens name that address)."""
        assert self.proc is None, "already running"
        if not (same_port and self.port):
            self.port = free_port()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts} on port {self.port} ===\n".encode())
            log.flush()
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                [*cloudmfa_command(), "serve", "--port", str(self.port), *self.extra_args],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the workers share its process group
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with self.client() as c:
                    healthy = c.get("/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                healthy = False
            # With --workers N, /healthz answers once the first is up: wait for all N.
            if healthy and self.run_log().count("Application startup complete") >= self.workers:
                return
            time.sleep(0.2)
        pytest.fail(f"serve did not answer /healthz within {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM, wait, and check that the shutdown was a graceful one."""
        proc, self.proc = self.proc, None
        assert proc is not None
        try:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            _kill_group(proc)
        # Uvicorn shuts down, then re-raises the signal it caught: -SIGTERM is a clean exit.
        assert code in (0, -signal.SIGTERM), f"serve exited with {code}:\n{self.log()}"
        assert "Application shutdown complete" in self.run_log(), self.run_log()

    def restart(self) -> Server:
        self.stop()
        return self.start(same_port=True)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the server and any worker it left behind (its process group is its pid)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()


def new_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def sign_up(client: httpx.Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = client.post("/api/v1/accounts", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    return dict(r.json())


def log_in(client: httpx.Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    body = dict(r.json())
    assert body["status"] == "authenticated", body
    return body


def sign_in_with_second_factor(
    client: httpx.Client, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    """Enrol and activate TOTP from a password-only session, then sign in again with one of
    the recovery codes it gives (no wait for the next TOTP time step): a session that verified
    a second factor, as administration needs."""
    headers = bearer(log_in(client, email, password)["access_token"])
    r = client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    factor = r.json()
    r = client.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        json={"code": pyotp.TOTP(factor["secret"]).now()},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    recovery_code = r.json()["recovery_codes"][0]
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200 and r.json()["status"] == "mfa_required", r.text
    r = client.post(
        "/api/v1/auth/verify",
        json={"mfa_token": r.json()["mfa_token"], "factor_id": "recovery", "code": recovery_code},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def jwks_kids(client: httpx.Client) -> list[str]:
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    return [key["kid"] for key in r.json()["keys"]]


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- zero configuration, and a restart ---------------------------------------------------


def test_zero_configuration_serve_keeps_users_keys_and_tokens_across_a_restart(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "empty"
    workdir.mkdir()
    server = Server(workdir, clean_env())
    try:
        server.start()
        email = new_email()
        with server.client() as c:
            account = sign_up(c, email)
            tokens = log_in(c, email)
            # The default `required` policy confines a factorless session to /me, enrolment
            # and logout, and says so.
            assert tokens.get("mfa_enrollment_required") is True, tokens
            me = c.get("/api/v1/me", headers=bearer(tokens["access_token"]))
            assert me.status_code == 200, me.text
            assert me.json()["id"] == account["id"]
            assert me.json()["email"] == email
            kids = jwks_kids(c)
        # Unset, the public URL (the tokens' issuer, the passkeys' origin) follows the port.
        issuer = jwt.decode(tokens["access_token"], options={"verify_signature": False})["iss"]
        assert issuer == f"http://localhost:{server.port}"
        kid = kid_of(tokens["access_token"])
        assert kids == [kid]

        server.stop()
        assert (workdir / "var" / "cloudmfa.db").is_file()
        assert sorted(p.name for p in workdir.iterdir()) == ["var"]

        server.start(same_port=True)
        with server.client() as c:
            again = log_in(c, email)
            assert kid_of(again["access_token"]) == kid
            assert jwks_kids(c) == [kid]
            me = c.get("/api/v1/me", headers=bearer(tokens["access_token"]))
            assert me.status_code == 200, me.text
            assert me.json()["id"] == account["id"]
    finally:
        server.kill()


# --- operator mistakes: one line, non-zero, no traceback --------------------------------


def test_serve_on_a_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(["serve", "--port", str(port)], cwd=tmp_path, env=clean_env())
    assert_one_line_error(result, "already in use", str(port))


@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_serve_with_an_unusable_tls_key_fails_in_one_line(tmp_path: Path, problem: str) -> None:
    cert, key = self_signed_cert(tmp_path)
    if problem == "missing":
        key.unlink()
    else:
        key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    args = ["serve", "--port", str(free_port()), "--tls-cert", str(cert), "--tls-key", str(key)]
    result = run_cli(args, cwd=tmp_path, env=clean_env())
    assert_one_line_error(result, "tls")


def test_serve_with_an_unknown_database_scheme_fails_in_one_line(tmp_path: Path) -> None:
    env = clean_env(CLOUDMFA_DATABASE_URL="mongodb://127.0.0.1/cloudmfa")
    result = run_cli(["serve", "--port", str(free_port())], cwd=tmp_path, env=env)
    assert_one_line_error(result, "CLOUDMFA_DATABASE_URL", "mongodb")


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"]])
def test_an_enabled_factor_type_this_release_lacks_fails_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    from cloudmfa.factors.registry import FACTORIES

    env = clean_env(CLOUDMFA_ENABLED_FACTORS="totp,yubico-otp,recovery")
    result = run_cli(command, cwd=tmp_path, env=env)
    # Every type API.md names is built, so a type outside them is what an operator can get
    # wrong: the one line names it and what may be chosen instead.
    assert_one_line_error(result, "CLOUDMFA_ENABLED_FACTORS", "yubico-otp", *FACTORIES)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("redis+sentinel://:hunter2@s1:26379", "names no service"),
        ("memcached://cache:11211", "must start with one of"),
    ],
)
def test_serve_with_an_unusable_redis_url_fails_in_one_line(
    tmp_path: Path, url: str, reason: str
) -> None:
    env = clean_env(CLOUDMFA_REDIS_URL=url)
    result = run_cli(["serve", "--port", str(free_port())], cwd=tmp_path, env=env)
    line = assert_one_line_error(result, "CLOUDMFA_REDIS_URL", reason)
    assert "hunter2" not in line


def test_serve_with_several_workers_but_no_redis_fails_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        ["serve", "--port", str(free_port()), "--workers", "2"], cwd=tmp_path, env=clean_env()
    )
    assert_one_line_error(result, "CLOUDMFA_REDIS_URL")


# --- HTTPS ---------------------------------------------------------------------------------


def test_serve_with_tls_answers_https_with_hsts(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server = Server(
        tmp_path, clean_env(), "--tls-cert", str(cert), "--tls-key", str(key), scheme="https"
    )
    try:
        server.start()
        with server.client() as c:
            r = c.get("/healthz")
            assert r.status_code == 200
            assert r.url.scheme == "https"
            assert "max-age=" in r.headers.get("strict-transport-security", ""), r.headers
            jwks = c.get("/.well-known/jwks.json")
            assert jwks.status_code == 200
            assert "strict-transport-security" in jwks.headers
    finally:
        server.kill()


# --- one shared server: create-admin, migrate, rotate-signing-key --------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A SQLite server under the `optional` MFA policy (administration still needs a second
    factor)."""
    workdir = tmp_path_factory.mktemp("shared")
    env = clean_env(CLOUDMFA_MFA_POLICY="optional")
    server = Server(workdir, env)
    try:
        server.start()
        yield server
    finally:
        server.kill()


ADMIN_PASSWORD = "granite-lantern-meadow-7731"  # ≥ 15 characters for the `optional` policy


def test_create_admin_creates_an_admin_and_grants_the_role_again_harmlessly(
    shared: Server,
) -> None:
    email = new_email("boss")
    first = run_cli(
        ["create-admin", email, "--password-stdin"],
        cwd=shared.workdir,
        env=shared.env,
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert email in first.stdout and "created" in first.stdout, first.stdout

    second = run_cli(
        ["create-admin", email, "--password-stdin"],
        cwd=shared.workdir,
        env=shared.env,
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert email in second.stdout, second.stdout

    with shared.client() as c:
        tokens = log_in(c, email, ADMIN_PASSWORD)
        me = c.get("/api/v1/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["roles"].count("admin") == 1, me.json()
        users = c.get("/api/v1/admin/users", headers=bearer(tokens["access_token"]))
        assert users.status_code == 403, users.text
        assert users.json()["code"] == "mfa_enrollment_required"
        tokens = sign_in_with_second_factor(c, email, ADMIN_PASSWORD)
        users = c.get("/api/v1/admin/users", headers=bearer(tokens["access_token"]))
        assert users.status_code == 200, users.text
        assert email in [u["email"] for u in users.json()["users"]]


def test_create_admin_adds_the_role_to_an_existing_account(shared: Server) -> None:
    email = new_email("promoted")
    with shared.client() as c:
        sign_up(c, email)
        token = sign_in_with_second_factor(c, email)["access_token"]
        before = c.get("/api/v1/admin/users", headers=bearer(token))
        assert before.status_code == 403, before.text
        assert before.json()["code"] == "forbidden"

        result = run_cli(
            ["create-admin", email, "--password-stdin"],
            cwd=shared.workdir,
            env=shared.env,
            stdin="ignored-for-an-existing-account\n",
        )
        assert result.returncode == 0, result.stderr
        assert "admin role" in result.stdout, result.stdout

        # Roles are read on every call, so the session already open is an admin's now.
        after = c.get("/api/v1/admin/users", headers=bearer(token))
        assert after.status_code == 200, after.text


def test_migrate_prints_the_head_revision(shared: Server) -> None:
    head = head_revision()
    assert head
    for _ in range(2):  # idempotent
        result = run_cli(["migrate"], cwd=shared.workdir, env=shared.env)
        assert result.returncode == 0, result.stderr
        assert head in result.stdout, result.stdout


def test_migrate_creates_a_fresh_database(tmp_path: Path) -> None:
    result = run_cli(["migrate"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert head_revision() in result.stdout, result.stdout
    assert (tmp_path / "var" / "cloudmfa.db").is_file()


def test_rotate_signing_key_publishes_both_keys_and_old_tokens_keep_working(
    shared: Server,
) -> None:
    email = new_email("rotor")
    with shared.client() as c:
        sign_up(c, email)
        old_token = log_in(c, email)["access_token"]
        old_kid = kid_of(old_token)
        assert old_kid in jwks_kids(c)

    result = run_cli(["rotate-signing-key"], cwd=shared.workdir, env=shared.env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    # A running server picks the new key up within 30 s; a restart does it at once.
    shared.restart()
    with shared.client() as c:
        kids = jwks_kids(c)
        assert len(kids) == 2, kids
        assert old_kid in kids
        new_token = log_in(c, email)["access_token"]
        new_kid = kid_of(new_token)
        assert new_kid != old_kid and new_kid in kids
        assert new_kid in result.stdout, result.stdout
        for token in (old_token, new_token):
            me = c.get("/api/v1/me", headers=bearer(token))
            assert me.status_code == 200, me.text


# --- PostgreSQL, Redis and two workers -----------------------------------------------------


def test_postgres_two_workers_refuse_a_logged_out_token_everywhere(tmp_path: Path) -> None:
    db = PgDatabase()
    run_sync(db.create())
    prefix = f"cloudmfa-cli-test-{uuid.uuid4().hex[:8]}:"
    # The operator's own metrics directory (serve keeps it): each worker's file is readable here.
    metrics_dir = tmp_path.parent / f"{tmp_path.name}-metrics"
    metrics_dir.mkdir()
    env = clean_env(
        CLOUDMFA_DATABASE_URL=db.url,
        CLOUDMFA_REDIS_URL=REDIS_URL,
        CLOUDMFA_REDIS_KEY_PREFIX=prefix,
        CLOUDMFA_MFA_POLICY="optional",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        CLOUDMFA_METRICS_TOKEN=METRICS_TOKEN,
    )
    server = Server(tmp_path, env, "--workers", "2")
    try:
        server.start()
        email = new_email()
        with server.client() as c:  # one keep-alive connection: one worker
            sign_up(c, email)
            token = log_in(c, email)["access_token"]
            assert c.get("/api/v1/me", headers=bearer(token)).status_code == 200

            # A fresh connection per request lands on either worker; each one accepts it...
            for _ in range(10):
                with server.client() as other:
                    r = other.get("/api/v1/me", headers=bearer(token))
                    assert r.status_code == 200, r.text

            logout = c.post("/api/v1/auth/logout", headers=bearer(token))
            assert logout.status_code == 204, logout.text

        # ...and after the logout on one of them, every one refuses it.
        attempts = 40
        for attempt in range(1, attempts + 1):
            with server.client() as other:
                r = other.get("/api/v1/me", headers=bearer(token))
                assert r.status_code == 401, r.text
                assert r.json()["code"] == "invalid_token"
                # Whichever worker answers the scrape counts every worker's refusals.
                assert other.get("/metrics").status_code == 401  # the token is set
                metrics = other.get("/metrics", headers=bearer(METRICS_TOKEN))
                assert metrics.status_code == 200
                assert refusals_counted(metrics.text) == attempt
                # The service's own metrics are summed over the workers too.
                assert 'cloudmfa_sign_ins_total{factor_type="none"} 1.0' in metrics.text
                assert 'cloudmfa_password_checks_total{outcome="signed_in"} 1.0' in metrics.text
                assert "cloudmfa_db_pool_capacity 60.0" in metrics.text  # 2 × (20 + 10)
        # Both workers gave some of the refusals (had one given them all, the test proved less).
        by_worker = refusals_by_worker(metrics_dir, tmp_path)
        assert len([n for n in by_worker if n > 0]) == 2, by_worker
        assert sum(by_worker) == attempts
    finally:
        server.kill()
        run_sync(db.drop())
        run_sync(drop_redis_prefix(prefix))


def refusals_by_worker(metrics_dir: Path, scratch: Path) -> list[int]:
    """Each worker's own count, from its own file in the multiprocess directory."""
    counts = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        alone = scratch / f"one-worker-{path.stem}"
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts.append(refusals_counted(generate_latest(registry).decode()))
    return counts


def refusals_counted(exposition: str) -> int:
    """The count of 401 answers to GET /api/v1/me in a Prometheus exposition."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels.get("route") == "/api/v1/me"
                and labels.get("status") == "401"
                and labels.get("method", "GET") == "GET"
            ):
                total += sample.value
    return int(total)
