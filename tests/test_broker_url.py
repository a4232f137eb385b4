"""The broker URL (docs/protocol.md section 6a) read into a BrokerURL: its forms, the password
from the URL or ZBIFROST_BROKER_PASSWORD, and no error or repr repeating the password."""

import pytest

from zbifrost.broker_url import PASSWORD_VARIABLE, BrokerURL, broker_problem, parse_broker

SECRET = "hunter2-secret"


def test_a_url_with_user_and_password_keeps_them_out_of_repr_and_address():
    target = parse_broker(f"redis://app:{SECRET}%40x@redis.example:6380/2", {})
    assert target == BrokerURL("redis", (("redis.example", 6380),), 2, None, "app", SECRET + "@x")
    assert SECRET not in repr(target)
    assert target.address == "redis://redis.example:6380/2"
    assert parse_broker(f"redis://:{SECRET}@[::1]/0", {}).address == "redis://[::1]:6379/0"


def test_a_sentinel_url_lists_the_sentinels_and_names_the_master():
    target = parse_broker(f"redis+sentinel://:{SECRET}@10.0.0.1,10.0.0.2:26380,[::1]/main/3", {})
    assert target == BrokerURL("redis+sentinel", (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379)), 3,
                               "main", None, SECRET)
    assert target.address == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26379/main/3"
    assert parse_broker("redis+sentinel://10.0.0.1/main", {}).db == 0


def test_the_password_comes_from_the_environment_when_the_url_has_none():
    environ = {PASSWORD_VARIABLE: SECRET}
    assert parse_broker("redis://127.0.0.1:6379/0", environ).password == SECRET
    with_user = parse_broker("redis://app@127.0.0.1:6379/0", environ)
    assert (with_user.username, with_user.password) == ("app", SECRET)
    assert parse_broker("redis://:from-url@127.0.0.1:6379/0", environ).password == "from-url"
    assert parse_broker("redis://127.0.0.1:6379/0", {}).password is None


@pytest.mark.parametrize("url, problem", [
    (f"http://:{SECRET}@127.0.0.1", "expected redis://host:port/db, rediss://host:port/db or redis+sentinel://"),
    (f"redis://:{SECRET}@10.0.0.1,10.0.0.2/0", "several hosts are for redis+sentinel://"),
    (f"redis+sentinel://:{SECRET}@10.0.0.1,10.0.0.2", "the master's name is missing"),
    (f"redis+sentinel://:{SECRET}@10.0.0.1,,10.0.0.2/main", "a host is missing"),
    (f"redis+sentinel://:{SECRET}@10.0.0.1/main/first", "the database must be a number, got 'first'"),
    (f"redis://:{SECRET}@127.0.0.1:0/0", "the port must be between 1 and 65535"),
    (f"redis://:{SECRET}@127.0.0.1:port/0", "Port could not be cast to integer value"),
    (f"redis://:{SECRET}@/0", "a host is missing"),
    (f"redis://:{SECRET}@127.0.0.1/zero", "the database must be a number, got 'zero'"),
    (f"redis://:{SECRET}@127.0.0.1/0?ca=/etc/hostname", "the only query is ?ca=/path/ca.pem, with rediss://"),
])
def test_a_bad_url_is_refused_without_repeating_its_password(url, problem):
    found = broker_problem(url, None)
    assert found is not None and problem in found and SECRET not in found


def test_rediss_takes_a_ca_file_of_pem_certificates(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    target = parse_broker(f"rediss://redis.example/1?ca={ca}", {})
    assert (target.tls, target.ca, target.address) == (True, str(ca), "rediss://redis.example:6379/1")
    assert not parse_broker("redis://redis.example", {}).tls
    assert "the ca= file is not a PEM file of certificates" in broker_problem(f"rediss://h/0?ca={tmp_path}/none", None)
    ca.write_text("not a certificate")
    assert "the ca= file is not a PEM file of certificates" in broker_problem(f"rediss://h/0?ca={ca}", None)
