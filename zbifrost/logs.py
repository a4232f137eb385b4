"""Log observers for twistd's `--logger` option: `zbifrost.logs.json` and `zbifrost.logs.text`;
and the one escaping step that every log line goes through (docs/protocol.md section 7a).

`json` writes one JSON object per line: time, level, namespace, message (the formatted text),
the event's own fields (client_id, error_id, ...), and traceback when the event carries a
failure. `text` is twistd's usual text without twistd's own timestamp when it must go. Both
write to stdout and leave the time out when stdout is the systemd journal (JOURNAL_STREAM names
it), which stamps every line itself (the access log, zbifrost.web, then leaves out its own).
Built from twisted.logger's FileLogObserver, formatEvent and eventAsText; what an event holds is
decided where it is logged (tokens never are).

Any field may hold text a client chose (a token's header, a zKey, a channel name, an origin),
so observers see events only through `EscapingObserver`: every text field escaped and cut
(`escape`), the formatted message's control characters escaped, and so the exception message at
the end of a failure's traceback (the rest of a traceback is the server's own text, one frame a
line). It wraps both observers here, and under twistd without `--logger` twistd's own
(`escape_twistd_default`), so that no format lets a client forge a line or flood one.

`log_failure_with_id` is the one place an error id is made: the id a client's error reply
quotes (`command_failed`, POST /api/publish's 500) and the log line with the traceback carries.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
from twisted.logger import FileLogObserver, ILogObserver, Logger, LogLevel, eventAsText, formatEvent
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.python.reflect import safe_str
from zope.interface import implementer

from . import compat

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.logger import LogEvent

FIELD_LIMIT = 200  # characters of a field, escapes included, before its cut
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1

# keys of twisted.python.log's legacy events, which formatEvent already turns into the message
_LEGACY_KEYS = {"message", "format", "isError", "system", "time", "why", "failure"}


def stdout_is_the_journal() -> bool:
    """True when systemd connected stdout to the journal (JOURNAL_STREAM is "device:inode")."""
    try:
        status = os.fstat(sys.__stdout__.fileno())  # type: ignore[union-attr]  # None: AttributeError, caught
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{status.st_dev}:{status.st_ino}"


def log_failure_with_id(log: Logger, failure: Failure, format: str, **fields: Any) -> str:
    """Log `failure` with its traceback at error under a new error id (the event's `error_id`
    field, which `format` may show) and return the id, for the reply that quotes it."""
    error_id = uuid.uuid4().hex[:12]
    log.failure(format, failure, LogLevel.error, error_id=error_id, **fields)
    return error_id


def escape(text: str, limit: int | None = FIELD_LIMIT) -> str:
    """`text` fit for a log line: control characters (below U+0020, U+007F and the C1 range)
    written as `\\xNN`, and past `limit` characters (None: no limit) cut, with a marker saying
    how long the text was."""
    shown = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
    if limit is None or len(shown) <= limit:
        return shown
    cut = shown[:limit]
    broken = cut.rfind("\\", limit - 3)  # an escape cut in two goes whole
    return f"{cut if broken < 0 else cut[:broken]}...[cut: {len(text)} characters]"


def escaped(event: LogEvent) -> LogEvent:
    """A copy of `event` that cannot forge or flood a log line: its text fields escaped and cut,
    its message (as formatted from them) escaped whole, and its failure's exception message
    escaped and cut. `log_*` keys are the logging system's own and are kept."""
    copy = {key: escape(value) if isinstance(value, str) and not key.startswith("log_") else value
            for key, value in event.items()}
    copy.pop("log_flattened", None)  # formatted from the fields as they were
    failure = event.get("log_failure")
    if failure is None and event.get("isError") and isinstance(event.get("failure"), Failure):
        failure = event["failure"]  # twisted.python.log.err, whose text would hold the traceback
        message = copy.get("why") or "Unhandled Error"
    else:
        message = formatEvent(copy)
    copy["log_text"], copy["log_format"] = escape(message, limit=None), "{log_text}"
    if failure is not None:
        copy["log_failure"] = _with_escaped_message(failure)
    return copy


def _with_escaped_message(failure: Failure) -> Failure:
    """`failure`, or a copy of it whose value is its exception message escaped and cut: the one
    line of its traceback that may carry a client's text."""
    said = safe_str(failure.value)
    shown = escape(said)
    if shown == said:
        return failure
    copy = Failure(failure)  # a Failure of a Failure copies it, traceback included
    copy.value = shown  # type: ignore[assignment]  # a traceback shows the value as text: the escaped text
    return copy


@implementer(ILogObserver)
class EscapingObserver:
    """Hands `observer` the `escaped` copy of each event."""

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer

    def __call__(self, event: LogEvent) -> None:
        self.observer(escaped(event))


def escape_twistd_default(application: object, twistd_options: Mapping[str, Any] | None) -> None:
    """Under twistd without `--logger`, make twistd's own observer (stdout, `--logfile` or
    `--syslog`, as twistd chooses it: `compat.twistd_log_observer`) an `EscapingObserver`'s:
    twistd takes the application's ILogObserver when no `--logger` is given (twistd's application
    is a Componentized; a service parent of a test is not, and logs as it does)."""
    if twistd_options is None or twistd_options.get("logger") or not isinstance(application, Componentized):
        return
    application.setComponent(ILogObserver, EscapingObserver(compat.twistd_log_observer(twistd_options)))


def _as_json(event: LogEvent, stamped: bool) -> str:
    record: dict[str, Any] = {}
    if stamped:
        record["time"] = datetime.fromtimestamp(event["log_time"], timezone.utc).isoformat(timespec="milliseconds")
    level = event.get("log_level")
    record.update(level=level.name if level is not None else "info", namespace=event.get("log_namespace", "-"),
                  message=formatEvent(event))
    for key, value in event.items():
        if not key.startswith("log_") and key not in _LEGACY_KEYS and key not in record:
            record[key] = value
    failure = event.get("log_failure")  # a legacy event's too, once `escaped`
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return orjson.dumps(record, default=repr, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE).decode()


def json() -> EscapingObserver:
    """twistd --logger=zbifrost.logs.json: one JSON object per line on stdout."""
    stamped = not stdout_is_the_journal()
    return EscapingObserver(FileLogObserver(sys.stdout, lambda event: _as_json(event, stamped)))


def text() -> EscapingObserver:
    """twistd --logger=zbifrost.logs.text: twistd's text lines on stdout, without their
    timestamp when stdout is the journal."""
    stamped = not stdout_is_the_journal()
    return EscapingObserver(FileLogObserver(sys.stdout,
                                            lambda event: eventAsText(event, includeTimestamp=stamped) + "\n"))
