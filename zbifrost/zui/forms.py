"""zDialog forms: the `fields` of a zDialog, checked at load time, and the validation and
coercion of the values a client sends for them (docs/protocol.md section 5).

`parse_fields` refuses a malformed field list (unknown keys or types, bad bounds, a `pattern`
that does not compile) with a `ZuiError`; `validate` turns submitted values into a dict of
coerced values or raises `RequestError(invalid_input)` whose `details` name each field's
problem. Nothing here knows about connections or how the values arrived.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..messages import INVALID_INPUT, JSON, JSONValue, RequestError, quote
from .errors import ZuiError

TEXT_TYPES = frozenset({"string", "email", "password"})
NUMBER_TYPES = frozenset({"int", "float"})
FIELD_TYPES = TEXT_TYPES | NUMBER_TYPES | {"bool"}
FIELD_KEYS = frozenset({"name", "type", "required", "label", "min", "max", "pattern"})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class FieldProblem(ValueError):
    """One field's value is unusable; str() is the problem shown to the client."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "string"
    required: bool = True
    label: str | None = None
    minimum: float | None = None  # a number's value, or a text's length
    maximum: float | None = None
    pattern: re.Pattern[str] | None = None  # full match, text types only

    def describe(self) -> JSON:
        """What an `input_request` tells the client about this field."""
        return {"name": self.name, "type": self.type, "required": self.required, "label": self.label or self.name}

    def introspect(self) -> JSON:
        """`describe()` plus the constraints that are set."""
        info = self.describe()
        if self.minimum is not None:
            info["min"] = self.minimum
        if self.maximum is not None:
            info["max"] = self.maximum
        if self.pattern is not None:
            info["pattern"] = self.pattern.pattern
        return info

    def coerce(self, value: JSONValue) -> str | bool | int | float:
        """The value as this field's type, within its bounds. Raises FieldProblem."""
        if self.type in TEXT_TYPES:
            value = _text(value)
            self._check_bounds(len(value), "at least {} characters long", "at most {} characters long")
            if self.type == "email" and not _EMAIL.fullmatch(value):
                raise FieldProblem("must be an email address")
            if self.pattern is not None and not self.pattern.fullmatch(value):
                raise FieldProblem("does not have the expected format")
            return value
        if self.type == "bool":
            return _boolean(value)
        value = _integer(value) if self.type == "int" else _real(value)
        self._check_bounds(value, "at least {}", "at most {}")
        return value

    def _check_bounds(self, measure: float, too_small: str, too_large: str) -> None:
        if self.minimum is not None and measure < self.minimum:
            raise FieldProblem(f"must be {too_small.format(_shown(self.minimum))}")
        if self.maximum is not None and measure > self.maximum:
            raise FieldProblem(f"must be {too_large.format(_shown(self.maximum))}")


def _shown(number: float) -> float:
    return int(number) if float(number).is_integer() else number


def _text(value: JSONValue) -> str:
    if not isinstance(value, str):
        raise FieldProblem("must be text")
    return value


def _boolean(value: JSONValue) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FieldProblem("must be true or false")


def _integer(value: JSONValue) -> int:
    if isinstance(value, bool):
        raise FieldProblem("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise FieldProblem("must be a whole number")


def _real(value: JSONValue) -> float:
    if isinstance(value, bool):
        raise FieldProblem("must be a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise FieldProblem("must be a number") from None
    else:
        raise FieldProblem("must be a number")
    if not math.isfinite(number):
        raise FieldProblem("must be a finite number")
    return number


def _missing(value: JSONValue) -> bool:
    return value is None or value == ""


def validate(fields: tuple[Field, ...], values: JSONValue) -> dict[str, Any]:
    """The coerced form (every field present; an optional one left empty is None).

    Raises RequestError(invalid_input) with `details: {field: problem}` naming every field
    that is wrong, including names the form does not have.
    """
    if not isinstance(values, dict):
        raise RequestError(INVALID_INPUT, "The form values must be an object", details={})
    form: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field in fields:
        value = values.get(field.name)
        if _missing(value):
            if field.required:
                problems[field.name] = "is required"
            form[field.name] = None
            continue
        try:
            form[field.name] = field.coerce(value)
        except FieldProblem as problem:
            problems[field.name] = str(problem)
    known = {field.name for field in fields}
    for name in values:
        if name not in known:
            problems[quote(name)] = "is not a field of this form"  # client text: cut like any echo
    if problems:
        listed = ", ".join(sorted(problems))
        raise RequestError(INVALID_INPUT, f"Invalid input: {listed}", details=problems)
    return form


# -- load time ------------------------------------------------------------------------------

def parse_fields(spec: Any, line: int) -> tuple[Field, ...]:
    """The Fields of a zDialog's `fields` list. Raises ZuiError naming the line."""
    if not isinstance(spec, list) or not spec:
        raise ZuiError(f"line {line}: zDialog fields must be a non-empty list")
    fields: list[Field] = []
    names: set[str] = set()
    for index, raw in enumerate(spec, start=1):
        where = f"line {getattr(raw, 'line', line)}: zDialog field {index}"
        if not isinstance(raw, dict):
            raise ZuiError(f"{where} must be a mapping with at least a name")
        unknown = sorted(str(key) for key in raw if key not in FIELD_KEYS)
        if unknown:
            raise ZuiError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELD_KEYS))})")
        field = _parse_field(raw, where)
        if field.name in names:
            raise ZuiError(f"{where}: the name {field.name!r} is used twice")
        names.add(field.name)
        fields.append(field)
    return tuple(fields)


def _parse_field(raw: dict[Any, Any], where: str) -> Field:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ZuiError(f"{where}: name must be an identifier (letters, digits, _)")
    kind = raw.get("type", "string")
    if kind not in FIELD_TYPES:
        raise ZuiError(f"{where}: type {kind!r} is not one of {', '.join(sorted(FIELD_TYPES))}")
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise ZuiError(f"{where}: required must be true or false")
    label = raw.get("label")
    if label is not None and not isinstance(label, str):
        raise ZuiError(f"{where}: label must be a string")
    minimum, maximum = (_bound(raw, key, kind, where) for key in ("min", "max"))
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ZuiError(f"{where}: min is greater than max")
    pattern = raw.get("pattern")
    if pattern is not None:
        if kind not in TEXT_TYPES or not isinstance(pattern, str):
            raise ZuiError(f"{where}: pattern must be a string, on a string, email or password field")
        try:
            pattern = re.compile(pattern)
        except re.error as err:
            raise ZuiError(f"{where}: pattern {raw['pattern']!r} is not a valid regular expression ({err})") from None
    return Field(name=name, type=kind, required=required, label=label, minimum=minimum, maximum=maximum,
                 pattern=pattern)


def _bound(raw: dict[Any, Any], key: str, kind: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if kind == "bool":
        raise ZuiError(f"{where}: {key} makes no sense on a bool field")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ZuiError(f"{where}: {key} must be a number")
    if kind in TEXT_TYPES and (value < 0 or not float(value).is_integer()):
        raise ZuiError(f"{where}: {key} of a {kind} field is a length: a whole number, zero or more")
    return value
