"""Which address a connection comes from, behind trusted reverse proxies (`trusted_proxies`).

Only when the TCP peer is one of the trusted proxies (addresses or networks) is the client's
address taken from `X-Forwarded-For` (the nearest address that is not itself a trusted proxy)
or else `X-Real-IP`; from any other peer those headers are ignored, as anyone can forge them.
The result names the client in logs and refusals. Nothing here knows about WebSocket frames.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """ip_network objects for addresses or CIDR networks; ValueError names a bad entry."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network such as 10.0.0.0/8") from None
    return networks


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = parse_networks(entries)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_address(self, peer_host: str, header: Callable[[str], str | None]) -> str:
        """The client's address: `peer_host`, or what a trusted proxy says; `header(name)`
        returns a request header as a str, or None."""
        if not self.networks or not self._trusted(peer_host):
            return peer_host
        forwarded = [part.strip() for part in (header("x-forwarded-for") or "").split(",") if part.strip()]
        for address in reversed(forwarded):
            if not self._trusted(address):
                return _valid(address) or peer_host
        return _valid((header("x-real-ip") or "").strip()) or (forwarded[0] if forwarded else peer_host)

    def describe(self, peer: IAddress, described: str, header: Callable[[str], str | None]) -> str:
        """How logs name a connection: `described` (e.g. tcp4:127.0.0.1:5555) for a direct peer,
        `CLIENT (via DESCRIBED)` for a client that a trusted proxy forwarded."""
        peer_host = getattr(peer, "host", None)
        if peer_host is None:  # a Unix socket
            return described
        client = self.client_address(peer_host, header)
        return described if client == peer_host else f"{client} (via {described})"


def _valid(address: str) -> str | None:
    """`address` when it is an IP address, else None (a proxy passing garbage names nobody)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
