"""The embedded broker's bookkeeping, through the channels of a server without a broker, on a
task.Clock: history expiry, the total history bytes cap, history size 0, and idle channels
keeping their epoch and offset."""

from twisted.internet import task

from zbifrost.channels import History
from zbifrost.channels.memory import MemoryBroker, MemoryPresence
from zbifrost.channels.node import Channels


class Subscriber:
    def __init__(self, client_id):
        self.client_id = client_id
        self.frames = []

    def send_frame(self, frame):
        self.frames.append(frame)
        return True

    deliver = send_frame


def _memory_channels(clock, history_max_bytes):
    """The channels of a server without a broker."""
    return Channels(MemoryBroker(clock, history_max_bytes), MemoryPresence())


def _result(deferred):
    results = []
    deferred.addCallback(results.append)
    return results[0]


def _resubscribe(backend, channel, epoch, offset):
    return _result(backend.subscribe(channel, Subscriber("c-late"), (epoch, offset)))


def test_history_expires_ttl_after_the_last_publish_but_epoch_and_offset_stay():
    clock = task.Clock()
    backend = _memory_channels(clock, 1 << 20)
    short = History(size=10, ttl=60)
    epoch = _result(backend.publish("news", "a", "c-1", short))["epoch"]
    clock.advance(59)
    _result(backend.publish("news", "b", "c-1", short))
    clock.advance(59)  # 118 s after the first publish, 59 s after the last
    assert len(_resubscribe(backend, "news", epoch, 0).missed) == 2
    clock.advance(1)
    missed_some = _resubscribe(backend, "news", epoch, 0)
    assert (missed_some.recovered, missed_some.missed, missed_some.epoch, missed_some.offset) == (False, (), epoch, 2)
    assert _resubscribe(backend, "news", epoch, 2).recovered is True
    assert backend.broker.history_bytes == 0


def test_past_the_bytes_cap_the_least_recently_published_channel_loses_its_oldest_messages_first():
    clock = task.Clock()
    probe = _memory_channels(clock, 1 << 20)
    _result(probe.publish("a", "x" * 100, "c-1"))
    frame_size = probe.broker.history_bytes
    backend = _memory_channels(clock, 3 * frame_size)
    epoch_a = _result(backend.publish("a", "x" * 100, "c-1"))["epoch"]
    _result(backend.publish("a", "y" * 100, "c-1"))
    epoch_b = _result(backend.publish("b", "z" * 100, "c-1"))["epoch"]
    assert backend.broker.history_bytes == 3 * frame_size
    _result(backend.publish("b", "w" * 100, "c-1"))
    assert backend.broker.history_bytes <= 3 * frame_size
    assert _resubscribe(backend, "a", epoch_a, 0).recovered is False
    assert len(_resubscribe(backend, "a", epoch_a, 1).missed) == 1
    assert len(_resubscribe(backend, "b", epoch_b, 0).missed) == 2


def test_history_size_zero_keeps_nothing():
    backend = _memory_channels(task.Clock(), 1 << 20)
    epoch = _result(backend.publish("live", 1, "c-1", History(size=0, ttl=300)))["epoch"]
    assert backend.broker.history_bytes == 0
    assert _resubscribe(backend, "live", epoch, 0).recovered is False


def test_an_idle_channel_keeps_its_epoch_and_offset_after_its_history_expired():
    clock = task.Clock()
    backend = _memory_channels(clock, 1 << 20)
    published = _result(backend.publish("idle", 1, "c-1", History(size=5, ttl=1)))
    clock.advance(10)
    _result(backend.publish("other", 1, "c-1", History(size=5, ttl=1)))  # sweeps the expired "idle"
    again = _result(backend.subscribe("idle", Subscriber("c-2")))
    assert (again.epoch, again.offset) == (published["epoch"], 1)
