"""SIGHUP: re-read the config file and apply the settings that can change while running.

Origins, limits and channel rules (the settings zbifrost.config declares reloadable) are applied
to the running hub, and one log line says what changed; a changed setting that needs a restart
(the port, the workspace, ...) is named in that line and left as it is. A config that no longer
loads is logged and the old one is kept.
Nothing here exits the process. The tokens file and the zUI files are re-read by their own
watchers when they change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from .config import SETTINGS, ConfigError, load_config

if TYPE_CHECKING:
    from .hub import Hub

if TYPE_CHECKING:
    from .hub import Hub

log = Logger()



def reload_config(hub: Hub, config_file: str | None,
                  overrides: Mapping[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """Load `config_file` again with the same flags (`overrides`) and environment, and apply
    its reloadable settings to `hub`. Returns the applied changes {name: (old, new)}."""
    if not config_file:
        log.info("SIGHUP: no --config file, nothing to reload")
        return {}
    try:
        loaded = load_config(config_file, overrides=overrides)
    except ConfigError as err:
        log.error("SIGHUP: config not reloaded, the old one stays in force: {error}", error=str(err))
        return {}
    current = hub.config
    differs = [name for name in SETTINGS if getattr(loaded, name) != getattr(current, name)]
    changes = {name: (getattr(current, name), getattr(loaded, name)) for name in differs if SETTINGS[name].reloadable}
    needs_restart = [name for name in differs if not SETTINGS[name].reloadable]
    if changes:
        hub.reconfigure(dataclasses.replace(current, **{name: new for name, (_, new) in changes.items()}))
    described = ", ".join(_describe(name, old, new) for name, (old, new) in changes.items()) or "nothing changed"
    restart = f"; needs a restart, not applied: {', '.join(needs_restart)}" if needs_restart else ""
    log.info("SIGHUP: reloaded {config_file}: {changes}{restart}", config_file=config_file, changes=described,
             restart=restart)
    return changes


def _describe(name: str, old: Any, new: Any) -> str:
    if name == "channels":  # the rules themselves would make an unreadable line
        return f"channels {len(old)} -> {len(new)} rule(s)"
    return f"{name} {old!r} -> {new!r}"
