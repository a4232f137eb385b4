"""The chaos case with bifrost.js in Chromium (docs/protocol.md section 6a): pages whose
BifrostClient keeps a `chaos` subscription by its own reconnection and recovery, under the
publishers of tests/chaos.py, while their connections are cut without a close frame (through a
TCP relay that resets both sides) and redis-server is killed and restarted empty. Each page's
record goes through the same checker as the `websockets` subscribers of tests/test_chaos.py
(`chaos.check`), and the row joins the printed chaos table.

Chromium runs the `chaos` scenario of tests/browser/scenarios.mjs as a child process: it prints
the pages' positions every 100 ms (what `wait_until_caught_up` reads) and their records once
told `collect` on its stdin.
"""

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from tests import test_chaos
from tests.test_browser import ARTIFACTS, BROWSER_DIR, MISSING_BROWSER, NODE, SCENARIOS

from .chaos import ApiPublisher, WsPublisher, check, wait_until_caught_up

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING_BROWSER is not None, reason=MISSING_BROWSER or "")]

PAGES = 3
redis, table, zbifrost = test_chaos.redis, test_chaos.table, test_chaos.zbifrost  # its fixtures: the same table


class Relay:
    """A TCP relay on a free loopback port to `backends` (host, port), taken in turn for each
    connection; `cut()` ends every connection it carries with a reset on both sides."""

    def __init__(self, backends):
        self.backends = backends
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links = []  # [client socket, server socket, cut?]
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.backends[self.accepted % len(self.backends)])
            except OSError:
                if self.listener.fileno() == -1:
                    return
                continue
            self.accepted += 1
            link = [client, server, False]
            with self.lock:
                self.links.append(link)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(link, source, sink), daemon=True).start()

    @staticmethod
    def _pump(link, source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            if not link[2]:
                sink.shutdown(socket.SHUT_WR)
        if link[2]:  # closed once no thread is in a call on them: a socket with SO_LINGER 0 resets
            source.close()
            sink.close()

    def cut(self):
        with self.lock:
            links, self.links = self.links, []
        for link in links:
            link[2] = True
            for sock in link[:2]:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)  # wakes the pumps, which close them

    def close(self):
        self.listener.close()
        self.cut()


class Page:
    """One Chromium page as `wait_until_caught_up` sees a subscriber: its position and when it
    last got a message (from the scenario's state lines), then its record."""

    def __init__(self, name):
        self.name = name
        self.epoch = self.offset = None
        self.last_message = time.monotonic()
        self.connections = 0
        self.record = None

    def update(self, state):
        self.epoch, self.offset = state.get("epoch"), state.get("offset")
        self.last_message = time.monotonic() - state["quiet"]
        self.connections = state["connections"]

    @property
    def events(self):
        """The record in the checker's form (tests/chaos.py `Subscriber.events`)."""
        return [("message", event[1], tuple(event[2])) if event[0] == "message" else tuple(event)
                for event in self.record["events"]]


class Chromium:
    """The `chaos` scenario in a node child process, with `count` pages loaded from `url`."""

    def __init__(self, url, count):
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.pages = [Page(f"page{n}") for n in range(count)]
        self.subscribed = threading.Event()
        self.result = None
        self.process = subprocess.Popen([NODE, SCENARIOS, "chaos", url, ARTIFACTS, str(count)], cwd=BROWSER_DIR,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.reader = threading.Thread(target=self._read, name="chromium", daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            message = json.loads(line)
            if message.get("step") == "subscribed":
                self.subscribed.set()
            elif "state" in message:
                for page, state in zip(self.pages, message["state"], strict=True):
                    page.update(state)
            elif "result" in message:
                self.result = message["result"]

    def wait_subscribed(self, seconds=30):
        if not self.subscribed.wait(seconds):
            self.stop()
            raise AssertionError(f"the pages never subscribed:\n{self.process.stderr.read()}")

    def collect(self):
        """Every page's record; the browser is closed after."""
        self.process.stdin.write("collect\n")
        self.process.stdin.close()
        self.process.wait(30)
        self.reader.join(5)
        assert self.result is not None, f"the chaos scenario failed:\n{self.process.stderr.read()}"
        for page, record in zip(self.pages, self.result, strict=True):
            page.record = record
        return self.pages

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def test_bifrost_js_pages_in_chromium_through_cut_connections_and_an_emptied_redis(tmp_path, table, zbifrost,
                                                                                      redis):
    first, second = zbifrost(), zbifrost()
    relay = Relay([("127.0.0.1", first.port), ("127.0.0.1", second.port)])
    browser = Chromium(f"http://127.0.0.1:{relay.port}", PAGES)
    publishers = [WsPublisher("w0", [first.url]), WsPublisher("w1", [second.url]),
                  ApiPublisher("api", [first.port, second.port])]
    try:
        browser.wait_subscribed()
        for publisher in publishers:
            publisher.start()
        time.sleep(1)
        for _ in range(2):  # the pages reconnect after a backoff of 0.4-0.6 s
            relay.cut()
            time.sleep(1.2)
        redis.process.kill()
        redis.process.wait(10)
        relay.cut()  # they subscribe again while the broker is gone: broker_unavailable
        time.sleep(1)
        shutil.rmtree(redis.folder)
        os.mkdir(redis.folder)
        redis.start()
        for process in (first, second):
            process.wait_for(lambda health: health.get("broker") == "up")
        time.sleep(2)  # publications of the new epoch
        for publisher in publishers:
            publisher.stop()
        acks = [ack for publisher in publishers for ack in publisher.acks]
        assert acks, "nothing was acknowledged"
        wait_until_caught_up(browser.pages, publishers)
        pages = browser.collect()
    finally:
        browser.stop()
        relay.close()
    counts = {page.name: check(page.events, acks) for page in pages}
    total = {field: sum(getattr(found, field) for found in counts.values())
             for field in ("lost", "duplicates", "reorderings", "silent_gaps", "not_recovered")}
    table.append(("bifrost.js in Chromium: cuts, redis emptied", len(acks), total["lost"], total["duplicates"],
                  total["reorderings"], total["silent_gaps"], total["not_recovered"],
                  sum(page.record["connections"] - 1 for page in pages),
                  sum(publisher.retries for publisher in publishers)))
    with open(os.path.join(str(tmp_path), "events.json"), "w") as dump:  # for a failure's post-mortem
        json.dump({"acks": acks, "pages": {page.name: page.record for page in pages}}, dump)
    errors = [error for publisher in publishers for error in publisher.errors]
    errors += [error for page in pages for error in page.record["errors"]]
    assert not errors, errors
    assert (total["lost"], total["duplicates"], total["reorderings"], total["silent_gaps"]) == (0, 0, 0, 0), counts
    assert all(found.not_recovered for found in counts.values()), counts
    assert all(page.record["connections"] == 4 for page in pages), [page.record["connections"] for page in pages]
