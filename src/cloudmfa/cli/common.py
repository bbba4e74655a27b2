"""What every command shares: one-line errors, the settings, running a coroutine.

Every failure a person can cause (a bad database URL, a port in use, an unreadable TLS key, a
weak password) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from pydantic import ValidationError

from cloudmfa.config import Settings
from cloudmfa.errors import CloudMFAError

T = TypeVar("T")


class CliError(Exception):
    """A problem to report in one line, then exit 1."""


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"cloudmfa: error: {message}", file=sys.stderr)
    sys.exit(code)


def load_settings() -> Settings:
    from cloudmfa.factors.registry import FactorTypeUnavailable, check_enabled

    try:
        settings = Settings()
        check_enabled(settings.enabled_factors)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # A check across settings (a model validator) has no field: its message names the
            # variables itself.
            text = err["msg"].removeprefix("Value error, ")
            if err["loc"]:
                text = "CLOUDMFA_" + "_".join(str(p) for p in err["loc"]).upper() + ": " + text
            problems.append(text)
        raise CliError("invalid configuration: " + "; ".join(problems)) from None
    except FactorTypeUnavailable as exc:
        raise CliError(f"invalid configuration: {exc}") from None
    return settings


def run_async(make: Callable[[], Awaitable[T]], *, fast_loop: bool = False) -> T:
    """Run a coroutine, turning database and policy failures into one-line errors.
    ``fast_loop``: on uvloop, as serve runs (the delivery worker: its sockets' system calls
    are most of its work, and uvloop's transports make them for less CPU)."""
    try:
        if fast_loop:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(make())  # type: ignore[arg-type]
        return asyncio.run(make())  # type: ignore[arg-type]
    except CloudMFAError as exc:
        raise CliError(exc.detail) from None
    except (OSError, ConnectionError) as exc:
        raise CliError(f"cannot reach the database: {exc}") from None
    except Exception as exc:  # driver errors have no common base class worth naming
        name = type(exc).__name__
        if type(exc).__module__.split(".")[0] in ("sqlalchemy", "asyncpg", "asyncmy"):
            message = str(exc).splitlines()[0] if str(exc) else name
            raise CliError(f"database error ({name}): {message}") from None
        raise
