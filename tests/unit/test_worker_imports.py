"""What a server worker loads: `serve` migrates once before its workers start, so a worker must
not pay for Alembic (about 11 MiB each, against a budget of 120 MiB per worker), nor for what
only an enrolment uses (segno draws QR codes: ~1.5 MiB with its XML writer), nor for
py_webauthn before a passkey ceremony (with pyOpenSSL, ~6 MiB)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["alembic", "segno", "webauthn", "OpenSSL"])
def test_the_app_does_not_import(module: str) -> None:
    code = f"import sys, cloudmfa.app, cloudmfa.services; print({module!r} in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
