"""Plugin functions for the zUI engine tests: every calling style and context use."""

import itertools
import threading

from twisted.internet import defer

# Tests release these (through the loaded module) to let a blocking function return.
GATES = {"blocking": threading.Event(), "slow": threading.Event()}
_counter = itertools.count(1)


def add(a, b):
    return a + b


def identity(*values):
    return list(values)


def echo_args(ctx):
    return {"args": ctx.args, "data": ctx.data}


def next_count():
    return next(_counter)


async def async_double(value):
    return value * 2


def deferred_triple(value) -> defer.Deferred:
    return defer.succeed(value * 3)


@defer.inlineCallbacks
def inline_callbacks_quad(value):
    doubled = yield defer.succeed(value * 2)
    return doubled * 2


def describe_context(ctx):
    return {"user": ctx.user, "role": ctx.role, "client_id": ctx.client_id, "args": ctx.args,
            "data": ctx.data, "zHat": ctx.zHat, "thread": threading.current_thread() is not threading.main_thread()}


def count_with_progress(total, ctx):
    for done in range(1, total + 1):
        ctx.progress(done, total, label="Counting")
    ctx.display("text", content="counted")
    return {"counted": total}


async def display_on_reactor(ctx):
    ctx.progress(1, 1)
    ctx.display("json", value={"a": 1})
    return "shown"


def wait_for_gate(name):
    if not GATES[name].wait(timeout=30):
        raise RuntimeError("the test never opened the gate")
    return {"gate": name}


# Deferreds of `held` commands, in call order; tests fire them to finish those commands.
HELD = []


def held(value) -> defer.Deferred:
    waiting = defer.Deferred()
    HELD.append(waiting)
    return waiting.addCallback(lambda _: {"held": value})


def big(size):
    return "x" * size


def never_fires() -> defer.Deferred:
    return defer.Deferred()


def explode():
    raise ValueError("the plugin blew up on purpose")


def seen_so_far(ctx):
    return {"zHat": ctx.zHat}


def announce(channel, text, ctx):
    """A thread-run function publishing as the server (ctx.publish from a pool thread)."""
    payload = {"text": text, "by": ctx.user}
    ctx.publish(channel, payload)
    payload["text"] = "changed after the publish"  # what was published stays as it was
    return {"announced": channel}


async def announce_on_reactor(channel, ctx):
    ctx.publish(channel, "from the reactor")
    return {"announced": channel}


def announce_badly(ctx):
    ctx.publish("bad name!", 1)


async def announce_once(channel, ctx):
    """ctx.publish with an idempotency key: however often it runs, one message."""
    ctx.publish(channel, "once", idempotency_key="announce-once")
    return {"announced": channel}


def announce_with_a_bad_key(ctx):
    ctx.publish("news", 1, idempotency_key="no spaces allowed")
