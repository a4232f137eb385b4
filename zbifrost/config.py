"""The one Config object: defaults < config file < WEBSOCKET_* environment < flags.

This module owns every setting's name, default and validation. It reads a YAML config file
and the environment, but it never touches the network or the zUI files' contents: a
`ConfigError` carries one line of text naming the key (and the file and line where known).
"""

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
import yaml
from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor

from .channels import History
from .channels.rules import ChannelRule, valid_pattern
from .proxies import parse_networks
from .yaml_errors import yaml_error_text
from .zui.zpath import zui_files

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The demo workspace: installed as zbifrost/demo, or the top-level zui/ of a source checkout.
BUNDLED_WORKSPACE = next(
    (path for path in (os.path.join(_PACKAGE_DIR, "demo"), os.path.join(os.path.dirname(_PACKAGE_DIR), "zui"))
     if os.path.isdir(path)),
    os.path.join(_PACKAGE_DIR, "demo"))


class ConfigError(Exception):
    """A setting is wrong; str(err) is one line meant for the operator."""


@dataclass
class Config:
    # where to listen
    host: str = "127.0.0.1"
    port: int = 18774
    listen: list = field(default_factory=list)  # strports strings; replace host/port when given
    backlog: int = 1024
    metrics_listen: list = field(default_factory=list)  # strports strings serving /metrics and /healthz only
    # what to serve
    workspace: str = BUNDLED_WORKSPACE
    zvafile: str = None  # None: the workspace's only zUI file, else @.zUI.level1
    zblock: str = None  # None: "root" if the file has it, else its first block
    # who may connect
    require_auth: bool = False
    tokens_file: str = None
    jwt: "JwtSettings" = None  # the `websocket.jwt` section: signed tokens (zbifrost.auth.JwtVerifier)
    allowed_origins: list = field(default_factory=list)
    trusted_proxies: list = field(default_factory=list)  # addresses/networks whose X-Forwarded-For is believed
    max_connections: int = 10000
    # keepalive and limits
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    handshake_timeout: float = 5.0
    max_message_size: int = 65536
    max_fragments: int = 4096  # frames of one message; more closes the connection with 1009
    rate: float = 50.0  # messages per second sustained; 0 turns rate limiting off
    burst: int = 100
    max_in_flight: int = 16
    max_outbound_buffer: int = 1024 * 1024
    command_timeout: float = 30.0
    cache_size: int = 1024
    shutdown_grace: float = 5.0
    compression: bool = False
    history_max_bytes: int = 64 * 1024 * 1024  # channel history of the embedded backend, all channels
    broker: str = None  # redis://host:port/db: channels in Redis (zbifrost.channels.redis); None: in memory
    presence_ttl: float = 30.0  # seconds after which a dead process's presence entries are gone (broker only)
    # pool threads of thread-run plugin functions (zbifrost.thread_pool)
    threads: int = 10
    threads_per_client: int = 2
    threads_max: int = None  # None: 4 x threads
    api_roles: list = field(default_factory=lambda: ["admin"])  # roles whose tokens may POST /api/publish
    # channel rules of the config file's `channels:` section (zbifrost.channels.rules)
    channels: list = field(default_factory=list)


# Keys accepted in the config file's `websocket:` section, with the Config attribute they set.
_WEBSOCKET_KEYS = {
    "host": "host",
    "port": "port",
    "listen": "listen",
    "backlog": "backlog",
    "metrics_listen": "metrics_listen",
    "require_auth": "require_auth",
    "tokens": "tokens_file",
    "jwt": "jwt",
    "allowed_origins": "allowed_origins",
    "trusted_proxies": "trusted_proxies",
    "max_connections": "max_connections",
    "ping_interval": "ping_interval",
    "ping_timeout": "ping_timeout",
    "handshake_timeout": "handshake_timeout",
    "max_message_size": "max_message_size",
    "max_fragments": "max_fragments",
    "rate": "rate",
    "burst": "burst",
    "max_in_flight": "max_in_flight",
    "max_outbound_buffer": "max_outbound_buffer",
    "command_timeout": "command_timeout",
    "cache_size": "cache_size",
    "shutdown_grace": "shutdown_grace",
    "compression": "compression",
    "history_max_bytes": "history_max_bytes",
    "broker": "broker",
    "presence_ttl": "presence_ttl",
    "threads": "threads",
    "threads_per_client": "threads_per_client",
    "threads_max": "threads_max",
    "api_roles": "api_roles",
}
_TOP_LEVEL_KEYS = {"zWorkspace": "workspace", "zVaFile": "zvafile", "zBlock": "zblock"}
_TOP_KEY = {attr: key for key, attr in _TOP_LEVEL_KEYS.items()}
# the config file's sections: each a mapping checked against its own table of keys
_SECTIONS = {"websocket": _WEBSOCKET_KEYS}
# the config file's `channels:` section: a list of rules, each a mapping with these keys
_CHANNEL_RULE_KEYS = ("pattern", "subscribe", "publish", "history", "presence", "join_leave")
_HISTORY_KEYS = ("size", "ttl")
# the `websocket.jwt` mapping (docs/protocol.md section 2, signed tokens)
_JWT_KEYS = ("secret", "secret_file", "public_key_file", "algorithms", "audience", "issuer", "leeway", "role_claim")
_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# settings holding a path: a relative one in a config file is relative to that file's folder
_PATH_SETTINGS = ("workspace", "tokens_file")
DEFAULT_ZVAFILE = "@.zUI.level1"

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Config)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _flag(attr):
    return "--" + {"host": "interface", "tokens_file": "tokens", "allowed_origins": "allowed-origin",
                   "trusted_proxies": "trusted-proxy"}.get(
        attr, attr).replace("_", "-")


def _coerce(name, attr, value):
    """Turn a raw value (YAML, env or flag) into the type Config's attribute has."""
    kind = _FIELD_TYPES[attr]
    if kind is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return list(value)
    if kind is bool:
        return _parse_bool(name, value)
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return number
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def unknown_key(where, key, valid):
    """The one-line complaint about a key that is not in `valid`, suggesting the closest one."""
    close = difflib.get_close_matches(str(key), [str(name) for name in valid], n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return f"{where}: unknown key {key!r} ({hint})"


def _read_file(path):
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
    for key in raw:
        if key not in _TOP_LEVEL_KEYS and key not in _SECTIONS and key != "channels":
            raise ConfigError(unknown_key(f"config file {path}", key, [*_SECTIONS, "channels", *_TOP_LEVEL_KEYS]))
    values = {}
    for name, keys in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: {name}: expected a mapping")
        for key, value in section.items():
            if key not in keys:
                raise ConfigError(unknown_key(f"config file {path}: {name}", key, keys))
            where = f"config file {path}: {name}.{key}"
            values[keys[key]] = _jwt_settings(where, value, path) if key == "jwt" else _coerce(where, keys[key], value)
    for key, attr in _TOP_LEVEL_KEYS.items():
        if key in raw:
            values[attr] = _coerce(f"config file {path}: {key}", attr, raw[key])
    if raw.get("channels") is not None:
        values["channels"] = _channel_rules(f"config file {path}: channels", raw["channels"])
    for attr in _PATH_SETTINGS:
        if values.get(attr) and not os.path.isabs(values[attr]):
            # relative to the config file, not to wherever twistd runs
            values[attr] = os.path.join(os.path.dirname(os.path.abspath(path)), values[attr])
    return values


def _channel_rules(where, raw):
    """The `channels:` section as ChannelRule objects, or a one-line ConfigError."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of rules (- pattern: ...)")
    return [_channel_rule(f"{where}[{index}]", item) for index, item in enumerate(raw)]


def _check_mapping(where, raw, keys, example):
    """A YAML mapping holding only `keys`, or a one-line ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {example}")
    for key in raw:
        if key not in keys:
            raise ConfigError(unknown_key(where, key, keys))


def _channel_rule(where, raw):
    _check_mapping(where, raw, _CHANNEL_RULE_KEYS, '{pattern: "chat.*", subscribe: [user]}')
    pattern = raw.get("pattern")
    if not valid_pattern(pattern):
        raise ConfigError(f"{where}.pattern: expected a glob such as \"chat.*\" of channel-name characters "
                          f"and *?[]!, got {pattern!r}")
    rule = {"pattern": pattern}
    for action in ("subscribe", "publish"):
        if action in raw:
            roles = raw[action]
            if not isinstance(roles, list) or not all(isinstance(role, str) and role for role in roles):
                raise ConfigError(f"{where}.{action}: expected a list of roles (\"*\" for every role), got {roles!r}")
            rule[action] = tuple(roles)
    if "history" in raw:
        rule["history"] = _history(f"{where}.history", raw["history"])
    for switch in ("presence", "join_leave"):
        if switch in raw:
            if not isinstance(raw[switch], bool):
                raise ConfigError(f"{where}.{switch}: expected true or false, got {raw[switch]!r}")
            rule[switch] = raw[switch]
    return ChannelRule(**rule)


def _history(where, raw):
    _check_mapping(where, raw, _HISTORY_KEYS, "{size: 100, ttl: 300}")
    size, ttl = raw.get("size", History.size), raw.get("ttl", History.ttl)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"{where}.size: expected an integer of 0 or more (0: no history), got {size!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        raise ConfigError(f"{where}.ttl: expected a number of seconds greater than zero, got {ttl!r}")
    return History(size=size, ttl=float(ttl))


@dataclass(frozen=True)
class JwtSettings:
    """The checked `websocket.jwt` section; `key` is the HMAC secret or the PEM public key itself."""
    key: str = field(repr=False)  # a secret: never in a log line or a traceback
    algorithms: tuple = ("HS256",)
    audience: str = None
    issuer: str = None
    leeway: float = 5.0
    role_claim: str = "role"


def _jwt_settings(where, raw, config_path):
    """The `websocket.jwt` mapping as JwtSettings (its key file read now), or a one-line ConfigError."""
    _check_mapping(where, raw, _JWT_KEYS, '{secret_file: jwt.key, algorithms: [HS256]}')
    given = [name for name in ("secret", "secret_file", "public_key_file") if raw.get(name) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of secret, secret_file and public_key_file, got "
                          f"{', '.join(given) or 'none'}")
    source, = given
    value = raw[source]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{source}: expected a non-empty string")
    key = value
    if source != "secret":
        file = value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
        try:
            with open(file, encoding="utf-8") as handle:
                key = handle.read().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{where}.{source}: cannot read {file} ({getattr(err, 'strerror', None) or err})") from None
        if not key:
            raise ConfigError(f"{where}.{source}: {file} is empty")
    algorithms = raw.get("algorithms", list(JwtSettings.algorithms))
    if not isinstance(algorithms, list) or not algorithms or not all(isinstance(a, str) for a in algorithms):
        raise ConfigError(f"{where}.algorithms: expected a list such as [HS256] or [RS256], got {algorithms!r}")
    known = sorted(jwt.algorithms.get_default_algorithms().keys() - {"none"})
    for algorithm in algorithms:
        if algorithm not in known:
            raise ConfigError(f"{where}.algorithms: unknown algorithm {algorithm!r} (known: {', '.join(known)})")
        if (algorithm in _HMAC_ALGORITHMS) != (source != "public_key_file"):
            raise ConfigError(f"{where}.algorithms: {algorithm} does not go with {source} (HS256, HS384 and "
                              "HS512 take secret or secret_file; the others take public_key_file)")
        try:
            prepared = jwt.get_algorithm_by_name(algorithm).prepare_key(key)
        except (jwt.exceptions.InvalidKeyError, ValueError, TypeError) as err:
            raise ConfigError(f"{where}.{source}: not a key for {algorithm} ({err})") from None
        if hasattr(prepared, "private_bytes"):  # PyJWT loads it, but an RSA private key cannot verify
            raise ConfigError(f"{where}.{source}: holds a private key; give its public key (openssl pkey -pubout), "
                              "and keep the private key with the application that signs")
    settings = {"key": key, "algorithms": tuple(algorithms)}
    for name in ("audience", "issuer", "role_claim"):
        if name in raw:
            if not isinstance(raw[name], str) or not raw[name]:
                raise ConfigError(f"{where}.{name}: expected a non-empty string, got {raw[name]!r}")
            settings[name] = raw[name]
    if "leeway" in raw:
        leeway = raw["leeway"]
        if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or leeway < 0:
            raise ConfigError(f"{where}.leeway: expected a number of seconds, 0 or more, got {leeway!r}")
        settings["leeway"] = float(leeway)
    return JwtSettings(**settings)


_ENVIRONMENT = {
    "WEBSOCKET_HOST": "host",
    "WEBSOCKET_PORT": "port",
    "WEBSOCKET_REQUIRE_AUTH": "require_auth",
    "WEBSOCKET_ALLOWED_ORIGINS": "allowed_origins",
}


def _read_environment(environ):
    values = {}
    for name, attr in _ENVIRONMENT.items():
        if name in environ:
            values[attr] = _coerce(f"environment {name}", attr, environ[name])
    return values


def _validate(config, label):
    """Check the merged settings; `label(attr)` names where a value came from."""

    def positive(attr, allow_zero=False):
        value = getattr(config, attr)
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{label(attr)}: must be {'zero or more' if allow_zero else 'greater than zero'}, "
                              f"got {value}")

    if not 1 <= config.port <= 65535:
        raise ConfigError(f"{label('port')}: must be between 1 and 65535, got {config.port}")
    for attr in ("backlog", "max_connections", "max_message_size", "max_fragments", "max_in_flight",
                 "max_outbound_buffer", "cache_size", "history_max_bytes", "ping_timeout", "handshake_timeout", "command_timeout",
                 "presence_ttl"):
        positive(attr)
    for attr in ("ping_interval", "rate", "burst", "shutdown_grace"):
        positive(attr, allow_zero=True)
    if config.threads_max is None:
        config.threads_max = 4 * config.threads
    for attr in ("threads", "threads_per_client", "threads_max"):
        positive(attr)
    if config.threads_max < config.threads:
        raise ConfigError(f"{label('threads_max')}: must be at least threads ({config.threads}), "
                          f"got {config.threads_max}")
    if config.rate and config.burst < 1:
        raise ConfigError(f"{label('burst')}: must be at least 1 when rate limiting is on")
    if not os.path.isdir(config.workspace):
        raise ConfigError(f"{label('workspace')}: {config.workspace} is not a directory")
    config.workspace = os.path.realpath(config.workspace)
    if config.zvafile is None:
        found = zui_files(config.workspace)
        config.zvafile = f"@.{os.path.splitext(found[0])[0]}" if len(found) == 1 else DEFAULT_ZVAFILE
    for attr, description in [(attr, d) for attr in ("listen", "metrics_listen") for d in getattr(config, attr)]:
        try:
            # parsing binds nothing: the reactor is only stored in the endpoint
            endpoints.serverFromString(MemoryReactor(), description)
        except Exception as err:  # each endpoint parser plugin raises its own kinds of error
            if isinstance(err, ImportError) and description.startswith("ssl:"):
                raise ConfigError(f"{label(attr)}: {description!r} needs pyOpenSSL: pip install 'zbifrost[tls]' "
                                  "(twisted[tls])") from None
            raise ConfigError(f"{label(attr)}: {description!r} is not an endpoint description "
                              f"such as tcp:18774:interface=0.0.0.0 ({err})") from None
    try:
        parse_networks(config.trusted_proxies)
    except ValueError as err:
        raise ConfigError(f"{label('trusted_proxies')}: {err}") from None
    if config.require_auth and not config.tokens_file and config.jwt is None:
        raise ConfigError(f"{label('require_auth')}: needs a tokens file (--tokens FILE or websocket.tokens) "
                          "or a websocket.jwt section")
    if config.tokens_file and not os.path.isfile(config.tokens_file):
        raise ConfigError(f"{label('tokens_file')}: {config.tokens_file} is not a file")
    for origin in config.allowed_origins:
        if origin != "*" and "://" not in origin:
            raise ConfigError(f"{label('allowed_origins')}: {origin!r} must be '*' or scheme://host[:port]")
    if config.broker is not None:
        try:
            broker_address(config.broker)
        except ValueError as err:
            # the URL itself is not repeated: it may hold a password
            raise ConfigError(f"{label('broker')}: not a broker URL ({err}), "
                              f"such as redis://127.0.0.1:6379/0") from None


def broker_address(url):
    """(host, port, db) of a `redis://host[:port][/db]` URL, or ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname or parts.query or parts.fragment or parts.username \
            or parts.password:
        raise ValueError("expected redis://host:port/db, without user, password or query")
    port = 6379 if parts.port is None else parts.port  # a port out of 0-65535 or not a number is a ValueError here
    if port == 0:
        raise ValueError("the port must be between 1 and 65535")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"the database must be a number, got {db!r}")
    return parts.hostname, port, int(db)


def load_config(config_file=None, environ=None, overrides=None):
    """Build a validated Config from the layers, lowest first.

    `overrides` maps Config attribute names to raw values (the command-line flags that were
    given); `environ` defaults to os.environ.
    """
    unknown = set(overrides or {}) - set(_FIELD_TYPES)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values, sources = {}, {}
    layers = []
    if config_file:
        file_keys = {attr: f"{name}.{key}" for name, keys in _SECTIONS.items() for key, attr in keys.items()}
        file_keys.update(_TOP_KEY, channels="channels")
        layers.append((_read_file(config_file), lambda attr: f"config file {config_file}: {file_keys[attr]}"))
    environment_names = {attr: name for name, attr in _ENVIRONMENT.items()}
    layers.append((_read_environment(os.environ if environ is None else environ),
                   lambda attr: f"environment {environment_names[attr]}"))
    layers.append(({attr: _coerce(_flag(attr), attr, value) for attr, value in (overrides or {}).items()}, _flag))
    for layer, describe in layers:
        values.update(layer)
        sources.update({attr: describe(attr) for attr in layer})
    config = Config(**values)
    _validate(config, lambda attr: sources.get(attr, _TOP_KEY.get(attr, attr)))
    return config
