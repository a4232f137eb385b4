"""bench/client.py --receive: publish `count` publications on `channel` as fast as the server can.

Each publication's data is its sequence number (1, 2, ...), so that the subscriber can check
that every one arrives, once, in order. They go through `ctx.publish`, the public publish API,
CHUNK per reactor turn, so that the sends of one turn go out while the next turn publishes.
The reply says how long publishing took: the server's own rate, to set against the reader's.
"""

import time

from twisted.internet import reactor, task

CHUNK = 1000


async def flood(ctx):
    channel, count = ctx.args
    started = time.perf_counter()
    for first in range(1, count + 1, CHUNK):
        for number in range(first, min(first + CHUNK, count + 1)):
            ctx.publish(channel, number)
        await task.deferLater(reactor, 0, lambda: None)
    return {"published": count, "seconds": time.perf_counter() - started}
