"""The application factory: ``create_app(settings)`` wires services, routers and middleware."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from cloudmfa import __version__
from cloudmfa.api import accounts, admin, auth, docs, factors, me, openapi, ops, problems, web
from cloudmfa.api.edge import EdgeMiddleware, Metrics
from cloudmfa.clock import Clock
from cloudmfa.config import Settings
from cloudmfa.delivery.providers import Providers
from cloudmfa.delivery.running import start_delivery
from cloudmfa.flows import audit_chain, maintenance
from cloudmfa.services import Services

log = logging.getLogger("cloudmfa")


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    services: Services | None = None,
    web_dist: Path | None = web.WEB_DIST,
    providers: Providers | None = None,
) -> FastAPI:
    """``providers`` replaces the configured delivery providers (tests)."""
    settings = settings or Settings()
    svc = services or Services.build(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        pruning = maintenance.start_pruning(svc)
        sealing = audit_chain.start_sealing(svc)
        delivery = start_delivery(svc, providers)
        try:
            yield
        finally:
            if delivery is not None:
                await delivery.stop()
            await audit_chain.stop_sealing(sealing)
            await maintenance.stop_pruning(pruning)
            await svc.close()

    app = FastAPI(
        title="cloudmfa",
        version=__version__,
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        docs_url=None,  # api/docs.py: Swagger UI from the package, not from a CDN
        redoc_url=None,
    )
    app.state.services = svc
    app.state.metrics = Metrics()
    problems.install(app)
    routers = (accounts.router, auth.router, me.router, factors.router, admin.router, ops.router)
    for router in routers:
        app.include_router(router)
    openapi.install(app, routers)
    app.include_router(docs.router)
    web.install(app, web_dist)  # the UI at `/`, when built (api/web.py)
    # The one middleware of ours, outside FastAPI's own: per-IP limit, body limit, headers,
    # metrics, last resort (api/edge.py).
    app.add_middleware(
        EdgeMiddleware,
        services=svc,
        max_body_bytes=settings.max_body_bytes,
        metrics=app.state.metrics,
        cors_origins=settings.cors_origins,
    )
    return app


def create_app_from_env() -> FastAPI:
    """The entry point ``cloudmfa serve`` hands to each server worker."""
    app = create_app(Settings())
    keep_startup_out_of_collections()
    return app


def keep_startup_out_of_collections() -> None:
    """What a worker has made by now (the modules, the app, its services) lives as long as the
    process, yet every full pass of the cyclic garbage collector walked all of it: passes of
    110-160 ms, during which the worker answered nothing (bench/README.md, "A million users").
    Garbage is collected first, then the rest is moved where the collector does not look."""
    gc.collect()
    gc.freeze()
