"""Loading zUI files: every unknown or unsafe shape is refused when the file is loaded, with
the file and the line; zPaths, zLink targets and plugin imports never leave the workspace."""

import os
import textwrap

import pytest

from zbifrost.zui.actions import MAX_NESTING
from zbifrost.zui.errors import ZuiError
from zbifrost.zui.workspace import Workspace
from zbifrost.zui.zpath import ZPathError

PLUGIN = "def f(a=None, b=None):\n    return [a, b]\n\ndef with_ctx(ctx):\n    return ctx.user\n"


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "plugins").mkdir(parents=True)
    (root / "plugins" / "m.py").write_text(PLUGIN)
    (root / "zUI.other.yaml").write_text("There:\n  X: x\n")
    return root


def load(root, text, name="t"):
    (root / f"zUI.{name}.yaml").write_text(textwrap.dedent(text))
    return Workspace(str(root)).file(f"@.zUI.{name}")


def refused(root, text):
    with pytest.raises(ZuiError) as caught:
        load(root, text)
    return str(caught.value)


def test_every_action_kind_loads(workspace):
    zfile = load(workspace, """\
        root:
          A: plain
          B: {zDisplay: {event: info, content: hi}}
          C: zFunc(@.plugins.m.f, 1, "a")
          D: "&m.f(1)"
          E: {zFunc: "@.plugins.m.f", args: [1, 2], timeout: 2}
          F: zLink(Other)
          G: zLink(@.zUI.other.There)
          H: zBack
          I: {zWizard: {one: a, two: "&m.f()"}}
          J: {zDialog: {fields: [{name: n}], onSubmit: "zFunc(@.plugins.m.f, zConv.n, zConv)"}}
          K: "&m.with_ctx"
        Other:
          X: x
        """)
    kinds = {key: command.action.kind for key, command in zfile.blocks["root"].commands.items()}
    assert kinds == {"A": "message", "B": "display", "C": "function", "D": "function", "E": "function",
                     "F": "link", "G": "link", "H": "back", "I": "wizard", "J": "dialog", "K": "function"}


@pytest.mark.parametrize("body, line, problem", [
    ("  A: {zNope: 1}\n", 2, "needs exactly one of"),
    ("  A: {zFunc: '@.plugins.m.f', zLink: root}\n", 2, "needs exactly one of"),
    ("  A: 42\n", 2, "must be a string or a mapping"),
    ("  A: [1, 2]\n", 2, "must be a string or a mapping"),
    ("  A: zFunc(@.plugins.m.f, os.system('id'))\n", 2, "only literals"),
    ("  A: zFunc(@.plugins.m.f, a=1)\n", 2, "keyword arguments"),
    ("  A: zFunc(m.f)\n", 2, "expected zFunc(@.plugins"),
    ("  A: '&m.f(1'\n", 2, "expected &<module>.<function>"),
    ("  A: zLink(Nowhere)\n", 2, "not a block of this file"),
    ("  A: zLink(@.zUI.other.Nowhere)\n", 2, "has no block 'Nowhere'"),
    ("  A: zLink(@.zUI.missing.B)\n", 2, "no zUI.missing.yaml"),
    ("  A: '&m.missing()'\n", 2, "no function 'missing'"),
    ("  A: '&nomodule.f()'\n", 2, "plugins/nomodule.py: no such file"),
    ("  A: '&m.f(1, 2, 3)'\n", 2, "cannot take 3 argument(s)"),
    ("  A: '&m._private()'\n", 2, "private"),
    ("  A: {zFunc: '@.plugins.m.f', args: 1}\n", 2, "args must be a list"),
    ("  A: zFunc(@.plugins.m.f, zConv)\n", 2, "only defined inside a zDialog"),
    ("  A:\n    zDialog:\n      fields: [{name: n}]\n      onSubmit: zFunc(@.plugins.m.f, zConv.x)\n", 5,
     "has no field 'x'"),
    ("  A: {zDialog: {fields: [{name: n}]}}\n", 2, "needs onSubmit"),
    ("  A:\n    zDialog:\n      fields:\n        - {name: n, pattern: '('}\n      onSubmit: ok\n", 5,
     "not a valid regular expression"),
    ("  A: {zLink: root, cache_ttl: 5}\n", 2, "cache_ttl cannot be used on a link"),
    ("  A: {zDialog: {fields: [{name: n}], onSubmit: ok}, cache_ttl: 5}\n", 2, "cache_ttl cannot be used"),
    ("  zBack: Back we go\n", 2, "reserved for going back"),
    ("  A: {zWizard: {}}\n", 2, "zWizard needs a mapping"),
    ("  A: {zWizard: {s: {zNope: 1}}}\n", 2, "needs exactly one of"),
    ("  A: {zFunc: '@.plugins.m.f', timeout: -1}\n", 2, "timeout must be a number greater than zero"),
])
def test_a_bad_action_is_refused_at_load_time_with_the_file_and_line(workspace, body, line, problem):
    message = refused(workspace, "root:\n" + body)
    assert message.startswith(f"zUI file zUI.t.yaml, line {line}:"), message
    assert problem in message


def test_wizards_nested_too_deep_are_refused(workspace):
    value = "done"
    for _ in range(MAX_NESTING + 1):
        value = f"{{zWizard: {{step: {value}}}}}"
    assert "nested more than" in refused(workspace, f"root:\n  A: {value}\n")
    shallow = "done"
    for _ in range(MAX_NESTING):
        shallow = f"{{zWizard: {{step: {shallow}}}}}"
    assert load(workspace, f"root:\n  A: {shallow}\n").blocks["root"].find("A").action.kind == "wizard"


def test_a_wizard_that_contains_itself_through_a_yaml_alias_is_refused(workspace):
    message = refused(workspace, "root:\n  A: &self {zWizard: {again: *self}}\n")
    assert message.startswith("zUI file zUI.t.yaml, line")


def test_links_between_two_files_in_a_cycle_load(workspace):
    (workspace / "zUI.ping.yaml").write_text("P:\n  Go: zLink(@.zUI.pong.Q)\n")
    (workspace / "zUI.pong.yaml").write_text("Q:\n  Go: zLink(@.zUI.ping.P)\n")
    assert Workspace(str(workspace)).file("@.zUI.ping").blocks["P"].find("Go").action.zvafile == "@.zUI.pong"


@pytest.mark.parametrize("target", [
    "@.zUI..secret.B",
    "@./etc.zUI.passwd.B",
    "@.../outside.zUI.x.B",
    "@.zUI.other/../../x.B",
    "@.a b.zUI.x.B",
    "@.zUI.other.There.Extra",
    "@.nozui.other",
])
def test_zlink_targets_that_leave_the_workspace_or_are_malformed_are_refused(workspace, target):
    message = refused(workspace, f"root:\n  A: zLink({target})\n")
    assert message.startswith("zUI file zUI.t.yaml, line 2: zLink target refused:"), message


@pytest.mark.parametrize("target", ["@.plugins.m", "@.plugins..m.f", "@.plugins.m/../x.f", "@.other.m.f",
                                    "@.plugins.m.f-g"])
def test_zfunc_targets_outside_plugins_or_malformed_are_refused(workspace, target):
    message = refused(workspace, f"root:\n  A: zFunc({target})\n")
    assert message.startswith("zUI file zUI.t.yaml, line 2:"), message


def test_a_zui_file_symlinked_from_outside_is_refused(workspace, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "zUI.evil.yaml").write_text("B:\n  X: stolen\n")
    os.symlink(outside / "zUI.evil.yaml", workspace / "zUI.evil.yaml")
    message = refused(workspace, "root:\n  A: zLink(@.zUI.evil.B)\n")
    assert "points outside the workspace" in message
    with pytest.raises(ZPathError, match="points outside the workspace"):
        Workspace(str(workspace)).file("@.zUI.evil")


def test_a_plugin_symlinked_from_outside_the_plugins_folder_is_refused(workspace, tmp_path):
    (tmp_path / "evil.py").write_text("def f():\n    return 'stolen'\n")
    os.symlink(tmp_path / "evil.py", workspace / "plugins" / "evil.py")
    (workspace / "helpers.py").write_text("def f():\n    return 'not a plugin'\n")
    os.symlink(workspace / "helpers.py", workspace / "plugins" / "helpers.py")
    assert "plugins/evil.py: points outside <workspace>/plugins" in refused(workspace, "root:\n  A: '&evil.f()'\n")
    assert "points outside <workspace>/plugins" in refused(workspace, "root:\n  A: '&helpers.f()'\n")


def test_a_plugins_folder_symlinked_from_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.py").write_text(PLUGIN)
    root = tmp_path / "ws"
    root.mkdir()
    os.symlink(outside, root / "plugins")
    assert "the plugins folder leaves the workspace" in refused(root, "root:\n  A: '&m.f()'\n")


def test_a_plugin_that_does_not_import_is_refused_with_its_file_and_line(workspace):
    (workspace / "plugins" / "broken.py").write_text("x = 1\ndef f(:\n")
    message = refused(workspace, "root:\n  A: '&broken.f()'\n")
    assert message.startswith("zUI file zUI.t.yaml, line 2:")
    assert "plugin plugins/broken.py, line 2: SyntaxError" in message


def test_plugins_are_not_importable_by_their_plain_name(workspace):
    import sys

    load(workspace, "root:\n  A: '&m.f()'\n")
    assert "m" not in sys.modules or not getattr(sys.modules["m"], "__file__", "").startswith(str(workspace))
    assert str(workspace / "plugins") not in sys.path
