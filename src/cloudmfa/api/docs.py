"""`/docs`: the OpenAPI document in Swagger UI, every file served by this service.

Swagger UI's script and stylesheet come from the `fastapi-offline` package (which ships them
as files, Swagger UI 5, for exactly this); the page and its start-up script are ours
(`docs_page/`). Nothing is loaded from elsewhere, so the page's Content-Security-Policy
(api/edge.py) allows only this origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from cloudmfa.errors import NotFound

router = APIRouter(include_in_schema=False)

_PAGE = files("cloudmfa.api.docs_page")
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css"}
_ASSET_MAX_AGE_S = 3600


@cache
def assets() -> dict[str, Traversable]:
    """The only files served under /docs/assets, by name: nothing else of the disk is
    reachable. Looked up at the first request for one: a worker that never serves /docs does not
    import the package that ships them."""
    swagger_ui = files("fastapi_offline") / "static"
    return {
        "swagger-ui-bundle.js": swagger_ui / "swagger-ui-bundle.js",
        "swagger-ui.css": swagger_ui / "swagger-ui.css",
        "init.js": _PAGE / "init.js",
    }


@router.get("/docs")
async def docs_page() -> HTMLResponse:
    """The page (its links are relative, so it works below a proxy's path prefix too)."""
    return HTMLResponse(_PAGE.joinpath("index.html").read_text())


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    asset = assets().get(name)
    if asset is None:
        raise NotFound("No such file.")
    path = Path(str(asset))
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES[path.suffix],
        headers={"Cache-Control": f"public, max-age={_ASSET_MAX_AGE_S}"},
    )
