"""The service's log: one format for its own lines and uvicorn's, `console` (readable) or
`json` (one object per line), each line of a request naming its request id.

Everything logs through the standard library (`logging.getLogger(...)`); structlog's
`ProcessorFormatter` renders every record, whoever wrote it, so uvicorn's start-up and error
lines come out in the same form as ours. The request id travels in a context variable that the
edge middleware (api/edge.py) sets for the request's task, and the formatter reads for every
line logged while it runs.

No line holds a password, code, secret or token: the access line carries the path without its
query, the route template, the status, the latency and the user's id.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["console", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("cloudmfa_request_id", default=None)

# What the access line (api/edge.py) passes as `extra`; no other record attribute is copied,
# so nothing a library attaches to its records (uvicorn's `color_message`) reaches the output.
ACCESS_FIELDS = ("method", "path", "route", "status", "latency_ms", "user_id", "client")


def _add_request_id(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


ACCESS_LOGGER = "cloudmfa.access"


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, with a short way for the access line in JSON: one per request,
    it is built here directly (the same keys and values the processors would give it) rather
    than by copying the record and running the chain, which costs a request several times as
    much (bench/micro.py, "The edge middleware")."""

    def __init__(self, *, json_access: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.json_access = json_access

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_access or record.name != ACCESS_LOGGER or record.exc_info:
            return super().format(record)
        line: dict[str, Any] = {
            "event": record.getMessage(),
            "timestamp": _utc_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        fields = record.__dict__
        for name in ACCESS_FIELDS:
            if name in fields:
                line[name] = fields[name]
        return json.dumps(line)


def _utc_iso(created: float) -> str:
    """As structlog's TimeStamper(fmt="iso", utc=True) writes it: 2026-12-02T08:17:38.716113Z."""
    moment = datetime.fromtimestamp(created, UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def formatter(log_format: LogFormat = "console") -> structlog.stdlib.ProcessorFormatter:
    """The formatter of every handler; named in the dictConfig of `logging_config`."""
    pre_chain: list[Processor] = [
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_request_id,
        structlog.stdlib.ExtraAdder(allow=ACCESS_FIELDS),
    ]
    last: list[Processor]
    if log_format == "json":
        last = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # The standard library's traceback: structlog would use rich's where installed, which
        # prints each frame's local variables (a password among them, perhaps).
        last = [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    return _Formatter(
        json_access=log_format == "json",
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
    )


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the service and uvicorn (each `serve` worker applies
    it): one stderr handler, this module's formatter. uvicorn's own access line is off; the
    edge middleware writes one line per request instead, with the request id, route and user."""
    level = level.upper()
    handler = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cloudmfa": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "cloudmfa",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "cloudmfa": handler,
            "uvicorn": handler,
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure(level: str = "info", log_format: LogFormat = "console") -> None:
    """Apply `logging_config` in this process (the CLI's other commands)."""
    import logging.config

    logging.config.dictConfig(logging_config(level, log_format))


access_log = logging.getLogger(ACCESS_LOGGER)
