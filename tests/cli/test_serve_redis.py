"""``cloudmfa serve`` asks the configured Redis once before it starts its workers: a URL it
cannot use ends the command with one line on stderr, naming the variable and the reason (and
never the password), instead of workers that answer every request 503. The Sentinel and
Cluster forms against real ones are in tests/api/test_redis_sentinel.py and
test_redis_cluster.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REDIS_URL
from support import cloudmfa_command, free_port

pytestmark = pytest.mark.slow


def serve(tmp_path: Path, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env["CLOUDMFA_REDIS_URL"] = redis_url
    return subprocess.run(
        [*cloudmfa_command(), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloudmfa: error: CLOUDMFA_REDIS_URL: cannot use this Redis"), lines
    return lines[0]


def test_nothing_listening_ends_serve_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    line = one_line_error(serve(tmp_path, f"redis://:hunter2@127.0.0.1:{port}/0"))
    assert f"127.0.0.1:{port}" in line
    assert "hunter2" not in line
    assert not (tmp_path / "var").exists()  # nothing created before the refusal


def test_a_cluster_url_for_a_lone_server_ends_serve_in_one_line(tmp_path: Path) -> None:
    host_port = REDIS_URL.split("://", 1)[1].split("/", 1)[0]
    line = one_line_error(serve(tmp_path, f"redis+cluster://{host_port}"))
    assert "cluster" in line.lower()


def test_a_sentinel_url_with_no_sentinel_ends_serve_in_one_line(tmp_path: Path) -> None:
    line = one_line_error(serve(tmp_path, f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"))
    assert "no Sentinel answers with a master" in line
