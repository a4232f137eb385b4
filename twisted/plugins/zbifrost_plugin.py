"""twistd plugin: `twistd -n zbifrost` (the options and service live in zbifrost.tap)."""

from twisted.application.service import ServiceMaker

zbifrost = ServiceMaker(
    "zbifrost",
    "zbifrost.tap",
    "WebSocket bridge from web pages to the commands of zUI files",
    "zbifrost",
)
