"""Write the service's OpenAPI document to a file, for openapi-typescript to turn into the UI's
types. Run with the project's virtualenv: `python web/scripts/dump_openapi.py web/openapi.json`.
Builds the app without starting it, so nothing is opened or written but the output file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cloudmfa.app import create_app
from cloudmfa.config import Settings

# A throwaway key ring and an in-memory database: building the app must not write a key file
# or a database into the working directory.
settings = Settings(  # type: ignore[call-arg]
    _env_file=None,
    secret_keys="build:" + "A" * 43 + "=",
    database_url="sqlite+aiosqlite:///:memory:",
)
document = create_app(settings).openapi()
Path(sys.argv[1]).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
