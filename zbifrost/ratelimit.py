"""Per-connection message rate limiting (docs/protocol.md section 7).

Two token buckets filled by the same clock: the first (rate, burst) decides whether a message
is served; the second, four times as large and as fast, decides when a client that keeps
sending past its limit is closed. Pure arithmetic: no I/O, no timers.
"""

import time
from collections.abc import Callable

ALLOW, LIMITED, ABUSIVE = 0, 1, 2
ABUSE_FACTOR = 4


class RateLimiter:
    __slots__ = ("_rate", "_burst", "_tokens", "_abuse_tokens", "_last", "_clock")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = self._burst
        self._abuse_tokens = self._burst * ABUSE_FACTOR
        self._clock = clock
        self._last = clock()

    def check(self) -> int:
        """Count one message: ALLOW, LIMITED (reply rate_limited) or ABUSIVE (close 1008)."""
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        tokens = min(self._burst, self._tokens + elapsed * self._rate)
        abuse = min(self._burst * ABUSE_FACTOR, self._abuse_tokens + elapsed * self._rate * ABUSE_FACTOR)
        self._abuse_tokens = abuse - 1.0
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return ALLOW
        self._tokens = tokens
        return ABUSIVE if self._abuse_tokens < 0.0 else LIMITED
