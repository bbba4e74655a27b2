"""What a server worker loads: `serve` migrates once before its workers start, so a worker must
not pay for Alembic (about 11 MiB each, against a budget of 120 MiB per worker)."""

from __future__ import annotations

import subprocess
import sys


def test_the_app_does_not_import_alembic() -> None:
    code = "import sys, cloudmfa.app, cloudmfa.services; print('alembic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
