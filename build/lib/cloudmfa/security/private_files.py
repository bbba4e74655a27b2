"""Files and directories holding the service's state (the SQLite database and its WAL, the key
file) are created readable by the service's user alone, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create the directory owner-only (missing parents get the usual mode). One that exists
    is left as its owner set it up."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def create_private_file(path: Path) -> None:
    """Create an empty owner-only file unless one exists. SQLite gives the WAL, shared-memory
    and journal files it creates beside a database the database file's permissions."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
