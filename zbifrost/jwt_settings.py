"""The config file's `websocket.jwt` section: which signed tokens zbifrost.auth.JwtVerifier accepts.

`parse_jwt_settings` checks the mapping (docs/protocol.md section 2, signed tokens) and reads
its key file at once, so that a wrong section stops start-up with one line naming the key at
fault; it never logs or repeats the key. Nothing here verifies a token.
"""

import os
from dataclasses import dataclass, field
from typing import Any

import jwt

from .settings import ConfigError, check_mapping

_KEYS = ("secret", "secret_file", "public_key_file", "algorithms", "audience", "issuer", "leeway", "role_claim")
_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


@dataclass(frozen=True)
class JwtSettings:
    """The checked `websocket.jwt` section; `key` is the HMAC secret or the PEM public key itself."""
    key: str = field(repr=False)  # a secret: never in a log line or a traceback
    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 5.0
    role_claim: str = "role"


def parse_jwt_settings(where: str, raw: Any, folder: str) -> JwtSettings:
    """The `websocket.jwt` mapping as JwtSettings (its key file, relative to `folder`, read now),
    or a one-line ConfigError."""
    check_mapping(where, raw, _KEYS, '{secret_file: jwt.key, algorithms: [HS256]}')
    given = [name for name in ("secret", "secret_file", "public_key_file") if raw.get(name) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of secret, secret_file and public_key_file, got "
                          f"{', '.join(given) or 'none'}")
    source, = given
    key = _key(f"{where}.{source}", source, raw[source], folder)
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
    settings: dict[str, Any] = {"key": key, "algorithms": tuple(algorithms)}
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


def _key(where: str, source: str, value: Any, folder: str) -> str:
    """The secret itself, or the contents of the key file `value` names."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string")
    if source == "secret":
        return value
    file = os.path.join(folder, value)
    try:
        with open(file, encoding="utf-8") as handle:
            key = handle.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: cannot read {file} ({getattr(err, 'strerror', None) or err})") from None
    if not key:
        raise ConfigError(f"{where}: {file} is empty")
    return key
