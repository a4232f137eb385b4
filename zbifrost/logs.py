"""Log observers for twistd's `--logger` option: `zbifrost.logs.json` and `zbifrost.logs.text`.

`json` writes one JSON object per line: time, level, namespace, message (the formatted text),
the event's own fields (client_id, error_id, ...), and traceback when the event carries a
failure. `text` is twistd's usual text without twistd's own timestamp when it must go. Both
write to stdout and leave the time out when stdout is the systemd journal (JOURNAL_STREAM names
it), which stamps every line itself (the access log, zbifrost.web, then leaves out its own). Built from twisted.logger's FileLogObserver, formatEvent
and eventAsText; what an event holds is decided where it is logged (tokens never are).
"""

import os
import sys
from datetime import datetime, timezone

import orjson
from twisted.logger import FileLogObserver, eventAsText, formatEvent

# keys of twisted.python.log's legacy events, which formatEvent already turns into the message
_LEGACY_KEYS = {"message", "format", "isError", "system", "time", "why", "failure"}


def stdout_is_the_journal():
    """True when systemd connected stdout to the journal (JOURNAL_STREAM is "device:inode")."""
    try:
        status = os.fstat(sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{status.st_dev}:{status.st_ino}"


def _as_json(event, stamped):
    record = {}
    if stamped:
        record["time"] = datetime.fromtimestamp(event["log_time"], timezone.utc).isoformat(timespec="milliseconds")
    level = event.get("log_level")
    record.update(level=level.name if level is not None else "info", namespace=event.get("log_namespace", "-"),
                  message=formatEvent(event))
    for key, value in event.items():
        if not key.startswith("log_") and key not in _LEGACY_KEYS and key not in record:
            record[key] = value
    failure = event.get("log_failure") or event.get("failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return orjson.dumps(record, default=repr, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE).decode()


def json():
    """twistd --logger=zbifrost.logs.json: one JSON object per line on stdout."""
    stamped = not stdout_is_the_journal()
    return FileLogObserver(sys.stdout, lambda event: _as_json(event, stamped))


def text():
    """twistd --logger=zbifrost.logs.text: twistd's text lines on stdout, without their
    timestamp when stdout is the journal."""
    stamped = not stdout_is_the_journal()
    return FileLogObserver(sys.stdout, lambda event: eventAsText(event, includeTimestamp=stamped) + "\n")
