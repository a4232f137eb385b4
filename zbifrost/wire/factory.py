"""WireFactory: the Autobahn factory, which builds one WireProtocol per connection.

Its protocol options are all set in `configure`, because any call to `setProtocolOptions`
resets options not named in it; where the fence allows (zbifrost.compat), they become class
attributes of a protocol subclass per factory, which also gets the fast path. It holds what
every connection's wire needs: the hub (for the sessions), the config, the metrics it counts
frames in, and the per-turn batches of channel deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

from .. import compat
from .frames import TurnBatches
from .protocol import WireProtocol

if TYPE_CHECKING:
    from ..config import Config
    from ..hub import Hub


def _accept_deflate(offers: Sequence[object]) -> PerMessageDeflateOfferAccept | None:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class WireFactory(WebSocketServerFactory):
    protocol = WireProtocol

    def __init__(self, hub: Hub) -> None:
        super().__init__(reactor=hub.reactor)
        self.hub = hub
        self.metrics = hub.metrics
        self.turn_batches = TurnBatches(hub.reactor)
        self.configure(hub.config)

    def configure(self, config: Config) -> None:
        """Use `config` for the connections opened from now on (and its limits for all)."""
        self.config = config
        self.setProtocolOptions(
            versions=[13],
            webStatus=False,
            utf8validateIncoming=True,
            requireMaskedClientFrames=True,
            maskServerFrames=False,
            maxFramePayloadSize=config.max_message_size,
            maxMessagePayloadSize=config.max_message_size,
            autoFragmentSize=0,
            failByDrop=False,
            echoCloseCodeReason=False,
            openHandshakeTimeout=0,  # Handshakes holds the deadline, from the TCP accept
            closeHandshakeTimeout=1,
            tcpNoDelay=True,
            perMessageCompressionAccept=_accept_deflate if config.compression else (lambda offers: None),
            autoPingInterval=config.ping_interval,
            autoPingTimeout=config.ping_timeout if config.ping_interval else 0,
            autoPingSize=12,
            autoPingRestartOnAnyTraffic=True,
            allowedOrigins=["*"],  # zbifrost.auth.OriginPolicy decides, with exact matching
            allowNullOrigin=True,
            maxConnections=0,  # zbifrost counts connections itself and answers 503
            trustXForwardedFor=0,
        )
        options = compat.class_options(self, WireProtocol)
        if options:
            options["perMessageCompressionAccept"] = staticmethod(options["perMessageCompressionAccept"])
        bases = (compat.FastPath, WireProtocol) if compat.INTERNALS else (WireProtocol,)
        self.protocol = cast("type[WireProtocol]", type(WireProtocol.__name__, bases, options))

