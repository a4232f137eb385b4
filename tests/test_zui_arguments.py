"""Argument lists in zUI files are parsed as literals, never evaluated."""

import pytest

from zbifrost.zui.arguments import (
    ArgumentError,
    Placeholder,
    parse_arguments,
    placeholders_in_strings,
    substitute,
)


@pytest.mark.parametrize("text, values", [
    ("", []),
    ("  ", []),
    ('1, "a"', [1, "a"]),
    ("-2.5, +3, 'single'", [-2.5, 3, "single"]),
    ("true, false, null, True, False, None", [True, False, None, True, False, None]),
    ('[1, [2]], (3, 4), {"k": [5]}', [[1, [2]], [3, 4], {"k": [5]}]),
    ('"a, b", "(c)"', ["a, b", "(c)"]),
    ("zConv, zConv.email", [Placeholder(None), Placeholder("email")]),
])
def test_literals_become_values(text, values):
    assert parse_arguments(text) == values


@pytest.mark.parametrize("text", [
    "__import__('os').system('id')",
    "open('/etc/passwd')",
    "os.system",
    "1 + 1",
    "[x for x in ()]",
    "lambda: 1",
    "name",
    "b'bytes'",
    "1j",
    "{1: 'non-string key'}",
    "*[1, 2]",
    "key=1",
    "1), (2",
    "1) + _(2",
    "zConv.email.lower()",
    "-'text'",
])
def test_anything_but_a_literal_is_refused(text):
    with pytest.raises(ArgumentError):
        parse_arguments(text)


def test_placeholders_are_substituted_as_values_never_pasted_into_text():
    structure = parse_arguments('zConv.name, "Hello zConv.name", {"form": zConv, "list": [zConv.age]}')
    form = {"name": "Ada", "age": 36}
    assert substitute(structure, form) == ["Ada", "Hello zConv.name", {"form": form, "list": [36]}]


def test_substitution_copies_so_a_plugin_cannot_change_the_loaded_arguments():
    structure = parse_arguments("[1, 2]")
    copy = substitute(structure, None)
    copy[0].append(3)
    assert structure == [[1, 2]]


def test_yaml_written_arguments_turn_exact_zconv_strings_into_placeholders():
    assert placeholders_in_strings(["zConv", "zConv.email", "zConv is here", {"k": ["zConv.age"]}, 3]) == [
        Placeholder(None), Placeholder("email"), "zConv is here", {"k": [Placeholder("age")]}, 3]
