"""When to try a request again, and how long to wait first.

Rate limits (429), overloaded or failing servers (5xx, 408), dropped connections and timeouts
are retried with exponential backoff and jitter, honouring ``Retry-After``; a swarm of hundreds
of sub-agents hitting one rate limit must spread out, not retry in lock-step. Other statuses
(400 bad request, 401 bad key, 404 unknown model) are the caller's to fix and fail at once.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4  # attempts after the first
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_backoff: float = 30.0

    def should_retry(self, attempt: int, status: int | None = None, error: BaseException | None = None) -> bool:
        if attempt >= self.max_retries:
            return False
        if error is not None:
            return isinstance(error, RETRY_ERRORS)
        return status in RETRY_STATUSES

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(hinted, self.max_backoff)
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base / 2 + random.uniform(0, base / 2)  # "equal jitter": never zero, never in lock-step


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
