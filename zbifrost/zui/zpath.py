"""zPaths: `@.zUI.level1` -> `<workspace>/zUI.level1.yaml`, never outside the workspace.

This module owns the mapping from a zPath to a file and the refusal of anything that would
leave the workspace (absolute segments, `..`, odd characters, symlinks pointing outside),
and the split of a plugin zPath (`@.plugins.mod.fn`) into a module path and a function
name (importing it is `zbifrost.zui.plugins`' job).
"""

from __future__ import annotations

import os
import re

EXTENSIONS = (".yaml", ".yml", ".json")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


class ZPathError(Exception):
    """A zPath that is malformed, leaves the workspace or names no file."""


class MissingZuiFile(ZPathError):
    """A well-formed zPath whose file does not exist. str() says `<workspace>` rather than the
    server's path, as clients may see it; `for_operator()` names the real folder searched."""

    def __init__(self, zpath: str, name: str, workspace: str, folders: list[str]) -> None:
        super().__init__(self._text(zpath, name, os.path.join("<workspace>", *folders)))
        self.folder = os.path.join(workspace, *folders)
        self._zpath, self._name = zpath, name

    @staticmethod
    def _text(zpath: str, name: str, folder: str) -> str:
        return f"zPath {zpath!r}: no zUI.{name}.yaml (or .yml/.json) in {folder}"

    def for_operator(self) -> str:
        return self._text(self._zpath, self._name, self.folder)


def split_zpath(zpath: object) -> tuple[list[str], str, list[str]]:
    """`@.apps.blog.zUI.main.Block` -> (["apps", "blog"], "main", ["Block"]).

    The segments before `zUI` are folders, the one after it names the file, the rest (used by
    `zLink(@.zUI.file.Block)`) is returned as is.
    """
    if not isinstance(zpath, str) or not zpath.startswith("@."):
        raise ZPathError(f"zPath {zpath!r} must start with '@.'")
    segments = zpath[2:].split(".")
    if "zUI" not in segments:
        raise ZPathError(f"zPath {zpath!r} has no 'zUI' segment")
    at = segments.index("zUI")
    folders, rest = segments[:at], segments[at + 1:]
    if not rest:
        raise ZPathError(f"zPath {zpath!r} names no file after 'zUI'")
    for segment in folders + rest[:1]:
        if not _SEGMENT.match(segment):
            raise ZPathError(f"zPath {zpath!r}: segment {segment!r} is not allowed")
    return folders, rest[0], rest[1:]


def inside(root: str, path: str) -> bool:
    """True when the real path of `path` is `root` or below it (root must be a real path)."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def zpath_to_file(workspace: str, zpath: str) -> str:
    """The file a zPath names (workspace must be a real path). Raises ZPathError."""
    folders, name, extra = split_zpath(zpath)
    if extra:
        raise ZPathError(f"zPath {zpath!r} has segments after the file name")
    base = os.path.join(workspace, *folders, f"zUI.{name}")
    for extension in EXTENSIONS:
        candidate = base + extension
        if os.path.isfile(candidate):
            if not inside(workspace, candidate):
                raise ZPathError(f"zPath {zpath!r} points outside the workspace")
            return candidate
    raise MissingZuiFile(zpath, name, workspace, folders)


def zui_files(folder: str) -> list[str]:
    """The names of the zUI files directly in `folder` (zUI.<name>.yaml/.yml/.json), sorted."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(filename for filename in names
                  if filename.startswith("zUI.") and filename.endswith(EXTENSIONS)
                  and _SEGMENT.match(os.path.splitext(filename)[0][4:])
                  and os.path.isfile(os.path.join(folder, filename)))


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def plugin_target(zpath: object) -> tuple[list[str], str]:
    """`@.plugins.reports.build` -> (["reports"], "build"): the module's path below
    `<workspace>/plugins/` and the function's name. Raises ZPathError.

    Every segment is a Python identifier (no `..`, no slashes, nothing absolute), and the
    function's name may not start with `_`.
    """
    if not isinstance(zpath, str) or not zpath.startswith("@.plugins."):
        raise ZPathError(f"plugin zPath {zpath!r} must start with '@.plugins.'")
    segments = zpath[len("@.plugins."):].split(".")
    if len(segments) < 2:
        raise ZPathError(f"plugin zPath {zpath!r} must name a module and a function: @.plugins.<module>.<function>")
    for segment in segments:
        if not _IDENTIFIER.match(segment):
            raise ZPathError(f"plugin zPath {zpath!r}: segment {segment!r} is not allowed")
    if segments[-1].startswith("_"):
        raise ZPathError(f"plugin zPath {zpath!r}: a function whose name starts with '_' is private")
    return segments[:-1], segments[-1]
