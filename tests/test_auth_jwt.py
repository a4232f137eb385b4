"""Signed tokens (JWT), token expiry on an open connection and `refresh`, over real sockets
(docs/protocol.md section 2, version 1.2)."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import time
import warnings

import jwt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import reactor, task
from twisted.logger import LogLevel, formatEvent

from zbifrost.auth import InvalidToken, JwtVerifier
from zbifrost.config import ConfigError, load_config
from zbifrost.jwt_settings import JwtSettings
from zbifrost.testing import BifrostError, ConnectionClosed, connect

from .helpers import http_request, in_thread, write_tokens

SECRET = "a shared secret of sixty-four bytes or more, as RFC 7518 asks for HS512"
AUDIENCE, ISSUER = "my-app", "https://app.example"


def _config(tmp_path, jwt_section, tokens=None):
    lines = ["websocket:", "  require_auth: true", "  jwt:"] + [f"    {line}" for line in jwt_section]
    if tokens:
        lines.append(f"  tokens: {tokens}")
    path = tmp_path / "zbifrost.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _claims(**changes):
    claims = {"sub": "alice", "role": "admin", "exp": int(time.time()) + 60, "aud": AUDIENCE, "iss": ISSUER}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _sign(secret=SECRET, algorithm="HS256", **changes):
    return jwt.encode(_claims(**changes), secret, algorithm=algorithm)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac_token(key, claims):
    """An HS256 token signed with `key` by hand (PyJWT refuses a PEM key as an HMAC secret); `claims` may be
    raw bytes."""
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(payload)}"
    return f"{signing_input}.{_b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def _sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def jwt_server(make_server, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.yaml", ("bob-token", "bob", "user"))
    section = [f"secret: {json.dumps(SECRET)}", f"audience: {AUDIENCE}", f"issuer: {json.dumps(ISSUER)}", "leeway: 0"]
    return pytest_twisted.blockon(make_server(config_file=_config(tmp_path, section, tokens)))


@pytest.fixture
def rsa_keys(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "public.pem").write_bytes(public_pem)
    return private, public_pem


def _bad_tokens():
    now = int(time.time())
    header_none = _b64(b'{"alg":"none","typ":"JWT"}')
    good = _sign()
    header, claims, signature = good.split(".")
    # the signature's last character carries 2 unused bits: flipping one keeps the bytes but not the encoding
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    non_canonical = signature[:-1] + last[last.index(signature[-1]) ^ 1]
    return {
        "bad signature": _sign(secret="another secret of sixty-four bytes or more, as RFC 7518 asks for HS512"),
        "alg none": f"{header_none}.{_b64(json.dumps(_claims()).encode())}.",
        "algorithm not listed": _sign(algorithm="HS512"),
        "expired": _sign(exp=now - 30),
        "nbf in the future": _sign(nbf=now + 30),
        "iat in the future": _sign(iat=now + 30),
        "wrong audience": _sign(aud="other-app"),
        "wrong issuer": _sign(iss="https://evil.example"),
        "no exp": _sign(exp=None),
        "no sub": _sign(sub=None),
        "garbage": "garbage",
        "three dot parts of garbage": "abc.def.ghi",
        # the signature segment is not signed: only the segment check refuses these two
        "a character outside base64url": f"{header}.{claims}.{signature[:5]}!{signature[5:]}",
        "padding inside a segment": f"{header}.{claims}.{signature[:4]}=={signature[4:]}",
        "a non-canonical signature encoding": f"{header}.{claims}.{non_canonical}",
        "claims that are not JSON": _hmac_token(SECRET.encode(), b"{'sub': 'alice'}"),
        "claims that are a JSON array": _hmac_token(SECRET.encode(), ["alice"]),
    }


@pytest_twisted.inlineCallbacks
def test_every_kind_of_bad_jwt_closes_1008_invalid_token(jwt_server):
    for case, token in _bad_tokens().items():
        with pytest.raises(ConnectionClosed) as caught:
            yield connect(jwt_server.url, token=token)
        assert (caught.value.code, caught.value.reason) == (1008, "Invalid token"), case
    assert jwt_server.hub.metrics.connections_refused["invalid_token"] == len(_bad_tokens())


@pytest_twisted.inlineCallbacks
def test_a_refused_jwt_is_logged_at_warning_with_the_reason_and_peer_but_never_the_token(jwt_server, log_events):
    token = _sign(exp=int(time.time()) - 30)
    with pytest.raises(ConnectionClosed):
        yield connect(jwt_server.url, token=token)
    lines = [(event["log_level"], formatEvent(event)) for event in log_events]
    refusals = [text for level, text in lines if level == LogLevel.warn and "Refused a connection" in text]
    assert len(refusals) == 1 and "ExpiredSignatureError" in refusals[0] and "127.0.0.1" in refusals[0]
    assert not [text for _, text in lines if token.split(".")[2] in text]


@pytest_twisted.inlineCallbacks
def test_a_good_jwt_gives_user_role_and_expires_and_tokens_file_tokens_still_work(jwt_server):
    expires = int(time.time()) + 60
    client = yield connect(jwt_server.url, token=_sign(exp=expires))
    assert client.info["auth"] == {"authenticated": True, "user": "alice", "role": "admin", "expires": expires}
    assert {"jwt", "refresh"} <= set(client.info["features"])
    without_role = yield connect(jwt_server.url, token=_sign(sub="carol", role=None))
    assert without_role.info["auth"]["role"] == "user"
    staff = yield connect(jwt_server.url, token="bob-token")
    assert staff.info["auth"] == {"authenticated": True, "user": "bob", "role": "user", "expires": None}
    for each in (client, without_role, staff):
        yield each.close()


@pytest_twisted.inlineCallbacks
def test_public_key_jwts_are_accepted_and_the_public_key_is_never_an_hmac_secret(make_server, tmp_path, rsa_keys):
    private, public_pem = rsa_keys
    server = yield make_server(config_file=_config(tmp_path, ["public_key_file: public.pem", "algorithms: [RS256]"]))
    client = yield connect(server.url, token=jwt.encode(_claims(aud=None, iss=None), private, algorithm="RS256"))
    assert client.info["auth"]["user"] == "alice"
    yield client.close()
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(server.url, token=_hmac_token(public_pem, _claims(aud=None, iss=None)))
    assert (caught.value.code, caught.value.reason) == (1008, "Invalid token")


@pytest.mark.slow  # about 1.5 s
@pytest_twisted.inlineCallbacks
def test_a_jwt_closes_1008_token_expired_when_it_expires(jwt_server):
    client = yield connect(jwt_server.url, token=_sign(exp=int(time.time()) + 2))
    code, reason = yield client.closed.addTimeout(10, reactor)
    assert (code, reason) == (1008, "Token expired")


@pytest.mark.slow  # about 2 s
@pytest_twisted.inlineCallbacks
def test_a_tokens_file_token_expiring_on_an_open_connection_closes_it(make_server, tmp_path):
    expires = int(time.time()) + 2
    tokens = write_tokens(tmp_path / "tokens.yaml", ("soon-token", "sam", "user", {"expires": expires}))
    server = yield make_server(require_auth=True, tokens_file=tokens)
    client = yield connect(server.url, token="soon-token")
    assert client.info["auth"]["expires"] == expires
    code, reason = yield client.closed.addTimeout(10, reactor)
    assert (code, reason) == (1008, "Token expired")


@pytest.mark.slow  # about 3 s
@pytest_twisted.inlineCallbacks
def test_a_refresh_in_time_keeps_the_connection_open_with_the_new_role(jwt_server):
    old_expiry = int(time.time()) + 2
    client = yield connect(jwt_server.url, token=_sign(exp=old_expiry, role="user"))
    new_expiry = int(time.time()) + 60
    assert (yield client.request("refresh", token=_sign(exp=new_expiry, role="admin"))) == {"expires": new_expiry}
    yield _sleep(max(0, old_expiry + 1 - time.time()))  # past the old token's expiry
    info = yield client.request("connection_info")
    assert info["auth"] == {"authenticated": True, "user": "alice", "role": "admin", "expires": new_expiry}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_refresh_with_another_users_token_is_forbidden_and_a_bad_one_invalid_token(jwt_server):
    expires = int(time.time()) + 60
    client = yield connect(jwt_server.url, token=_sign(exp=expires))
    for token, code in ((_sign(sub="mallory"), "forbidden"), ("bob-token", "forbidden"),
                        (_sign(exp=int(time.time()) - 30), "invalid_token"), ("nonsense", "invalid_token")):
        with pytest.raises(BifrostError) as caught:
            yield client.request("refresh", token=token)
        assert caught.value.code == code, token
    assert (yield client.request("connection_info"))["auth"]["expires"] == expires
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_refresh_with_auth_off_is_forbidden(server):
    client = yield connect(server.url)
    with pytest.raises(BifrostError) as caught:
        yield client.request("refresh", token=_sign())
    assert caught.value.code == "forbidden"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_jwt_whose_role_is_in_api_roles_may_post_to_the_publish_api(jwt_server):
    body = json.dumps({"channel": "orders", "data": 1}).encode()
    for role, status in (("admin", 200), ("user", 403)):
        headers = {"Authorization": f"Bearer {_sign(role=role)}"}
        assert (yield in_thread(http_request, jwt_server.port, "POST", "/api/publish", body, headers))[0] == status


@pytest.mark.parametrize("section, message", [
    ([], "give exactly one of secret, secret_file and public_key_file, got none"),
    (["secret: x", "secret_file: y"],
     "give exactly one of secret, secret_file and public_key_file, got secret, secret_file"),
    (["secret: x", "algorithms: [HS999]"], "unknown algorithm 'HS999'"),
    (["secret: x", "algorithms: [none]"], "unknown algorithm 'none'"),
    (["secret: x", "algorithms: [RS256]"], "RS256 does not go with secret"),
    (["secret_file: missing.key"], "secret_file: cannot read"),
    (["secret: x", "leway: 5"], "unknown key 'leway' (did you mean 'leeway'?)"),
    (["secret: x", "leeway: -1"], "leeway: expected a number of seconds"),
])
def test_a_wrong_jwt_section_stops_the_start_with_one_line(tmp_path, section, message):
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, section or ["{}"]), environ={})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_require_auth_with_only_a_jwt_section_starts(tmp_path):
    (tmp_path / "jwt.key").write_text(SECRET + "\n")
    config = load_config(_config(tmp_path, ["secret_file: jwt.key"]), environ={})
    assert (config.require_auth, config.tokens_file, config.jwt.key) == (True, None, SECRET)


def test_the_flask_examples_config_starts_with_its_secret_file(tmp_path):
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "jwt-flask")
    for name in ("zbifrost.yaml", "app.py", "index.html"):
        shutil.copy(os.path.join(example, name), tmp_path)
    (tmp_path / "jwt.secret").write_text(SECRET + "\n")
    config = load_config(str(tmp_path / "zbifrost.yaml"), environ={})
    assert (config.require_auth, config.jwt.key, config.jwt.audience) == (True, SECRET, "my-app")


def test_the_verifier_accepts_every_listed_algorithm_and_loads_a_public_key_once(rsa_keys):
    hmac_verifier = JwtVerifier(JwtSettings(key=SECRET, algorithms=("HS256", "HS512")))
    for algorithm in ("HS256", "HS512"):
        assert hmac_verifier.identify(_sign(algorithm=algorithm, aud=None)).user == "alice"
    with pytest.raises(InvalidToken, match="InvalidAlgorithmError"):
        hmac_verifier.identify(_sign(algorithm="HS384", aud=None))
    private, public_pem = rsa_keys
    rsa_verifier = JwtVerifier(JwtSettings(key=public_pem.decode(), algorithms=("RS256", "PS256")))
    assert isinstance(rsa_verifier.key, rsa.RSAPublicKey)  # not the PEM text, parsed again for every token
    for algorithm in ("RS256", "PS256"):
        assert rsa_verifier.identify(jwt.encode(_claims(aud=None), private, algorithm=algorithm)).user == "alice"
    with pytest.raises(InvalidToken, match="InvalidAlgorithmError"):  # the public key used as an HMAC secret
        rsa_verifier.identify(_hmac_token(public_pem, _claims(aud=None)))


def test_a_short_secret_is_logged_once_at_start_and_not_warned_about_for_every_token(log_events):
    verifier = JwtVerifier(JwtSettings(key="short secret"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns when it signs with a short secret, too
        tokens = [_sign(secret="short secret", aud=None) for _ in range(3)]
    with warnings.catch_warnings(record=True) as warned:  # the filters in force, recording what they let through
        assert [verifier.identify(token).user for token in tokens] == ["alice"] * 3
    assert warned == []
    lines = [formatEvent(event) for event in log_events if event["log_level"] == LogLevel.warn]
    assert len(lines) == 1 and "12 bytes long" in lines[0] and "short secret" not in lines[0]


@pytest.mark.parametrize("make_private, algorithm", [
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
], ids=["RSA", "EC"])
def test_a_private_key_as_public_key_file_stops_the_start_with_one_line(tmp_path, make_private, algorithm):
    pem = make_private().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    (tmp_path / "key.pem").write_bytes(pem)
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, ["public_key_file: key.pem", f"algorithms: [{algorithm}]"]), environ={})
    assert "public_key_file: holds a private key; give its public key" in str(caught.value)
    assert "\n" not in str(caught.value)


def _raw_claims(**raw):
    """The claims of a good token as JSON text, with `raw` values written as given (NaN, 1e20, ...)."""
    fields = {"sub": '"alice"', "role": '"admin"', "exp": str(int(time.time()) + 60), "aud": f'"{AUDIENCE}"',
              "iss": json.dumps(ISSUER)}
    fields.update(raw)
    return ("{" + ",".join(f'"{name}":{value}' for name, value in fields.items() if value is not None) + "}").encode()


def _hmac_header_token(header, claims):
    """An HS256 token with a header of our own, `header` given as JSON text."""
    signing_input = f"{_b64(header.encode())}.{_b64(claims)}"
    return f"{signing_input}.{_b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


# Tokens the signer signed but whose claims break the identity rules of docs/protocol.md section 7a; before
# them, an exp of 1e20 closed with 1011 and an empty or 300-character sub connected.
BAD_CLAIMS = {
    "exp 1e20": _raw_claims(exp="1e20"),
    "exp 2^64": _raw_claims(exp=str(2 ** 64)),
    "exp 10^400": _raw_claims(exp="1" + "0" * 400),
    "exp as a string": _raw_claims(exp=f'"{int(time.time()) + 60}"'),
    "exp NaN": _raw_claims(exp="NaN"),
    "exp Infinity": _raw_claims(exp="Infinity"),
    "exp an object": _raw_claims(exp='{"a": 1}'),
    "exp true": _raw_claims(exp="true"),
    "nbf as a string": _raw_claims(nbf='"0"'),
    "nbf -Infinity": _raw_claims(nbf="-Infinity"),
    "iat negative": _raw_claims(iat="-1"),
    "iat -1e300": _raw_claims(iat="-1e300"),
    "sub empty": _raw_claims(sub='""'),
    "sub of 257 characters": _raw_claims(sub=json.dumps("a" * 257)),
    "sub of 300 characters": _raw_claims(sub=json.dumps("a" * 300)),
    "sub a lone surrogate": _raw_claims(sub='"\\ud800"'),
    "sub a number": _raw_claims(sub="5"),
    "sub an object": _raw_claims(sub='{"name": "alice"}'),
    "sub null": _raw_claims(sub="null"),
    "role empty": _raw_claims(role='""'),
    "role of 65 characters": _raw_claims(role=json.dumps("r" * 65)),
    "role with a space": _raw_claims(role='"ad min"'),
    "role with a newline": _raw_claims(role='"admin\\n"'),
    "role with ESC": _raw_claims(role='"\\u001b[31madmin"'),
    "role a list": _raw_claims(role='["admin"]'),
    "role a number": _raw_claims(role="7"),
    "role null": _raw_claims(role="null"),
    "claims nested 3000 deep": _raw_claims(x="[" * 3000 + "]" * 3000),
}
BAD_HEADERS = {
    "kid a number": '{"alg":"HS256","kid":5}',
    "kid an object": '{"alg":"HS256","kid":{"a":[]}}',
    "crit not a list": '{"alg":"HS256","crit":"b64"}',
    "crit with ESC": '{"alg":"HS256","crit":["\\u001b[2J\\r\\nforged"]}',
    "alg a list": '{"alg":["HS256"]}',
    "alg null": '{"alg":null}',
    "header nested 3000 deep": '{"alg":"HS256","x":' + "[" * 3000 + "]" * 3000 + "}",
    "header an array": '["HS256"]',
}


def _bad_claim_tokens():
    tokens = {case: _hmac_token(SECRET.encode(), claims) for case, claims in BAD_CLAIMS.items()}
    tokens.update((case, _hmac_header_token(header, _raw_claims())) for case, header in BAD_HEADERS.items())
    return tokens


@pytest_twisted.inlineCallbacks
def test_a_jwt_with_claims_or_a_header_of_the_wrong_shape_closes_1008_with_one_warning_naming_the_rule(
        jwt_server, log_events):
    for case, token in _bad_claim_tokens().items():
        del log_events[:]
        with pytest.raises(ConnectionClosed) as caught:
            yield connect(jwt_server.url, token=token)
        assert (caught.value.code, caught.value.reason) == (1008, "Invalid token"), case
        warned = [formatEvent(e) for e in log_events if e["log_level"] == LogLevel.warn]
        assert len(warned) == 1 and "invalid_token: JWT" in warned[0], (case, warned)
        assert not [e for e in log_events if e["log_level"] >= LogLevel.error or e.get("log_failure")], case
    assert jwt_server.hub.metrics.connections_refused["invalid_token"] == len(_bad_claim_tokens())


@pytest_twisted.inlineCallbacks
def test_the_longest_sub_and_role_the_rules_allow_connect(jwt_server):
    user, role = "u" * 256, "Role_1.a:b-" + "r" * 53
    client = yield connect(jwt_server.url, token=_hmac_token(SECRET.encode(), _raw_claims(
        sub=json.dumps(user), role=json.dumps(role), iat="0", nbf=str(int(time.time())))))
    assert (client.info["auth"]["user"], client.info["auth"]["role"]) == (user, role)
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_refresh_with_a_token_of_bad_claims_is_invalid_token_and_the_connection_stays(jwt_server):
    client = yield connect(jwt_server.url, token=_sign())
    for case in ("exp 1e20", "sub empty", "role with a newline"):
        with pytest.raises(BifrostError) as caught:
            yield client.request("refresh", token=_hmac_token(SECRET.encode(), BAD_CLAIMS[case]))
        assert caught.value.code == "invalid_token", case
    assert (yield client.request("connection_info"))["auth"]["user"] == "alice"
    yield client.close()
