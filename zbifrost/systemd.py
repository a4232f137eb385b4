"""systemd integration: sd_notify messages and the listening sockets of socket activation.

`Notifier` sends `KEY=value` lines as one datagram to `$NOTIFY_SOCKET`, in a few lines of the
standard library rather than a dependency: the protocol is a single datagram, and the
`sdnotify` package on PyPI has had no release since 2017. Without `$NOTIFY_SOCKET` it does
nothing. `inherited_sockets` lists the listening sockets systemd hands over (`LISTEN_FDS`,
named or not) for the service to adopt.
Nothing here knows about WebSocket connections.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.logger import Logger

from .config import ConfigError

log = Logger()

_FIRST_DESCRIPTOR = 3  # SD_LISTEN_FDS_START


class Notifier:
    """sd_notify for this process: `notify(READY=1, STATUS="...")`; `watchdog_interval` is half
    of `WatchdogSec=` (None when systemd expects no watchdog pings)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_interval: float | None = None
        watchdog_pid = environ.get("WATCHDOG_PID")
        if environ.get("WATCHDOG_USEC", "").isdigit() and watchdog_pid in (None, str(os.getpid())):
            self.watchdog_interval = int(environ["WATCHDOG_USEC"]) / 2e6 or None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> None:
        """Send one notification, e.g. notify(READY=1, STATUS="3 clients"); failures are logged."""
        if self.address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, self.address)
        except OSError as err:
            log.warn("systemd notification {fields} not sent: {error}", fields=", ".join(fields), error=err)


def _environment_at_start() -> dict[str, str]:
    """The environment this process was started with. twisted.internet.endpoints removes
    LISTEN_PID and LISTEN_FDS from os.environ when it is imported (before any plugin runs), so
    they are read back from /proc/self/environ (Linux, like systemd)."""
    try:
        with open("/proc/self/environ", "rb") as handle:
            entries = handle.read().decode("utf-8", "surrogateescape").split("\0")
    except OSError:
        return dict(os.environ)
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def inherited_sockets(environ: Mapping[str, str] | None = None) -> list[tuple[int, socket.AddressFamily]]:
    """[(descriptor, address family)] of the listening sockets systemd passed to this process:
    empty unless LISTEN_PID is this process. Twisted's ListenFDs is not used: it drops every
    descriptor when LISTEN_FDNAMES is missing (as with systemd-socket-activate without
    --fdname). Anything but a listening TCP or Unix stream socket is a ConfigError."""
    environ = _environment_at_start() if environ is None else environ
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit():
        raise ConfigError(f"LISTEN_FDS: expected a number of descriptors, got {count!r}")
    sockets: list[tuple[int, socket.AddressFamily]] = []
    for descriptor in range(_FIRST_DESCRIPTOR, _FIRST_DESCRIPTOR + int(count)):
        try:
            inherited = socket.socket(fileno=descriptor)
        except OSError as err:
            raise ConfigError(f"LISTEN_FDS: descriptor {descriptor} is not a socket ({err.strerror})") from None
        try:
            family, kind = inherited.family, inherited.type
            listening = inherited.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        finally:
            inherited.detach()
        if family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) or kind != socket.SOCK_STREAM \
                or not listening:
            raise ConfigError(f"LISTEN_FDS: descriptor {descriptor} is not a listening TCP or Unix stream socket "
                              "(use ListenStream= in the socket unit)")
        sockets.append((descriptor, family))
    return sockets
