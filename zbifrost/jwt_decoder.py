"""PyJWT, set up once per `websocket.jwt` section so that verifying a token at connect stays cheap.

PyJWT still does all the work of verification: the signature, the allowed algorithms, and every claim
check. Three of its per-token costs are moved or cut, and nothing it refuses is accepted:

- the key is prepared (and checked not to be a public key) once, at start-up, not for every token;
- the base64url check of each segment (GHSA-hxm8-2xgr-2p9m) is one `bytes.translate` instead of a Python
  loop over every character, with the same rules and the same errors;
- the claims are parsed with orjson, through PyJWT's `_decode_payload` hook, which it documents for
  subclasses.

Together these take verifying a token from about 30 us to about 12 us per token here (bench/auth_connect.py has the
effect on the connection rate). The segment check and the replaced `PyJWS` are PyJWT internals, and
the rules are those of PyJWT 2.15.1 (2.14 and 2.15.0 refused every '='), so setup.py keeps PyJWT at
2.15.x; tests/test_auth_jwt.py compares the two checks segment by segment.
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


class _Segments(jwt.PyJWS):
    """PyJWS whose segment check runs in C."""

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
        self._jws = _Segments(algorithms=self.algorithms, options=self._get_sig_options())
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
        try:
            payload = orjson.loads(decoded["payload"])
        except orjson.JSONDecodeError as err:
            raise DecodeError(f"Invalid payload string: {err}") from err
        if not isinstance(payload, dict):
            raise DecodeError("Invalid payload string: must be a json object")
        return payload
