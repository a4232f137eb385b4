"""TLS and reverse proxies: `wss://` through `--listen ssl:` with a self-signed certificate on a
real twistd, and `trusted_proxies` deciding whose X-Forwarded-For / X-Real-IP names the client."""

import datetime
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess

import pytest
import pytest_twisted
from twisted.logger import formatEvent
from websockets.sync.client import connect as ws_connect

from tests.helpers import in_thread, refused_status
from tests.test_core_twistd import REPO, TWISTD, free_port, stop_process, wait_until_listening


def write_self_signed_certificate(folder):
    """key.pem and cert.pem for 127.0.0.1, made with `cryptography`; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.mark.slow  # twistd runs as a subprocess
def test_wss_through_listen_ssl_answers_ping_with_a_self_signed_certificate(tmp_path):
    pytest.importorskip("OpenSSL", reason="pyOpenSSL is missing: pip install 'zbifrost[tls]'")
    key_path, cert_path = write_self_signed_certificate(tmp_path)
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--listen", listen], cwd=tmp_path,
                               env=dict(environment, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_listening(port, process)
        trust = ssl.create_default_context(cafile=str(cert_path))
        with ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trust, open_timeout=10) as ws:
            json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"zKey": "^Ping", "_requestId": 1}))
            assert json.loads(ws.recv(timeout=10))["result"] == {"message": "Pong!"}
    finally:
        stop_process(process)


def refusal_peers(log_events):
    return [event["peer"] for event in log_events if "Refused a connection" in (formatEvent(event) or "")]


@pytest_twisted.inlineCallbacks
def test_a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored(make_server, log_events):
    server = yield make_server(trusted_proxies=["10.0.0.0/8"], allowed_origins=["http://ok.example"])
    status = yield in_thread(refused_status, server.url, origin="http://evil.example",
                             additional_headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"})
    assert status == 403
    [peer] = refusal_peers(log_events)
    assert peer.startswith("tcp4:127.0.0.1:") and "203.0.113.9" not in peer


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("headers", [{"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
                                     {"X-Real-IP": "203.0.113.9"}], ids=["x-forwarded-for", "x-real-ip"])
def test_a_trusted_proxy_names_the_client_in_logs_and_refusals(make_server, log_events, headers):
    server = yield make_server(trusted_proxies=["127.0.0.1"], allowed_origins=["http://ok.example"])
    status = yield in_thread(refused_status, server.url, origin="http://evil.example", additional_headers=headers)
    assert status == 403
    [peer] = refusal_peers(log_events)
    assert peer.startswith("203.0.113.9 (via tcp4:127.0.0.1:")


def readme_nginx_location():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow  # twistd and nginx run as subprocesses
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (Debian's nginx-light)")
def test_the_readme_nginx_example_proxies_websockets_and_names_the_client(tmp_path):
    zbifrost_port, nginx_port = free_port(), free_port()
    location = readme_nginx_location().replace("127.0.0.1:18774", f"127.0.0.1:{zbifrost_port}")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "error_log logs/error.log;\npid nginx.pid;\nevents {}\nhttp {\n"
        "  access_log off;\n  client_body_temp_path tmp;\n  proxy_temp_path tmp;\n"
        # nginx reaches zbifrost from 127.0.0.2, so that the proxy and the client differ
        f"  server {{\n    listen 127.0.0.1:{nginx_port};\n    proxy_bind 127.0.0.2;\n{location}  }}\n}}\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    server = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(zbifrost_port),
                               "--trusted-proxy", "127.0.0.2", "--allowed-origin", "https://app.example.com"],
                              cwd=tmp_path, env=dict(environment, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", "nginx.conf", "-g", "daemon off;"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_listening(zbifrost_port, server)
        wait_until_listening(nginx_port, nginx)
        with ws_connect(f"ws://127.0.0.1:{nginx_port}/ws", origin="https://app.example.com", open_timeout=10) as ws:
            json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"zKey": "^Ping", "_requestId": 1}))
            assert json.loads(ws.recv(timeout=10))["result"] == {"message": "Pong!"}
        assert refused_status(f"ws://127.0.0.1:{nginx_port}/ws", origin="https://evil.example",
                              additional_headers={"X-Forwarded-For": "203.0.113.9"}) == 403
    finally:
        nginx.terminate()
        nginx.communicate(timeout=20)
        output = stop_process(server)
    # the trusted proxy names the client it saw; the address the client forged is not believed
    assert "Refused a connection from 127.0.0.1 (via tcp4:127.0.0.2:" in output
    assert "203.0.113.9" not in output
