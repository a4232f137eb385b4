"""Plugin functions of the bundled demo (zUI.demo.yaml): one of each way a function can run."""

import time


def greet(name):
    """A plain function: it runs in a pool thread."""
    return {"message": f"Hello, {name}!"}


def add(a, b):
    return a + b


def import_records(count, ctx):
    """A slow plain function reporting progress to the asking client as it goes."""
    for done in range(1, count + 1):
        time.sleep(0.2)
        ctx.progress(done, count, label="Importing")
    return {"imported": count}


async def who_am_i(ctx):
    """An `async def` function: it runs on the reactor and reads the request context."""
    return {"user": ctx.user, "role": ctx.role, "client_id": ctx.client_id}


def server_time():
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S")}


def summarize(ctx):
    """The wizard's last step: the earlier steps' results arrive as ctx.zHat."""
    return {"steps_before": len(ctx.zHat), "results": ctx.zHat}


def register(username, form):
    """The Sign Up form's onSubmit: the validated form (zConv) and one of its fields."""
    return {"registered": username, "form": form}
