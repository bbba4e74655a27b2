"""A serving worker keeps what it made at startup out of the garbage collector's passes."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_worker_freezes_what_startup_made() -> None:
    # In a fresh process: freezing in this one would keep every test's garbage for good.
    child = textwrap.dedent(
        """
        import gc, os, tempfile
        os.environ["CLOUDMFA_DATA_DIR"] = tempfile.mkdtemp()
        from cloudmfa.app import create_app_from_env
        before = gc.get_freeze_count()
        app = create_app_from_env()
        frozen = gc.get_freeze_count()
        # the app's own objects are among the frozen: not in any generation the collector scans
        scanned = {id(o) for o in gc.get_objects()}
        print(before, frozen, id(app) in scanned)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, check=True, timeout=120
    )
    before, frozen, app_scanned = done.stdout.split()
    assert int(before) == 0
    assert int(frozen) > 100_000  # the modules, the app and its services
    assert app_scanned == "False"
