"""The interfaces zbifrost's annotations name, beyond those of Twisted and zbifrost.channels.

`IReactor` is what zbifrost asks of the reactor it is given: Twisted's common reactor
interfaces (timed calls, TCP, processes, start and stop), which `twisted.internet.reactor` is
annotated with, plus calls from worker threads. `IConnectionTransport` is what the wire asks of
a connection's transport: TCP (or TLS over it) whose sending it watches as the producer and
whose reading it pauses and resumes. Every reactor and TCP transport of Twisted provides them.
Nothing here runs: it exists for the type checker and the reader.
"""

from twisted.internet.interfaces import (
    IConsumer,
    IPushProducer,
    IReactorCore,
    IReactorFromThreads,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)


class IReactor(IReactorCore, IReactorTime, IReactorTCP, IReactorProcess, IReactorFromThreads):
    """The reactor a zbifrost server runs on."""


class IConnectionTransport(ITCPTransport, IConsumer, IPushProducer):
    """The transport of one client's connection, from its HTTP request to its close."""
