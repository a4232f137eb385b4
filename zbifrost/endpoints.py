"""The `listen` and `metrics_listen` settings: strports endpoint descriptions, checked without binding.

zbifrost.service binds them when it starts; here a description is only parsed, against a
reactor that is never run, so that a bad one stops start-up with one line before anything listens.
"""

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor


def endpoint_problem(description: str) -> str | None:
    """What is wrong with a strports description such as tcp:18774:interface=0.0.0.0, or None."""
    try:
        # parsing binds nothing: the reactor is only stored in the endpoint
        serverFromString(MemoryReactor(), description)
    except Exception as err:  # each endpoint parser plugin raises its own kinds of error
        if isinstance(err, ImportError) and description.startswith("ssl:"):
            return f"{description!r} needs pyOpenSSL: pip install 'zbifrost[tls]' (twisted[tls])"
        return f"{description!r} is not an endpoint description such as tcp:18774:interface=0.0.0.0 ({err})"
    return None
