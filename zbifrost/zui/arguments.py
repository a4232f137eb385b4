"""Argument lists written in zUI files: `1, "a", [true, null], zConv.email` -> Python values.

The text is parsed (with `ast.parse`, the parser `ast.literal_eval` uses) and only literal
nodes are accepted: strings, numbers, `True`/`False`/`None` (and `true`/`false`/`null`),
lists, tuples (as lists) and dicts with string keys. Nothing is ever evaluated. The names
`zConv` and `zConv.<field>` become `Placeholder`s, replaced by the values of a zDialog's
form when the action runs (`substitute`): values go into the argument structure, never into
other strings.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

# An argument structure: literals, lists, dicts with string keys, and Placeholders anywhere in them.
Arguments = Any

_NAMED_CONSTANTS = {"true": True, "false": False, "null": None}
FORM = "zConv"


class ArgumentError(ValueError):
    """An argument list that is not made of literals."""


class Placeholder:
    """`zConv` (field None: the whole form) or `zConv.<field>` in an argument structure."""

    __slots__ = ("field",)

    def __init__(self, field: str | None) -> None:
        self.field = field

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placeholder) and other.field == self.field

    def __hash__(self) -> int:
        return hash(self.field)

    def __repr__(self) -> str:
        return FORM if self.field is None else f"{FORM}.{self.field}"

    def value(self, form: dict[str, Any]) -> Any:
        return dict(form) if self.field is None else form[self.field]


def parse_arguments(text: str) -> list[Arguments]:
    """The values of a comma-separated argument list (empty text: no arguments)."""
    if not text.strip():
        return []
    try:
        tree = ast.parse(f"_({text})", mode="eval")
    except SyntaxError as err:
        raise ArgumentError(f"cannot parse the arguments ({err.msg})") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_"):
        raise ArgumentError("cannot parse the arguments (unbalanced brackets?)")
    if call.keywords:
        raise ArgumentError("keyword arguments are not supported; pass a dict literal instead")
    return [_literal(node) for node in call.args]


def _literal(node: ast.expr) -> Arguments:
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (str, bool, int, float)):
            return node.value
    elif isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    elif isinstance(node, ast.Dict):
        keys = [_literal(key) if key is not None else None for key in node.keys]
        if not all(isinstance(key, str) for key in keys):
            raise ArgumentError("dict keys in arguments must be strings")
        return dict(zip(keys, (_literal(value) for value in node.values), strict=True))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _literal(node.operand)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.Name):
        if node.id in _NAMED_CONSTANTS:
            return _NAMED_CONSTANTS[node.id]
        if node.id == FORM:
            return Placeholder(None)
        raise ArgumentError(f"{node.id!r} is not a literal (quote strings)")
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == FORM:
        return Placeholder(node.attr)
    raise ArgumentError(f"only literals are allowed in arguments, not {ast.unparse(node)!r}")


def placeholders_in_strings(value: Arguments) -> Arguments:
    """YAML-written arguments (dict form `args: [...]`): the exact strings `zConv` and
    `zConv.<field>` become Placeholders; everything else is kept as is."""
    if isinstance(value, str):
        if value == FORM:
            return Placeholder(None)
        if value.startswith(FORM + ".") and value[len(FORM) + 1:].isidentifier():
            return Placeholder(value[len(FORM) + 1:])
        return value
    if isinstance(value, list):
        return [placeholders_in_strings(item) for item in value]
    if isinstance(value, dict):
        return {key: placeholders_in_strings(item) for key, item in value.items()}
    return value


def placeholders(value: Arguments) -> Iterator[Placeholder]:
    """Every Placeholder in an argument structure."""
    if isinstance(value, Placeholder):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from placeholders(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from placeholders(item)


def substitute(value: Arguments, form: dict[str, Any] | None) -> Arguments:
    """A copy of an argument structure with each Placeholder replaced by its form value."""
    if isinstance(value, Placeholder):
        return value.value(form)  # type: ignore[arg-type]  # a Placeholder is only loaded inside an onSubmit: a form
    if isinstance(value, list):
        return [substitute(item, form) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, form) for key, item in value.items()}
    return value
