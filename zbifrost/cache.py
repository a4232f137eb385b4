"""The query cache: command results kept for their `cache_ttl`, least recently used dropped first.

Keys are built by the dispatcher (file, block, key, args, data, role); values are results
already known to be JSON-encodable. No I/O; time comes from an injectable clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import overload

from .messages import JSONValue


class QueryCache:
    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, JSONValue]] = OrderedDict()  # key -> (expires_at, value)
        self.hits = self.misses = self.expired = 0
        self.ttl_override: float | None = None  # seconds set by `set_cache_ttl`, for every command that caches

    @overload
    def ttl_for(self, declared: float) -> float: ...
    @overload
    def ttl_for(self, declared: None) -> None: ...
    def ttl_for(self, declared: float | None) -> float | None:
        """The TTL a command caches with: None when it declares no caching, else the
        `set_cache_ttl` value when one was set (0: caching off), else its own `cache_ttl`."""
        if declared is None or self.ttl_override is None:
            return declared
        return self.ttl_override

    def get(self, key: Hashable) -> tuple[bool, JSONValue]:
        """(True, value) on a hit, (False, None) on a miss or an expired entry."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return False, None
        if entry[0] <= self._clock():
            del self._entries[key]
            self.expired += 1
            self.misses += 1
            return False, None
        self._entries.move_to_end(key)
        self.hits += 1
        return True, entry[1]

    def put(self, key: Hashable, value: JSONValue, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> int:
        removed = len(self._entries)
        self._entries.clear()
        return removed

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "expired": self.expired, "size": len(self._entries)}
