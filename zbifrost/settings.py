"""What a setting is, and the one-line errors that every config section's parser shares.

A `Setting` declares one Config attribute: where it sits in the config file, its command-line
flag and environment variable (if any), whether SIGHUP applies it while running, how a raw value
(YAML, environment or flag) becomes a typed one (`parse`) and what the typed value must satisfy
(`check`). zbifrost.config declares every setting; the parsers of the sections shaped as
mappings or lists live with their owners (zbifrost.jwt_settings, zbifrost.channels.rules).
Nothing here reads a file or the environment, and nothing here imports the rest of zbifrost.
"""

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# (where, raw value, folder a relative path in it is relative to) -> the typed value; a
# ConfigError names `where`. The folder is the config file's, or "" (the working directory).
Parse = Callable[[str, Any, str], Any]
# (typed value, the whole merged Config) -> what is wrong with it, or None
Check = Callable[[Any, Any], str | None]


class ConfigError(Exception):
    """A setting is wrong; str(err) is one line meant for the operator."""


@dataclass(frozen=True)
class Setting:
    """One setting. The Config field holding it gives its type and default (zbifrost.config)."""

    key: str  # in the config file: "websocket.port" (section.key) or "zWorkspace" (top level)
    parse: Parse
    flag: str | None = None  # the twistd option, without its dashes
    short: str | None = None  # its one-letter form
    env: str | None = None  # the environment variable
    reloadable: bool = False  # SIGHUP applies a new value to the running server
    check: Check | None = None
    help: str = ""  # the flag's help line
    name: str = ""  # the Config attribute: filled in from the field

    @property
    def switch(self) -> bool:
        """Its flag takes no value: given means true."""
        return self.parse is boolean

    @property
    def repeatable(self) -> bool:
        """Its flag may be given several times, each adding one entry."""
        return self.parse is strings or self.parse is whole_strings

    @property
    def flag_label(self) -> str:
        """How a value given as a flag (or as a keyword of load_config's `overrides`) is named."""
        return "--" + (self.flag or self.name.replace("_", "-"))


def unknown_key(where: str, key: object, valid: Iterable[object]) -> str:
    """The one-line complaint about a key that is not in `valid`, suggesting the closest one."""
    names = [str(name) for name in valid]
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(names))}"
    return f"{where}: unknown key {key!r} ({hint})"


def check_mapping(where: str, raw: Any, keys: Sequence[str], example: str) -> None:
    """Refuse, with a one-line ConfigError, anything but a YAML mapping holding only `keys`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {example}")
    for key in raw:
        if key not in keys:
            raise ConfigError(unknown_key(where, key, keys))


# -- parsers of plain values ----------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def boolean(where: str, raw: Any, folder: str) -> bool:
    """true/false, or the words of an environment variable (1, yes, on, 0, no, off, empty)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where}: expected true or false, got {raw!r}")


def integer(where: str, raw: Any, folder: str) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{where}: expected a number, got {raw!r}")
    try:
        number = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected an integer, got {raw!r}") from None
    if isinstance(raw, float) and raw != number:
        raise ConfigError(f"{where}: expected an integer, got {raw!r}")
    return number


def number(where: str, raw: Any, folder: str) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{where}: expected a number, got {raw!r}")
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {raw!r}") from None


def text(where: str, raw: Any, folder: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    return raw


def optional_text(where: str, raw: Any, folder: str) -> str | None:
    """A string, or None (YAML's null: the setting's own default applies)."""
    return None if raw is None else text(where, raw, folder)


def path(where: str, raw: Any, folder: str) -> str:
    """A file or folder name; a relative one is relative to `folder` (the config file's)."""
    value = text(where, raw, folder)
    return os.path.join(folder, value) if value and folder else value


def optional_path(where: str, raw: Any, folder: str) -> str | None:
    return None if raw is None else path(where, raw, folder)


def strings(where: str, raw: Any, folder: str) -> list[str]:
    """A list of strings; a string is a comma-separated list (an environment variable)."""
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
    return list(raw)


def whole_strings(where: str, raw: Any, folder: str) -> list[str]:
    """A list of strings; one string is a list of itself, kept whole (a URL's commas are its own),
    and None (YAML's null) an empty one."""
    return strings(where, [] if raw is None else [raw] if isinstance(raw, str) else raw, folder)


# -- checks of plain values -----------------------------------------------------------------

def greater_than_zero(value: float, config: Any) -> str | None:
    return None if value > 0 else f"must be greater than zero, got {value}"


def zero_or_more(value: float, config: Any) -> str | None:
    return None if value >= 0 else f"must be zero or more, got {value}"


def between(low: int, high: int) -> Check:
    """The check of a number from `low` to `high`, both included."""

    def check(value: float, config: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}, got {value}"

    return check


def each(problem: Callable[[str], str | None]) -> Check:
    """The check of a list whose every entry must pass `problem(entry)`."""

    def check(value: list[str], config: Any) -> str | None:
        return next((found for found in map(problem, value) if found is not None), None)

    return check
