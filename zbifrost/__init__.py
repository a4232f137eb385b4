"""zbifrost: a WebSocket bridge from web pages to the commands a Python backend declares in zUI files."""

__version__ = "0.1.0"
