"""Action kinds: what a zUI key does when dispatched (PROTOCOL.md section 5).

Each kind is a small class built once at load time from the YAML value (`parse_action`) and
run per request with `run(ctx)`, which returns the result or a Deferred of it. A value of a
shape no kind accepts is refused at load time with a `ZuiError` naming the line, never at
request time. Nothing here reads messages or sockets.
"""


class ZuiError(Exception):
    """A zUI file (or a value in it) that cannot be loaded; str() names the file and line."""


DISPLAY_MESSAGE_EVENTS = frozenset({"text", "success", "info", "warning", "error", "header"})
DISPLAY_DATA_EVENTS = frozenset({"list", "json", "table"})


class MessageAction:
    """A plain string: the result is `{"message": <the string>}`."""

    kind = "message"
    __slots__ = ("result",)

    def __init__(self, text):
        self.result = {"message": text}

    def run(self, ctx):
        return self.result

    def introspect(self):
        return {}


class DisplayAction:
    """`{zDisplay: {event, ...}}`: a message with a level, or structured data to render."""

    kind = "display"
    __slots__ = ("result",)

    def __init__(self, spec, line):
        if not isinstance(spec, dict) or not isinstance(spec.get("event"), str):
            raise ZuiError(f"line {line}: zDisplay needs a mapping with a string 'event'")
        event = spec["event"]
        if event in DISPLAY_MESSAGE_EVENTS:
            if "content" not in spec:
                raise ZuiError(f"line {line}: zDisplay event {event!r} needs 'content'")
            self.result = {"message": spec["content"], "level": event}
        elif event in DISPLAY_DATA_EVENTS:
            self.result = {"display_event": event, "data": {k: v for k, v in spec.items() if k != "event"}}
        else:
            known = ", ".join(sorted(DISPLAY_MESSAGE_EVENTS | DISPLAY_DATA_EVENTS))
            raise ZuiError(f"line {line}: zDisplay event {event!r} is not one of {known}")

    def run(self, ctx):
        return self.result

    def introspect(self):
        return {}


def only_keys(mapping, allowed, line):
    """Refuse keys a dict action does not know (a typo must not pass silently)."""
    extra = sorted(str(key) for key in mapping if key not in allowed)
    if extra:
        raise ZuiError(f"line {line}: unknown key(s) {', '.join(extra)} beside {'/'.join(sorted(allowed))}")


def _display(mapping, line, _context):
    only_keys(mapping, {"zDisplay"}, line)
    return DisplayAction(mapping["zDisplay"], line)


# Dict actions: the key naming the kind -> a constructor taking (the mapping without its
# options, line, parse_context).
DICT_KINDS = {
    "zDisplay": _display,
}

# String actions: prefix -> a constructor taking (text, line, parse_context).
STRING_KINDS = {}


def parse_action(value, line, context):
    """Build the action for a YAML value (the value without its options)."""
    if isinstance(value, str):
        for prefix, build in STRING_KINDS.items():
            if value.startswith(prefix):
                return build(value, line, context)
        return MessageAction(value)
    if isinstance(value, dict):
        kinds = [key for key in value if key in DICT_KINDS]
        if len(kinds) != 1:
            expected = ", ".join(sorted(DICT_KINDS))
            raise ZuiError(f"line {line}: an action mapping needs exactly one of {expected}; got keys {sorted(map(str, value))}")
        return DICT_KINDS[kinds[0]](value, line, context)
    raise ZuiError(f"line {line}: an action must be a string or a mapping, not {type(value).__name__}")
