"""The service tree: the listener(s), the zUI reloader, and the graceful stop.

Constructing a `BifrostService` loads and checks the zUI file and the tokens (a problem is a
`ConfigError`) but binds nothing; starting it
binds every listener (a port in use raises `CannotListenError` from `startService`, so
nothing runs without a listener); stopping it shuts the clients down gracefully before the
listeners close, so `/healthz` can answer 503 meanwhile.
"""

from twisted.application import internet, service, strports
from twisted.internet import defer
from twisted.logger import Logger

from .auth import TokenFileError, TokenStore
from .config import ConfigError
from .factory import BifrostServerFactory
from .web import build_site
from .zui.actions import ZuiError
from .zui.workspace import Workspace
from .zui.zpath import MissingZuiFile, ZPathError, zui_files

RELOAD_INTERVAL = 0.5  # seconds between checks of the zUI files' modification times

log = Logger()


def listen_descriptions(config):
    """strports descriptions: `--listen` as given, else tcp on host:port with the backlog."""
    if config.listen:
        return list(config.listen)
    interface = config.host.replace(":", "\\:")
    return [f"tcp:{config.port}:interface={interface}:backlog={config.backlog}"]


class BifrostService(service.MultiService):
    def __init__(self, config, reactor=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.workspace = Workspace(config.workspace)
        zblock = self._check_zui()
        tokens = None
        if config.tokens_file:  # for the WebSocket only with require_auth, for POST /api/publish always
            try:
                tokens = TokenStore(config.tokens_file)
            except TokenFileError as err:
                raise ConfigError(str(err)) from None
        self.factory = BifrostServerFactory(config, self.workspace, config.zvafile, zblock,
                                            tokens if config.require_auth else None, reactor, api_tokens=tokens)
        # an HTTP connection idle for handshake_timeout is dropped: before an upgrade that bounds
        # the opening handshake, after one Autobahn's own openHandshakeTimeout takes over
        self.site = build_site(self.factory, config.handshake_timeout)
        if service.IService.providedBy(self.factory.channels):  # a broker: connected while the server runs
            self.factory.channels.setServiceParent(self)
        self.listeners = []
        for description in listen_descriptions(config):
            listener = strports.service(description, self.site, reactor=reactor)
            listener.setServiceParent(self)
            self.listeners.append(listener)
        reloader = internet.TimerService(RELOAD_INTERVAL, self.workspace.refresh)
        reloader.clock = reactor
        reloader.setServiceParent(self)

    def _check_zui(self):
        """Load the configured zUI file now, so that a bad one stops start-up; return the block."""
        config = self.config
        try:
            zfile = self.workspace.file(config.zvafile)
        except MissingZuiFile as err:
            # the operator may see the server's paths (clients get `<workspace>` instead)
            found = zui_files(err.folder)
            there = (f"zUI files there: {', '.join(found)} (pick one with --zvafile or zVaFile)" if found
                     else "no zUI file there")
            raise ConfigError(f"zVaFile: {err.for_operator()}; {there}") from None
        except ZPathError as err:
            raise ConfigError(f"zVaFile: {err}") from None
        except ZuiError as err:
            raise ConfigError(str(err)) from None
        zblock = config.zblock or zfile.default_block()
        if zblock not in zfile.blocks:
            raise ConfigError(f"zBlock: {zblock!r} is not a block of {config.zvafile} "
                              f"(it has {', '.join(zfile.blocks)})")
        return zblock

    def startService(self):
        super().startService()
        log.info("zbifrost listening on {where}, serving {zvafile} from {workspace}",
                 where=", ".join(listen_descriptions(self.config)), zvafile=self.factory.zvafile,
                 workspace=self.workspace.root)

    @defer.inlineCallbacks
    def stopService(self):
        yield self.factory.shut_down(self.config.shutdown_grace)
        self.factory.thread_pool.stop()  # its threads are daemons: a stuck one never holds up the exit
        yield super().stopService()

    def ports(self):
        """The bound ports (after start): a list of IListeningPort."""
        return [listener._waitingForPort.result for listener in self.listeners]
