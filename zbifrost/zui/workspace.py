"""The workspace: the folder of zUI files, each parsed once and kept until it changes.

`Workspace.file(zpath)` answers from memory (the `schema_cache` feature); `refresh()`, called
periodically by the service, reloads files whose modification time changed and keeps the last
good version when a change does not load. Nothing here knows about connections.
"""

import os

from twisted.logger import Logger

from .actions import ZuiError
from .loader import load_zui_file
from .zpath import ZPathError, zpath_to_file

log = Logger()


class Workspace:
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.name = os.path.basename(self.root)
        self._files = {}  # zpath -> ZuiFile
        self._failed = {}  # zpath -> mtime of the edit that did not load (logged once)
        self.reloads = 0

    def file(self, zpath):
        """The loaded ZuiFile for a zPath. Raises ZuiError or ZPathError."""
        loaded = self._files.get(zpath)
        if loaded is None:
            loaded = load_zui_file(self.root, zpath, zpath_to_file(self.root, zpath))
            self._files[zpath] = loaded
        return loaded

    def refresh(self):
        """Reload every cached file that changed on disk; keep the last good one on failure."""
        for zpath, current in list(self._files.items()):
            try:
                path = zpath_to_file(self.root, zpath)
                if path == current.path and os.stat(path).st_mtime_ns == current.mtime_ns:
                    continue
                self._files[zpath] = load_zui_file(self.root, zpath, path)
                self.reloads += 1
                log.info("zUI reloaded: {zpath}", zpath=zpath)
            except (ZuiError, ZPathError, OSError) as err:
                mtime = _mtime(current.path)
                if self._failed.get(zpath) != mtime:
                    self._failed[zpath] = mtime
                    log.error("zUI change not loaded, still serving the last good version: {error}", error=str(err))


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
