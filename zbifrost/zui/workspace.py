"""The workspace: the folder of zUI files and plugins, each loaded once and kept until it changes.

`Workspace.file(zpath)` answers from memory (the `schema_cache` feature); `refresh()`, called
periodically by the service, reloads the zUI files and then the plugin modules
(`zbifrost.zui.plugins`) whose file changed (`zbifrost.filestamp`), keeping the last good
version of each when a change does not load. Nothing here knows about connections.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from twisted.logger import Logger

from .. import filestamp
from ..filestamp import Stamp
from .actions import FunctionAction, ZuiError
from .loader import load_zui_file
from .model import ZuiFile
from .plugins import Plugins
from .zpath import ZPathError, zpath_to_file

if TYPE_CHECKING:
    from ..app_proxy import Application

log = Logger()


class Workspace:
    def __init__(self, root: str, application: Application | None = None) -> None:
        self.root = os.path.realpath(root)
        self.application = application  # zHTTP actions' (zbifrost.app_proxy), None without a proxy section
        self.name = os.path.basename(self.root)
        self.plugins = Plugins(self.root, self._plugin_calls_in_use)
        self._files: dict[str, ZuiFile] = {}  # zpath -> ZuiFile
        self._loading: set[str] = set()  # zpaths being loaded now (a zLink cycle stops here)
        self._failed: dict[str, Stamp | None] = {}  # zpath -> stamp of the edit that did not load (logged once)
        self.reloads = 0

    def file(self, zpath: str) -> ZuiFile:
        """The loaded ZuiFile for a zPath. Raises ZuiError or ZPathError."""
        loaded = self._files.get(zpath)
        if loaded is None:
            loaded = self._load(zpath, zpath_to_file(self.root, zpath))
            self._files[zpath] = loaded
        return loaded

    def _load(self, zpath: str, path: str) -> ZuiFile:
        self._loading.add(zpath)
        try:
            return load_zui_file(self.root, zpath, path, self.plugins, self._linked_blocks, self.application)
        finally:
            self._loading.discard(zpath)

    def _linked_blocks(self, zpath: str) -> frozenset[str] | None:
        """The block names of a file a zLink names; None while that file is being loaded."""
        if zpath in self._loading:
            return None
        return frozenset(self.file(zpath).blocks)

    def _plugin_calls_in_use(self) -> Iterator[FunctionAction]:
        """The zFunc actions of the loaded files, except those of a file being replaced now
        (so that a plugin and the zUI file calling it can change together)."""
        for zpath, loaded in self._files.items():
            if zpath not in self._loading:
                yield from loaded.plugin_calls

    def stats(self) -> dict[str, int]:
        """`cache_stats.schema_cache`: the zUI files loaded now, and the reloads since start."""
        return {"files": len(self._files), "reloads": self.reloads}

    def refresh(self) -> None:
        """Reload what changed on disk: zUI files first, then plugin modules (so that a plugin
        change is checked against the zUI files now in use)."""
        self._refresh_files()
        self.plugins.refresh()

    def _refresh_files(self) -> None:
        for zpath, current in list(self._files.items()):
            try:
                path = zpath_to_file(self.root, zpath)
                if path == current.path and filestamp.stamp(path) == current.stamp:
                    continue
                self._files[zpath] = self._load(zpath, path)
                self.reloads += 1
                log.info("zUI reloaded: {zpath}", zpath=zpath)
            except (ZuiError, ZPathError, OSError) as err:
                seen = filestamp.stamp_or_none(current.path)
                if self._failed.get(zpath) != seen:
                    self._failed[zpath] = seen
                    log.error("zUI change not loaded, still serving the last good version: {error}", error=str(err))
