"""The one Config object: defaults < config file < WEBSOCKET_* environment < flags.

Each Config field is one setting's whole declaration (a zbifrost.settings.Setting): its type
and default, its config-file key, flag and environment variable, whether SIGHUP applies it,
its check and its help line. `SETTINGS`, read from those fields, drives the config file, the
environment, twistd's options (zbifrost.tap) and the reload (zbifrost.reload). This module
reads a YAML config file and the environment, but it never touches the network or the zUI
files' contents: a `ConfigError` carries one line of text naming the key and where its value
came from (the file, the variable or the flag).
"""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import yaml

from .app_proxy_settings import ProxySettings, parse_proxy_settings
from .broker_url import brokers_problem
from .channels.rules import ChannelRule, parse_channel_rules
from .endpoints import endpoint_problem
from .jwt_settings import JwtSettings, parse_jwt_settings
from .proxies import parse_networks
from .settings import (
    ConfigError,
    Parse,
    Setting,
    between,
    boolean,
    each,
    greater_than_zero,
    integer,
    number,
    optional_path,
    optional_text,
    path,
    strings,
    text,
    unknown_key,
    whole_strings,
    zero_or_more,
)
from .yaml_errors import yaml_error_text
from .zui.zpath import zui_files

__all__ = ["BUNDLED_WORKSPACE", "DEFAULT_ZVAFILE", "SETTINGS", "Config", "ConfigError", "load_config"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The demo workspace: installed as zbifrost/demo, or the top-level zui/ of a source checkout.
BUNDLED_WORKSPACE = next(
    (folder for folder in (os.path.join(_PACKAGE_DIR, "demo"), os.path.join(os.path.dirname(_PACKAGE_DIR), "zui"))
     if os.path.isdir(folder)),
    os.path.join(_PACKAGE_DIR, "demo"))
DEFAULT_ZVAFILE = "@.zUI.level1"
_SETTING = "setting"  # the key of a Config field's metadata holding its Setting


def setting(default: Any, key: str, parse: Parse, **declared: Any) -> Any:
    """A Config field declared as a Setting (see its attributes); a list default is copied for
    each Config."""
    metadata = {_SETTING: Setting(key, parse, **declared)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=partial(list, default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# -- checks that look at the file system or at another setting -------------------------------

def _directory(value: str, config: "Config") -> str | None:
    return None if os.path.isdir(value) else f"{value} is not a directory"


def _auth_has_credentials(value: bool, config: "Config") -> str | None:
    connect_proxy = config.proxy is not None and config.proxy.connect is not None
    if value and not config.tokens_file and config.jwt is None and not connect_proxy:
        return "needs a tokens file (--tokens FILE or websocket.tokens), a websocket.jwt section or a proxy.connect"
    return None


def _file(value: str | None, config: "Config") -> str | None:
    return None if not value or os.path.isfile(value) else f"{value} is not a file"


def _origin_problem(origin: str) -> str | None:
    return None if origin == "*" or "://" in origin else f"{origin!r} must be '*' or scheme://host[:port]"


def _networks(value: list[str], config: "Config") -> str | None:
    try:
        parse_networks(value)
    except ValueError as err:
        return str(err)
    return None


def _subscribe_proxy(rules: list[ChannelRule], config: "Config") -> str | None:
    proxied = [rule.pattern for rule in rules if rule.proxy]
    if proxied and (config.proxy is None or config.proxy.subscribe_url is None):
        return f"the rule for {proxied[0]!r} has proxy: true, which needs proxy.subscribe.url"
    return None


def _burst(value: int, config: "Config") -> str | None:
    if config.rate and value < 1:
        return "must be at least 1 when rate limiting is on"
    return zero_or_more(value, config)


API_KEY_MIN_LENGTH = 32


def _api_key(value: str | None, config: "Config") -> str | None:
    """Never quotes the key: this line is printed at start."""
    if value is not None and len(value) < API_KEY_MIN_LENGTH:
        return f"must be at least {API_KEY_MIN_LENGTH} characters, got {len(value)}"
    return None


def _threads_max(value: int | None, config: "Config") -> str | None:
    if value is None:  # 4 x threads
        return None
    return greater_than_zero(value, config) or (
        f"must be at least threads ({config.threads}), got {value}" if value < config.threads else None)


@dataclass
class Config:
    """Every setting, one declaration each. A SIGHUP applies those marked reloadable=True."""
    # where to listen
    host: str = setting("127.0.0.1", "websocket.host", text, flag="interface", short="i", env="WEBSOCKET_HOST",
                        help="Address to listen on [default: 127.0.0.1].")
    port: int = setting(18774, "websocket.port", integer, flag="port", short="p", env="WEBSOCKET_PORT",
                        check=between(1, 65535), help="TCP port to listen on [default: 18774].")
    listen: list[str] = setting(  # strports strings; replace host/port when given
        [], "websocket.listen", strings, flag="listen", check=each(endpoint_problem),
        help="A strports endpoint to listen on, e.g. tcp:18774:interface=0.0.0.0 (repeatable; replaces "
             "--port and --interface).")
    backlog: int = setting(1024, "websocket.backlog", integer, flag="backlog", check=greater_than_zero,
                           help="Listen backlog [default: 1024].")
    metrics_listen: list[str] = setting(
        [], "websocket.metrics_listen", strings, flag="metrics-listen", check=each(endpoint_problem),
        help="A strports endpoint serving only /metrics and /healthz, e.g. tcp:9101:interface=127.0.0.1 "
             "(repeatable; /metrics then leaves the WebSocket port).")
    # what to serve
    workspace: str = setting(BUNDLED_WORKSPACE, "zWorkspace", path, flag="workspace", short="w", check=_directory,
                             help="Folder with the zUI files and plugins/ [default: the bundled demo].")
    zvafile: str | None = setting(  # None: the workspace's only zUI file, else DEFAULT_ZVAFILE
        None, "zVaFile", optional_text, flag="zvafile",
        help="zPath of the zUI file to serve [default: the workspace's only zUI file, else @.zUI.level1].")
    zblock: str | None = setting(  # None: "root" if the file has it, else its first block
        None, "zBlock", optional_text, flag="zblock",
        help="Block clients start in [default: root if present, else the first].")
    # who may connect
    require_auth: bool = setting(False, "websocket.require_auth", boolean, flag="require-auth",
                                 env="WEBSOCKET_REQUIRE_AUTH", check=_auth_has_credentials,
                                 help="Accept only clients with a valid token (see --tokens).")
    tokens_file: str | None = setting(None, "websocket.tokens", optional_path, flag="tokens", check=_file,
                                      help="YAML file of token hashes (python -m zbifrost.tokens add ...).")
    jwt: JwtSettings | None = setting(None, "websocket.jwt", parse_jwt_settings)  # signed tokens (zbifrost.auth)
    allowed_origins: list[str] = setting(
        [], "websocket.allowed_origins", strings, flag="allowed-origin", env="WEBSOCKET_ALLOWED_ORIGINS",
        reloadable=True, check=each(_origin_problem),
        help="An Origin allowed to connect, as scheme://host[:port], or * (repeatable).")
    trusted_proxies: list[str] = setting(  # addresses/networks whose X-Forwarded-For is believed
        [], "websocket.trusted_proxies", strings, flag="trusted-proxy", check=_networks,
        help="An address or network (10.0.0.0/8) of a reverse proxy whose X-Forwarded-For / X-Real-IP names "
             "the client (repeatable); from other peers those headers are ignored.")
    max_connections: int = setting(10000, "websocket.max_connections", integer, flag="max-connections",
                                   reloadable=True, check=greater_than_zero,
                                   help="Most simultaneous clients [default: 10000].")
    # keepalive and limits
    ping_interval: float = setting(20.0, "websocket.ping_interval", number, reloadable=True, check=zero_or_more)
    ping_timeout: float = setting(20.0, "websocket.ping_timeout", number, reloadable=True, check=greater_than_zero)
    handshake_timeout: float = setting(5.0, "websocket.handshake_timeout", number, check=greater_than_zero)
    max_message_size: int = setting(65536, "websocket.max_message_size", integer, flag="max-message-size",
                                    reloadable=True, check=greater_than_zero,
                                    help="Largest client message in bytes [default: 65536].")
    max_fragments: int = setting(  # frames of one message; more closes the connection with 1009
        4096, "websocket.max_fragments", integer, reloadable=True, check=greater_than_zero)
    rate: float = setting(  # messages per second sustained; 0 turns rate limiting off
        50.0, "websocket.rate", number, reloadable=True, check=zero_or_more)
    burst: int = setting(100, "websocket.burst", integer, reloadable=True, check=_burst)
    max_in_flight: int = setting(16, "websocket.max_in_flight", integer, reloadable=True, check=greater_than_zero)
    max_outbound_buffer: int = setting(1024 * 1024, "websocket.max_outbound_buffer", integer, reloadable=True,
                                       check=greater_than_zero)
    command_timeout: float = setting(30.0, "websocket.command_timeout", number, check=greater_than_zero)
    cache_size: int = setting(1024, "websocket.cache_size", integer, check=greater_than_zero)
    shutdown_grace: float = setting(5.0, "websocket.shutdown_grace", number, check=zero_or_more)
    compression: bool = setting(False, "websocket.compression", boolean)
    history_max_bytes: int = setting(  # channel history of the embedded backend, all channels
        64 * 1024 * 1024, "websocket.history_max_bytes", integer, check=greater_than_zero)
    broker: list[str] = setting(  # channels in Redis (zbifrost.channels.redis; several: shards); []: in memory
        [], "websocket.broker", whole_strings, flag="broker", check=brokers_problem,
        help="Keep channels in Redis, shared by every zbifrost using it: redis://host:port/db; given several "
             "times, each channel lives in one of these shards [default: in this process].")
    presence_ttl: float = setting(  # seconds after which a dead process's presence entries are gone (broker only)
        30.0, "websocket.presence_ttl", number, check=greater_than_zero)
    # pool threads of thread-run plugin functions (zbifrost.thread_pool)
    threads: int = setting(10, "websocket.threads", integer, check=greater_than_zero)
    threads_per_client: int = setting(2, "websocket.threads_per_client", integer, check=greater_than_zero)
    threads_max: int | None = setting(None, "websocket.threads_max", integer, check=_threads_max)  # None: 4 x threads
    api_roles: list[str] = setting(["admin"], "websocket.api_roles", strings)  # token roles that may use /api/<method>
    api_key: str | None = setting(  # the X-API-Key of the server API (zbifrost.server_api); None: header ignored
        None, "websocket.api_key", optional_text, env="WEBSOCKET_API_KEY", check=_api_key)
    # the config file's `channels:` section (zbifrost.channels.rules)
    channels: list[ChannelRule] = setting([], "channels", parse_channel_rules, reloadable=True, check=_subscribe_proxy)
    # the config file's `proxy:` section: the application answers (zbifrost.app_proxy)
    proxy: ProxySettings | None = setting(None, "proxy", parse_proxy_settings)


SETTINGS: dict[str, Setting] = {field.name: dataclasses.replace(field.metadata[_SETTING], name=field.name)
                                for field in dataclasses.fields(Config)}
_BY_KEY = {setting.key: setting for setting in SETTINGS.values()}
_SECTIONS = {key.split(".")[0] for key in _BY_KEY if "." in key}
_TOP_LEVEL = {key.split(".")[0] for key in _BY_KEY}
# a value as given: (the typed value, where it came from)
Given = dict[str, tuple[Any, str]]


def _load_yaml(path: str) -> dict[Any, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_text(f"config file {path}", err)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return raw


def _read_file(path: str) -> Given:
    """The settings a config file gives; relative paths in it are relative to its folder."""
    raw = _load_yaml(path)
    where = f"config file {path}"
    found = {}
    for key, value in raw.items():
        if key not in _TOP_LEVEL:
            raise ConfigError(unknown_key(where, key, _TOP_LEVEL))
        if key not in _SECTIONS:
            found[key] = value
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping")
        for name, item in value.items():
            if f"{key}.{name}" not in _BY_KEY:
                keys = [full.split(".", 1)[1] for full in _BY_KEY if full.startswith(f"{key}.")]
                raise ConfigError(unknown_key(f"{where}: {key}", name, keys))
            found[f"{key}.{name}"] = item
    folder = os.path.dirname(os.path.abspath(path))
    return {_BY_KEY[key].name: (_BY_KEY[key].parse(f"{where}: {key}", value, folder), f"{where}: {key}")
            for key, value in found.items()}


def _read_environment(environ: Mapping[str, str]) -> Given:
    return {setting.name: (setting.parse(f"environment {setting.env}", environ[setting.env], ""),
                           f"environment {setting.env}")
            for setting in SETTINGS.values() if setting.env is not None and setting.env in environ}


def _read_flags(overrides: Mapping[str, Any]) -> Given:
    return {name: (SETTINGS[name].parse(SETTINGS[name].flag_label, raw, ""), SETTINGS[name].flag_label)
            for name, raw in overrides.items()}


def _fill_in(config: Config) -> None:
    """The values that follow from others once all are checked."""
    if config.threads_max is None:
        config.threads_max = 4 * config.threads
    config.workspace = os.path.realpath(config.workspace)
    if config.zvafile is None:
        found = zui_files(config.workspace)
        config.zvafile = f"@.{os.path.splitext(found[0])[0]}" if len(found) == 1 else DEFAULT_ZVAFILE


def load_config(config_file: str | None = None, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a validated Config from the layers, lowest first.

    `overrides` maps Config attribute names to raw values (the command-line flags that were
    given); `environ` defaults to os.environ.
    """
    unknown = set(overrides or {}) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    given = _read_file(config_file) if config_file else {}
    given.update(_read_environment(os.environ if environ is None else environ))
    given.update(_read_flags(overrides or {}))
    config = Config(**{name: value for name, (value, _) in given.items()})
    for name, declared in SETTINGS.items():
        problem = declared.check(getattr(config, name), config) if declared.check else None
        if problem is not None:
            raise ConfigError(f"{given[name][1] if name in given else declared.key}: {problem}")
    _fill_in(config)
    return config
