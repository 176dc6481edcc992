"""Retries for what can be replayed: unary calls, and a stream before its first audio chunk.

Only UNAVAILABLE and RESOURCE_EXHAUSTED-with-RetryInfo are retried (the proto's rule); the
server's RetryInfo delay wins over our own backoff. A deadline bounds all attempts together.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from whisperwire.client.errors import ServiceError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.25
    """Seconds before the second attempt when the server gave no RetryInfo."""
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delay(self, error: ServiceError, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (counting from 1)."""
        if error.retry_delay is not None:
            return error.retry_delay
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(backoff / 2, backoff)  # jitter spreads clients after an outage


NO_RETRY = RetryPolicy(max_attempts=1)


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def time_left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


async def with_retry(
    attempt: Callable[[float | None], Awaitable[T]],
    policy: RetryPolicy,
    deadline: float | None,
    what: str,
) -> T:
    """Run `attempt(timeout)` until it succeeds or fails in a way a retry cannot fix."""
    number = 1
    while True:
        try:
            return await attempt(time_left(deadline))
        except ServiceError as error:
            if not error.retryable or number >= policy.max_attempts:
                raise
            delay = policy.delay(error, number)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise
            log.info("%s failed (%s); retry %d in %.2f s", what, error, number, delay)
            await asyncio.sleep(delay)
            number += 1
