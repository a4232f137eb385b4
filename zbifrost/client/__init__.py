"""zbifrost's Python client: the sans-IO core (`zbifrost.client.core`) under an asyncio client on the
`websockets` library (`zbifrost.client.aio`), the same client on Twisted (`zbifrost.client.twisted`,
imported by name only), and a command line (`python -m zbifrost.client`).

    async with zbifrost.client.connect("ws://127.0.0.1:18774/ws") as client:
        print(await client.dispatch("^Ping"))

Importing it imports neither Twisted nor Autobahn.
"""

from .aio import Client, RecoveryLost, State, Subscription, connect
from .core import BifrostError, Position, Publication

__all__ = ["connect", "Client", "Subscription", "State", "RecoveryLost", "BifrostError", "Position", "Publication"]
