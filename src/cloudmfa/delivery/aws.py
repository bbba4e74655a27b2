"""What SES and SNS share: a boto3 client per provider, its calls run off the event loop, and how
an AWS error divides into transient and definitive.

boto3 clients are thread-safe; each provider has one, with a pool of connections and a thread
pool of the same size, so that dozens of concurrent sends neither queue on the event loop's
small default executor nor open a connection each. botocore retries nothing here: the chain
moves on to the next provider at once and the outbox retries later.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cloudmfa.delivery.base import DeliveryError, Message, MessageRejected, ProviderUnavailable
from cloudmfa.delivery.failures import is_transient_status, scrub

T = TypeVar("T")
CONCURRENT_CALLS = 32  # per provider: threads and pooled connections

# Error codes that pass with time (throttling and the service's own failures), whatever status
# they come with.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "KMSThrottling",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


class AwsCaller:
    """One boto3 client and the threads that call it."""

    def __init__(
        self,
        service: str,
        *,
        region: str | None,
        endpoint_url: str | None,
        timeout_s: float,
        ca_file: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import NoRegionError

        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 1},
            max_pool_connections=CONCURRENT_CALLS,
        )
        try:
            self.client: Any = boto3.client(
                service,
                region_name=region,
                endpoint_url=endpoint_url,
                config=config,
                verify=ca_file if ca_file else None,
            )
        except NoRegionError:
            raise ValueError(
                f"CLOUDMFA_AWS_REGION: {service} needs a region (or AWS_REGION / a profile's)"
            ) from None
        self._threads = ThreadPoolExecutor(
            max_workers=CONCURRENT_CALLS, thread_name_prefix=f"cloudmfa-{service}"
        )

    async def call(self, method: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(method, **kwargs))

    def close(self) -> None:
        self._threads.shutdown(wait=False)
        self.client.close()


def refusal(provider: str, exc: Exception, message: Message) -> DeliveryError:
    """How a botocore failure counts. Not an AWS answer at all (refused, timed out) is
    transient; no credentials is definitive, as is any 4xx but throttling."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = f"{code}" + (f" (HTTP {status})" if status else "")
        if error.get("Message"):
            reason += f": {scrub(str(error['Message']), message)}"
        if code in TRANSIENT_CODES or is_transient_status(status):
            return ProviderUnavailable(provider, reason)
        return MessageRejected(provider, reason)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return MessageRejected(provider, f"no AWS credentials: {exc}")
    if isinstance(exc, ConnectionError | HTTPClientError):  # refused, timed out, reset
        return ProviderUnavailable(provider, f"cannot reach AWS: {type(exc).__name__}")
    return ProviderUnavailable(provider, f"{type(exc).__name__}: {scrub(str(exc), message)}")
