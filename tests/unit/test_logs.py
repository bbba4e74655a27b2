"""The log formats (logs.py): JSON objects with the request's id, readable console lines, and
tracebacks that never show a frame's local variables."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cloudmfa.logs import REQUEST_ID, LogFormat, formatter

SECRET = "plum-orbit-velvet-canyon-42"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("cloudmfa.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)


def fails_holding_a_secret(password: str) -> None:
    also_secret = password.upper()
    raise ValueError("boom: " + str(len(also_secret)))


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_traceback_shows_no_local_variable(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler], log_format: LogFormat
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(formatter(log_format))
    try:
        fails_holding_a_secret(SECRET)
    except ValueError:
        logger.exception("it failed")
    output = stream.getvalue()
    assert "fails_holding_a_secret" in output and "boom: 27" in output
    assert SECRET not in output and SECRET.upper() not in output


def test_json_lines_carry_the_request_id_and_the_access_fields(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(formatter("json"))
    token = REQUEST_ID.set("req-1")
    try:
        logger.info("request", extra={"route": "/x", "status": 200, "color_message": "no"})
        logger.warning("within %s", "the request")
    finally:
        REQUEST_ID.reset(token)
    logger.info("after it")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "request" and first["route"] == "/x" and first["status"] == 200
    assert "color_message" not in first  # only the access line's own fields are copied
    assert first["request_id"] == second["request_id"] == "req-1"
    assert second["event"] == "within the request" and second["level"] == "warning"
    assert "request_id" not in third
    assert first["timestamp"].endswith("Z")


def test_console_lines_are_one_readable_line(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(formatter("console"))
    token = REQUEST_ID.set("req-2")
    try:
        logger.info("request", extra={"route": "/healthz", "status": 200})
    finally:
        REQUEST_ID.reset(token)
    (line,) = stream.getvalue().splitlines()
    assert "[info" in line and "request" in line and "request_id=req-2" in line
    assert "status=200" in line and "\x1b[" not in line
