"""Operations endpoints: liveness, readiness, metrics, the JWKS."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cloudmfa.api.deps import ServicesDep
from cloudmfa.api.schemas import problem_responses
from cloudmfa.errors import Unavailable
from cloudmfa.security.tokens import JWKS_MAX_AGE_S

router = APIRouter(tags=["operations"])
log = logging.getLogger("cloudmfa.api")


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 while the process answers; touches nothing else."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness", responses=problem_responses(503))
async def readyz(svc: ServicesDep) -> dict[str, str]:
    """200 when the database (and Redis, when configured) answer, else 503 `unavailable`."""
    try:
        await svc.check_database()
    except Exception as exc:
        log.warning("readiness: database unavailable: %s", type(exc).__name__)
        raise Unavailable("The database does not answer.") from None
    try:
        await svc.ephemeral.ping()
    except Exception as exc:
        log.warning("readiness: ephemeral store unavailable: %s", type(exc).__name__)
        raise Unavailable("Redis does not answer.") from None
    return {"status": "ready"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Request counts and latencies by route, summed over the instance's worker processes."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/.well-known/jwks.json", summary="Token signing keys (JWKS)")
async def jwks(svc: ServicesDep, response: Response) -> dict[str, Any]:
    """The public keys that verify access tokens (RFC 7517)."""
    if svc.tokens.ring.needs_reload():
        await svc.reload_keys()
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_S}"
    return svc.tokens.ring.jwks()
