"""The wire layer: bytes and WebSocket frames, nothing of users.

`protocol` holds the Autobahn subclass (receive path, send path, outbound backlog and
backpressure, closing), `frames` the frames zbifrost builds and the per-turn batches of channel
deliveries, `factory` the Autobahn factory that builds the protocol with its options. The
session layer (zbifrost.session) sits on top; the fast path and direct send that read
Autobahn's and Twisted's internals are in zbifrost.compat.
"""
