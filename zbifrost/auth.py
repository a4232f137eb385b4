"""Who may connect: the token store (hashes only), signed tokens (JWT), the rules every identity
follows, and the Origin policy.

Tokens-file tokens are looked up by their SHA-256; a token of three dot-separated parts is
verified as a JWT when the config has a `jwt` section, through PyJWT's public API only, so that
zbifrost takes PyJWT's security releases as they come. Whatever names a user, a JWT or a tokens-file
entry, follows `identity_problem` (docs/protocol.md section 7a). No token is ever stored or logged.
The store re-reads its file when it changes (checked at each new connection), so a token minted or
revoked with `python -m zbifrost.tokens` takes effect without a restart. Nothing here knows about
WebSocket frames.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import jwt
import yaml
from jwt.warnings import InsecureKeyLengthWarning
from twisted.logger import Logger

from . import filestamp
from .jwt_settings import JwtSettings
from .settings import unknown_key
from .yaml_errors import yaml_error_text

log = Logger()

ANONYMOUS = {"authenticated": True, "user": "anonymous", "role": "guest"}
_FILE_KEYS = ("tokens",)
_ENTRY_KEYS = ("user", "role", "sha256", "expires", "revoked")


class TokenFileError(Exception):
    """The tokens file cannot be read or has a malformed entry."""


class InvalidToken(Exception):
    """A token was refused; str(err) is the reason, fit for the log (never the token)."""


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    expires: float | None = None  # epoch seconds, or None
    revoked: bool = False
    leeway: float = 0.0  # seconds past `expires` that the token is still honoured (JWTs only)

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires is None or now < self.expires)


MAX_USER_LENGTH = 256
MAX_ROLE_LENGTH = 64
_ROLE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_ROLE_LENGTH}}}")
_LARGEST_TIME = 2 ** 53  # seconds; JSON numbers past this lose integer precision in a browser


def identity_problem(user: object, role: object) -> str | None:
    """What is wrong with a user and role that a token names (docs/protocol.md section 7a), or None.

    The user is a non-empty string of at most 256 characters that UTF-8 can carry (no lone surrogate);
    the role a string of 1-64 characters of `[A-Za-z0-9_.:-]`.
    """
    if not isinstance(user, str) or not user:
        return "the user must be a non-empty string"
    if len(user) > MAX_USER_LENGTH:
        return f"the user is longer than {MAX_USER_LENGTH} characters"
    try:
        user.encode("utf-8")
    except UnicodeEncodeError:
        return "the user is not valid Unicode text (a lone surrogate)"
    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        return f"the role must be 1-{MAX_ROLE_LENGTH} characters of A-Z a-z 0-9 _ . : -"
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _expiry(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not _is_time(value):  # 1e20 would be sent back in connection_info, which JSON cannot hold
            raise TokenFileError(f"{where}: expires in epoch seconds must be a number from 0 to 2^53")
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise TokenFileError(f"{where}: expires must be an ISO date/time or epoch seconds") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def read_token_file(path: str) -> dict[str, Identity]:
    """{sha256 hex: Identity} from a tokens YAML file. Raises TokenFileError."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    except OSError as err:
        raise TokenFileError(f"tokens file {path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise TokenFileError(yaml_error_text(f"tokens file {path}", err)) from None
    if not isinstance(raw, dict):
        raise TokenFileError(f"tokens file {path}: expected a mapping with a 'tokens' list at the top level")
    for key in raw:
        if key not in _FILE_KEYS:
            raise TokenFileError(unknown_key(f"tokens file {path}", key, _FILE_KEYS))
    entries = raw.get("tokens")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise TokenFileError(f"tokens file {path}: 'tokens' must be a list")
    table: dict[str, Identity] = {}
    for index, entry in enumerate(entries):
        where = f"tokens file {path}: entry {index + 1}"
        if not isinstance(entry, dict):
            raise TokenFileError(f"{where}: must be a mapping")
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise TokenFileError(unknown_key(where, key, _ENTRY_KEYS))
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise TokenFileError(f"{where}: sha256 must be 64 hex digits")
        problem = identity_problem(entry.get("user"), entry.get("role", "user"))
        if problem is not None:
            raise TokenFileError(f"{where}: {problem}")
        table[digest] = Identity(user=entry["user"], role=entry.get("role", "user"),
                                 expires=_expiry(entry.get("expires"), where),
                                 revoked=bool(entry.get("revoked", False)))
    return table


class TokenStore:
    """Checks tokens against the file, re-reading it when it changes (`zbifrost.filestamp`)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._table: dict[str, Identity] = {}
        self._refresh(strict=True)

    def _refresh(self, strict: bool = False) -> None:
        try:
            stamp = filestamp.stamp(self.path)  # `tokens` replaces the file: a new inode
        except OSError as err:
            if strict:
                raise TokenFileError(f"tokens file {self.path}: cannot read it ({err.strerror})") from None
            return
        if stamp == self._stamp:
            return
        try:
            self._table = read_token_file(self.path)
        except TokenFileError as err:
            if strict:
                raise
            log.error("{error}; keeping the tokens loaded before", error=str(err))
        else:
            if not self._table:
                log.warn("tokens file {path} has no tokens: none of its tokens can connect", path=self.path)
        self._stamp = stamp

    def identify(self, token: str) -> Identity | None:
        """The Identity for a token, or None when it is unknown, expired or revoked."""
        self._refresh()
        identity = self._table.get(hash_token(token))
        if identity is None or not identity.usable(self._clock()):
            return None
        return identity


class JwtVerifier:
    """Checks signed tokens against a `JwtSettings` (docs/protocol.md sections 2 and 7a).

    PyJWT makes every check it makes (signature, allowed algorithms, headers, `exp`, `nbf`, `iat`,
    audience, issuer); zbifrost then holds the claims to the identity rules. A public key is loaded
    once, here, and handed to PyJWT as a key object; an HMAC secret PyJWT prepares for each token.
    """

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self.algorithms = list(settings.algorithms)
        self._decoder = jwt.PyJWT(options={"require": ["exp", "sub"], "verify_aud": settings.audience is not None})
        # one key serves every listed algorithm: the config refuses a key that does not fit them all
        first = jwt.get_algorithm_by_name(self.algorithms[0])
        prepared = first.prepare_key(settings.key)
        self.key = settings.key if isinstance(prepared, bytes) else prepared  # a secret, or a public key object
        for name in self.algorithms:
            too_short = jwt.get_algorithm_by_name(name).check_key_length(prepared)
            if too_short:
                log.warn("websocket.jwt: {advice}", advice=too_short)
                # said once, here, instead of a warning for every token PyJWT verifies with a key this short
                warnings.filterwarnings("ignore", message=re.escape(too_short), category=InsecureKeyLengthWarning)

    def identify(self, token: str) -> Identity:
        """The Identity a JWT names; raises InvalidToken saying which rule it fails."""
        settings = self.settings
        try:
            claims = self._decoder.decode(token, self.key, algorithms=self.algorithms, audience=settings.audience,
                                          issuer=settings.issuer, leeway=settings.leeway)
        except jwt.InvalidTokenError as err:
            raise InvalidToken(f"JWT {type(err).__name__}: {err}") from None
        except (ValueError, TypeError, OverflowError, RecursionError) as err:  # odd input PyJWT does not map
            raise InvalidToken(f"JWT unreadable ({type(err).__name__})") from None
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_time(claims[name]):
                raise InvalidToken(f"JWT claim {name!r} is not a number of seconds from 0 to 2^53")
        problem = identity_problem(claims["sub"], claims.get(settings.role_claim, "user"))
        if problem is not None:
            raise InvalidToken(f"JWT claims: {problem} (claims 'sub' and {settings.role_claim!r})")
        return Identity(user=claims["sub"], role=claims.get(settings.role_claim, "user"),
                        expires=float(claims["exp"]), leeway=settings.leeway)


def _is_time(value: object) -> bool:
    """A JSON number of seconds that zbifrost can hold and send back: 0 to 2^53, finite, not a bool."""
    return (type(value) is int or (type(value) is float and math.isfinite(value))) and 0 <= value <= _LARGEST_TIME


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Credentials:
    """Every way a token is accepted: the tokens file, JWTs, or both side by side."""

    def __init__(self, store: TokenStore | None = None, verifier: JwtVerifier | None = None) -> None:
        self.store = store
        self.verifier = verifier

    def identify(self, token: str) -> Identity:
        """The Identity of a token; raises InvalidToken with the reason when it is refused."""
        if self.verifier is not None and _looks_like_jwt(token):
            return self.verifier.identify(token)
        found = self.store.identify(token) if self.store is not None else None
        if found is None:
            raise InvalidToken("unknown, expired or revoked token")
        return found


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(origin: str) -> str | None:
    """`scheme://host:port` with the default port filled in, lower-cased; None if malformed."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or not parts.hostname:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
        if port is None:
            return None
    hostname = parts.hostname.lower()
    return f"{scheme}://{f'[{hostname}]' if ':' in hostname else hostname}:{port}"


class OriginPolicy:
    """docs/protocol.md section 2 step 2: the server's own origin always, listed origins exactly.

    Same-origin (the Origin's host and port equal the `Host` header) is accepted whatever
    `allowed_origins` holds, so the page at `/` works behind any list; it also requires the
    `Host` to be an IP address or `localhost`: a page of `http://evil.example` whose name was
    re-pointed at 127.0.0.1 (DNS rebinding) sends a matching Origin and Host, so a named host
    must be listed in `allowed_origins`.
    """

    def __init__(self, allowed_origins: Iterable[str]) -> None:
        self.any = "*" in allowed_origins
        self.allowed = {normalize_origin(o) for o in allowed_origins if o != "*"} - {None}

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None or self.any:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        return normalized in self.allowed or _same_origin(normalized, host_header)


def _same_origin(normalized: str, host_header: str | None) -> bool:
    scheme = normalized.split("://", 1)[0]
    host = normalize_origin(f"{scheme}://{host_header}") if host_header else None
    return host == normalized and _not_rebindable(urlsplit(host).hostname)


def _not_rebindable(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    if hostname is None:
        return False
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True
