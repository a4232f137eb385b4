"""The query cache: hits marked `_cached`, per-arguments entries, expiry, the LRU bound,
clear_cache and live statistics (over a real socket), and QueryCache itself with a fake clock."""


import pytest_twisted
from twisted.internet import reactor, task

from tests.helpers import start_engine
from zbifrost.cache import QueryCache
from zbifrost.testing import connect


@pytest_twisted.inlineCallbacks
def test_a_repeated_command_is_served_from_the_cache_and_marked_cached(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    other = yield connect(server.url)
    first = yield client.request_frame("dispatch", zKey="Cached Count")
    again = yield other.request_frame("dispatch", zKey="^Cached Count")
    assert "_cached" not in first
    assert again["_cached"] is True and again["result"] == first["result"]
    fresh = yield client.request_frame("dispatch", zKey="Cached Count", no_cache=True)
    assert "_cached" not in fresh and fresh["result"] == first["result"] + 1
    stats = (yield client.request("connection_info"))["cache_stats"]["query_cache"]
    assert stats == {"hits": 1, "misses": 1, "expired": 0, "size": 1}
    yield client.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_entries_are_per_arguments_and_data(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    one = yield client.request_frame("dispatch", zKey="Cached Echo", args=[1])
    two = yield client.request_frame("dispatch", zKey="Cached Echo", args=[2])
    with_data = yield client.request_frame("dispatch", zKey="Cached Echo", args=[1], data={"a": 1})
    assert [frame.get("_cached") for frame in (one, two, with_data)] == [None, None, None]
    assert two["result"] == {"args": [2], "data": None}
    assert (yield client.request_frame("dispatch", zKey="Cached Echo", args=[1]))["_cached"] is True
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_calls_with_large_arguments_run_uncached_so_one_client_cannot_fill_memory(make_server):
    from zbifrost.dispatcher import MAX_CACHED_ARGUMENTS

    server = yield start_engine(make_server)
    client = yield connect(server.url)
    big = ["x" * MAX_CACHED_ARGUMENTS]
    for _ in range(2):
        reply = yield client.request_frame("dispatch", zKey="Cached Echo", args=big)
        assert "_cached" not in reply and reply["result"]["args"] == big
    assert (yield client.request("cache_stats"))["query_cache"]["size"] == 0
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_an_entry_expires_after_its_ttl(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    first = yield client.request_frame("dispatch", zKey="Brief Cache")
    yield task.deferLater(reactor, 0.1, lambda: None)  # twice the 0.05 s ttl
    later = yield client.request_frame("dispatch", zKey="Brief Cache")
    assert "_cached" not in later and later["result"] == first["result"] + 1
    assert (yield client.request("cache_stats"))["query_cache"]["expired"] == 1
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_the_cache_keeps_at_most_cache_size_entries_dropping_the_least_recently_used(make_server):
    server = yield start_engine(make_server, cache_size=2)
    client = yield connect(server.url)
    for value in (1, 2, 3):
        yield client.dispatch("Cached Echo", args=[value])
    assert (yield client.request("cache_stats"))["query_cache"]["size"] == 2
    assert "_cached" not in (yield client.request_frame("dispatch", zKey="Cached Echo", args=[1]))
    assert (yield client.request_frame("dispatch", zKey="Cached Echo", args=[3]))["_cached"] is True
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_clear_cache_empties_it_and_stats_follow_live(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    first = yield client.dispatch("Cached Count")
    yield client.dispatch("Cached Echo")
    assert (yield client.request("clear_cache")) == {"cleared": 2}
    assert (yield client.request("cache_stats"))["query_cache"]["size"] == 0
    after = yield client.request_frame("dispatch", zKey="Cached Count")
    assert "_cached" not in after and after["result"] == first + 1
    yield client.close()


def test_query_cache_expires_by_its_clock_and_a_get_refreshes_recency():
    now = [100.0]
    cache = QueryCache(max_entries=2, clock=lambda: now[0])
    cache.put("a", 1, ttl=10)
    cache.put("b", 2, ttl=10)
    assert cache.get("a") == (True, 1)  # "a" is now the most recently used
    cache.put("c", 3, ttl=10)
    assert cache.get("b") == (False, None)
    now[0] = 110.0
    assert cache.get("a") == (False, None)
    assert cache.stats() == {"hits": 1, "misses": 2, "expired": 1, "size": 1}
