"""Operations endpoints: liveness, readiness, metrics, the JWKS."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cloudmfa.api.deps import ServicesDep
from cloudmfa.api.schemas import problem_responses
from cloudmfa.errors import InvalidToken, Unavailable
from cloudmfa.security.tokens import JWKS_MAX_AGE_S

router = APIRouter(tags=["operations"])
# A store that accepts connections but does not answer (a hung server, a dropped network path)
# is down too: the probe answers 503 in this time rather than hang until the prober gives up.
READINESS_TIMEOUT_S = 2
log = logging.getLogger("cloudmfa.api")


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 while the process answers; touches nothing else."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness", responses=problem_responses(503))
async def readyz(svc: ServicesDep) -> dict[str, str]:
    """200 when the database (and Redis, when configured) answer, else 503 `unavailable`."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await svc.check_database()
    except Exception as exc:
        log.warning("readiness: database unavailable: %s", type(exc).__name__)
        raise Unavailable("The database does not answer.") from None
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await svc.ephemeral.ping()
    except Exception as exc:
        log.warning("readiness: ephemeral store unavailable: %s", type(exc).__name__)
        raise Unavailable("Redis does not answer.") from None
    return {"status": "ready"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **problem_responses(401),
    },
)
async def metrics(request: Request, svc: ServicesDep) -> Response:
    """Request counts and latencies by route, sign-ins, second-factor checks, codes sent,
    refusals and pool use, summed over the instance's worker processes. Needs
    `Authorization: Bearer <CLOUDMFA_METRICS_TOKEN>` when that is set (else 401)."""
    expected = svc.settings.metrics_token
    if expected is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Compared in constant time, as bytes (compare_digest refuses non-ASCII str).
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.get_secret_value().encode()
        ):
            raise InvalidToken("/metrics needs the metrics token as a Bearer token.")
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/.well-known/jwks.json", summary="Token signing keys (JWKS)")
async def jwks(svc: ServicesDep, response: Response) -> dict[str, Any]:
    """The public keys that verify access tokens (RFC 7517)."""
    if svc.tokens.ring.needs_reload():
        await svc.reload_keys()
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_S}"
    return svc.tokens.ring.jwks()
