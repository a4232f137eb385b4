"""PyJWT, set up once per `websocket.jwt` section so that verifying a token at connect stays cheap.

PyJWT still does the work of verification: the signature, the allowed algorithms, the header checks
(`kid`, `crit`, `b64`) and every claim check. Its per-token costs that are not verification are moved or
cut, and nothing it refuses is accepted:

- the key is prepared (and checked not to be a public key) once, at start-up, not for every token;
- the base64url check of each segment (GHSA-hxm8-2xgr-2p9m) is one `bytes.translate` instead of a Python
  loop over every character, with the same rules and the same errors;
- the header and the claims are parsed with orjson instead of the standard library's `json`, whose
  Python layers cost more than the parsing itself when they run once per connection.

Together these take verifying an HS256 token from 29.5 us to 8.9 us here in a tight loop; inside the
server, where other work between connections evicts this code from the CPU's caches, it costs 22-30 us
(bench/auth_connect.py has the effect on the connection rate). The segment check and `_load` override
PyJWT internals with the rules of PyJWT 2.15.1 (2.14 and 2.15.0 refused every '='), so setup.py keeps
PyJWT at 2.15.x; tests/test_auth_jwt.py compares the two segment checks and the two parsers.
"""

import binascii

import jwt
import orjson
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import DecodeError
from twisted.logger import Logger

log = Logger()

_BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_STANDARD_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _json_object(data, name):
    """The JSON object `data` holds, as PyJWT requires of a header and of claims; orjson is stricter than
    `json` (no NaN or Infinity, no lone surrogates, UTF-8 only), never more lenient."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise DecodeError(f"Invalid {name} string: {err}") from err
    if not isinstance(value, dict):
        raise DecodeError(f"Invalid {name} string: must be a json object")
    return value


class _CompactForm(jwt.PyJWS):
    """PyJWS whose reading of `header.payload.signature` runs in C where PyJWT 2.15.1 loops in Python."""

    def _load(self, jwt):
        # PyJWS._load with orjson for the header: the same steps, in the same order, with the same errors
        if isinstance(jwt, str):
            jwt = jwt.encode("utf-8")
        if not isinstance(jwt, bytes):
            raise DecodeError(f"Invalid token type. Token must be a {bytes}")
        try:
            signing_input, crypto_segment = jwt.rsplit(b".", 1)
            header_segment, payload_segment = signing_input.split(b".", 1)
        except ValueError as err:
            raise DecodeError("Not enough segments") from err
        header = _json_object(self._decode_base64url_segment(header_segment, "header"), "header")
        if header.get("b64", True) is False:  # a detached payload (RFC 7797), which decode_complete refuses
            if payload_segment:
                raise DecodeError("Payload segment must be empty when 'b64' is false.")
            payload = b""
        else:
            payload = self._decode_base64url_segment(payload_segment, "payload")
        return payload, signing_input, header, self._decode_base64url_segment(crypto_segment, "crypto")

    @staticmethod
    def _decode_base64url_segment(segment, name):
        # The rules of PyJWS._decode_base64url_segment: at most two trailing '=' and only on a length that is
        # a multiple of 4, nothing outside the alphabet, no length of 4n+1 (a2b_base64 refuses it), and a
        # canonical encoding (the unused bits of the last character are zero).
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if padding > 2 or (padding and len(segment) % 4) or stripped.translate(None, _BASE64URL_ALPHABET):
            raise DecodeError(f"Invalid {name} padding")
        try:
            decoded = binascii.a2b_base64(stripped.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(stripped) % 4))
        except binascii.Error as err:
            raise DecodeError(f"Invalid {name} padding") from err
        if binascii.b2a_base64(decoded, newline=False).rstrip(b"=").translate(_STANDARD_TO_URLSAFE) != stripped:
            raise DecodeError(f"Invalid {name} padding")
        return decoded


class _CheckedSecret(HMACAlgorithm):
    """An HMAC algorithm that skips PyJWT's key checks for the one secret already checked at start-up.

    PyJWT checks an HMAC key for every token (that it is not a PEM, SSH or DER public key, nor a JWK, and
    that it is long enough); for the configured secret the answers never change, and the DER probes alone
    cost ~10 us. PreparedDecoder logs a short secret once instead of warning for every token.
    """

    def __init__(self, hash_alg, checked_key):
        super().__init__(hash_alg)
        self.checked_key = checked_key

    def prepare_key(self, key):
        return key if key is self.checked_key else super().prepare_key(key)

    def check_key_length(self, key):
        return None if key is self.checked_key else super().check_key_length(key)


class PreparedDecoder(jwt.PyJWT):
    """`verify(token)` for one JwtSettings: its key, algorithms, audience, issuer and leeway."""

    def __init__(self, settings):
        super().__init__(options={"require": ["exp", "sub"], "verify_aud": settings.audience is not None})
        self.settings = settings
        self.algorithms = list(settings.algorithms)
        # one prepared key serves every listed algorithm: the config refuses a key that does not fit them all
        self.key = jwt.get_algorithm_by_name(self.algorithms[0]).prepare_key(settings.key)
        self._jws = _CompactForm(algorithms=self.algorithms, options=self._get_sig_options())
        for name in self.algorithms:
            algorithm = self._jws.get_algorithm_by_name(name)
            too_short = algorithm.check_key_length(self.key)
            if too_short:
                log.warn("websocket.jwt: {advice}", advice=too_short)
            if isinstance(algorithm, HMACAlgorithm):
                self._jws.unregister_algorithm(name)
                self._jws.register_algorithm(name, _CheckedSecret(algorithm.hash_alg, self.key))

    def verify(self, token):
        """The verified claims of `token`; raises jwt.InvalidTokenError saying why it is refused."""
        settings = self.settings
        return self.decode(token, self.key, algorithms=self.algorithms, audience=settings.audience,
                           issuer=settings.issuer, leeway=settings.leeway)

    def _decode_payload(self, decoded):
        return _json_object(decoded["payload"], "payload")
