"""``cloudmfa worker``: deliver the messages `serve` queued (CLOUDMFA_DELIVERY=worker), as its
own process, scaled apart from the API. SIGTERM (or SIGINT) stops taking jobs and lets those
under way finish for a grace period; a message cut short is sent again after its lease."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from cloudmfa.cli.common import CliError, load_settings, run_async
from cloudmfa.config import Settings
from cloudmfa.logs import configure as configure_logging

log = logging.getLogger("cloudmfa.cli")


def cmd_worker(args: argparse.Namespace) -> None:
    from cloudmfa.cli.serve import _check_redis, _check_secret_keys
    from cloudmfa.delivery.providers import build_providers
    from cloudmfa.delivery.worker import QueueUnusable, open_queue

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.delivery != "worker":
        raise CliError(
            "CLOUDMFA_DELIVERY is not 'worker': serve delivers in-process and would not queue "
            "anything for this worker"
        )
    concurrency = args.concurrency or settings.delivery_concurrency
    if concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    try:
        open_queue(settings)  # the checks only; the worker opens its own
    except QueueUnusable as exc:
        raise CliError(str(exc)) from None
    assert settings.redis_url is not None
    _check_redis(settings.redis_url)
    _check_secret_keys(settings)
    try:
        build_providers(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    run_async(lambda: work(settings, concurrency), fast_loop=True)


async def work(settings: Settings, concurrency: int) -> None:
    from cloudmfa.delivery.providers import build_providers
    from cloudmfa.delivery.running import deliverer_for
    from cloudmfa.delivery.worker import open_queue, run_worker
    from cloudmfa.services import Services

    # No connections beyond the pool: each delivery holds one only for its claim and for the
    # record of its send, so at 32 sends at once the pool of 20 is enough, and the connections
    # a burst borrowed were closed when given back, opened again at the next (48 to 273 opened
    # while 3,000 queued messages drained; bench/README.md, "(g)").
    svc = Services.build(settings, db_burst=False)
    await svc.start()  # migrates first unless CLOUDMFA_AUTO_MIGRATE=false, as serve does
    providers = build_providers(settings)
    queue = open_queue(settings)
    log.info("delivery worker started, %d at once", concurrency)
    try:
        await run_worker(queue, deliverer_for(svc, providers), concurrency=concurrency)
    finally:
        await queue.disconnect()
        await providers.aclose()
        await svc.close()
        log.info("delivery worker stopped")


def register(sub: Any) -> None:
    worker = sub.add_parser(
        "worker",
        help="deliver queued messages (CLOUDMFA_DELIVERY=worker)",
        description="Deliver the codes and notices that serve queued on Redis "
        "(CLOUDMFA_DELIVERY=worker). Run as many as the sending rate needs.",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="messages sent at once (default CLOUDMFA_DELIVERY_CONCURRENCY)",
    )
    worker.set_defaults(func=cmd_worker)
