"""Config layering and validation (unit tests of zbifrost.config, no sockets)."""

import os
import re

import pytest

from zbifrost.broker_url import BrokerURL, parse_broker
from zbifrost.config import BUNDLED_WORKSPACE, SETTINGS, ConfigError, load_config
from zbifrost.tap import Options

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def write(tmp_path, text, name="zbifrost.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_serve_the_bundled_demo_on_loopback():
    config = load_config(environ={})
    assert (config.host, config.port, config.backlog) == ("127.0.0.1", 18774, 1024)
    assert (config.zvafile, config.zblock, config.require_auth) == ("@.zUI.level1", None, False)
    assert config.workspace.endswith(("zui", "demo")) and BUNDLED_WORKSPACE
    assert (config.max_message_size, config.max_connections, config.rate, config.burst) == (65536, 10000, 50, 100)


def test_file_then_environment_then_flags_each_override_the_layer_before(tmp_path):
    path = write(tmp_path, "websocket:\n  port: 2000\n  host: 0.0.0.0\n  max_connections: 5\n")
    config = load_config(path, environ={})
    assert (config.port, config.host, config.max_connections) == (2000, "0.0.0.0", 5)
    config = load_config(path, environ={"WEBSOCKET_PORT": "3000", "WEBSOCKET_ALLOWED_ORIGINS": "https://a.example, *"})
    assert (config.port, config.host, config.allowed_origins) == (3000, "0.0.0.0", ["https://a.example", "*"])
    config = load_config(path, environ={"WEBSOCKET_PORT": "3000"}, overrides={"port": "4000"})
    assert config.port == 4000


def test_the_broker_comes_from_websocket_broker_with_redis_defaults_for_port_and_db(tmp_path):
    assert load_config(environ={}).broker == []
    path = write(tmp_path, "websocket:\n  broker: redis://10.0.0.5\n")
    [url] = load_config(path, environ={}).broker
    assert parse_broker(url, {}) == BrokerURL("redis", (("10.0.0.5", 6379),), 0)
    assert parse_broker("redis://[::1]:6380/3", {}) == BrokerURL("redis", (("::1", 6380),), 3)


def test_several_brokers_come_as_a_yaml_list_or_a_repeated_flag_and_a_sentinel_url_stays_whole(tmp_path):
    sentinels = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main/0"
    path = write(tmp_path, f"websocket:\n  broker: [redis://10.0.0.5/0, '{sentinels}']\n")
    assert load_config(path, environ={}).broker == ["redis://10.0.0.5/0", sentinels]
    assert load_config(write(tmp_path, f"websocket:\n  broker: {sentinels}\n"), environ={}).broker == [sentinels]
    options = Options()
    options.parseOptions(["--broker", "redis://10.0.0.5/0", "--broker", "redis://10.0.0.6/0"])
    assert load_config(overrides=options.overrides(), environ={}).broker == ["redis://10.0.0.5/0", "redis://10.0.0.6/0"]


@pytest.mark.parametrize("brokers, message", [
    (["redis://10.0.0.5/0", "http://:secret@10.0.0.6"], "--broker: entry 2: not a broker URL (expected redis://"),
    (["redis://:secret@10.0.0.5/0", "redis://10.0.0.6/0", "redis://10.0.0.5:6379/1"],
     "--broker: entries 1 and 3 are the same Redis (redis://10.0.0.5:6379/1): each shard needs a Redis of its own"),
    (["redis+sentinel://s1,s2/main/0", "redis+sentinel://s1,s2/main/1"],
     "--broker: entries 1 and 2 are the same Redis"),
])
def test_each_broker_of_a_list_is_checked_by_its_entry_and_one_redis_twice_is_refused(brokers, message):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"broker": brokers}, environ={})
    assert str(caught.value).startswith(message)
    assert "secret" not in str(caught.value)


def test_the_same_sentinels_watching_two_masters_are_two_shards():
    brokers = ["redis+sentinel://s1,s2/main/0", "redis+sentinel://s1,s2/other/0"]
    assert load_config(overrides={"broker": brokers}, environ={}).broker == brokers


def test_top_level_workspace_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "ws").mkdir()
    path = write(tmp_path, "zWorkspace: ws\nzVaFile: '@.zUI.main'\nzBlock: Start\n")
    config = load_config(path, environ={})
    assert config.workspace == str((tmp_path / "ws").resolve())
    assert (config.zvafile, config.zblock) == ("@.zUI.main", "Start")


@pytest.mark.parametrize("text, message", [
    ("websocket:\n  port: 0\n", "websocket.port: must be between 1 and 65535, got 0"),
    ("websocket:\n  port: many\n", "websocket.port: expected an integer, got 'many'"),
    ("websocket:\n  colour: blue\n",
     "websocket: unknown key 'colour' (valid keys: allowed_origins, api_key, api_roles,"),
    ("websocket:\n  require_auth: maybe\n", "websocket.require_auth: expected true or false"),
    ("websocket:\n  allowed_origins: [example.com]\n", "must be '*' or scheme://host[:port]"),
    ("websocket:\n  broker: http://:secret@127.0.0.1\n",
     "websocket.broker: not a broker URL (expected redis://host:port/db, rediss://host:port/db or "),
    ("websocket:\n  broker: redis://u:secret@127.0.0.1:0/0\n", "(the port must be between 1 and 65535)"),
    ("websocket: [1]\n", "websocket: expected a mapping"),
    ("websocket:\n  port: [\n", "line 3: invalid YAML"),
    ("- a list\n", "expected a mapping at the top level"),
])
def test_bad_config_files_give_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in str(caught.value) and path in str(caught.value)
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


def test_bad_environment_values_name_the_variable():
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"WEBSOCKET_REQUIRE_AUTH": "perhaps"})
    assert str(caught.value).startswith("environment WEBSOCKET_REQUIRE_AUTH: expected true or false")


def test_require_auth_needs_a_tokens_file_that_exists(tmp_path):
    with pytest.raises(ConfigError, match="needs a tokens file"):
        load_config(environ={"WEBSOCKET_REQUIRE_AUTH": "true"})
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(environ={}, overrides={"require_auth": True, "tokens_file": str(tmp_path / "none.yaml")})


@pytest.mark.parametrize("text, message", [
    ("Websocket:\n  require_auth: true\n", "unknown key 'Websocket' (did you mean 'websocket'?)"),
    ("zworkspace: ws\n", "unknown key 'zworkspace' (did you mean 'zWorkspace'?)"),
    ("colour: blue\n", "unknown key 'colour' (valid keys: channels, proxy, websocket, zBlock, zVaFile, zWorkspace)"),
    ("websocket:\n  requre_auth: true\n", "websocket: unknown key 'requre_auth' (did you mean 'require_auth'?)"),
    # a setting left empty is one line at load, not a crash later
    ("websocket:\n  host:\n", "websocket.host: expected a string, got None"),
    ("zWorkspace:\n", "zWorkspace: expected a string, got None"),
])
def test_an_unknown_or_empty_key_in_a_config_file_is_refused_in_one_line_naming_it(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"config file {path}: {message}"


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    (folder / "ws").mkdir(parents=True)
    (folder / "tokens.yaml").write_text("tokens: []\n")
    path = write(folder, "zWorkspace: ws\nwebsocket:\n  require_auth: true\n  tokens: tokens.yaml\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path, environ={})
    assert config.tokens_file == str(folder / "tokens.yaml")
    assert config.workspace == str((folder / "ws").resolve())


@pytest.mark.parametrize("description", ["garbage:1", "tcp:notaport"])
def test_a_bad_listen_description_is_one_line_naming_it(description):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"listen": [description]})
    assert str(caught.value).startswith(f"--listen: {description!r} is not an endpoint description")
    assert "\n" not in str(caught.value)


def test_a_workspace_with_one_zui_file_serves_it_unless_a_zvafile_is_given(tmp_path):
    (tmp_path / "zUI.main.yaml").write_text("Menu:\n  Ping: Pong\n")
    assert load_config(environ={}, overrides={"workspace": str(tmp_path)}).zvafile == "@.zUI.main"
    given = load_config(environ={}, overrides={"workspace": str(tmp_path), "zvafile": "@.zUI.level1"})
    assert given.zvafile == "@.zUI.level1"
    (tmp_path / "zUI.other.yaml").write_text("Menu:\n  Ping: Pong\n")
    assert load_config(environ={}, overrides={"workspace": str(tmp_path)}).zvafile == "@.zUI.level1"


def test_history_max_bytes_defaults_to_64_mib_and_must_be_positive(tmp_path):
    assert load_config(environ={}).history_max_bytes == 64 * 1024 * 1024
    assert load_config(write(tmp_path, "websocket:\n  history_max_bytes: 1000\n"), environ={}).history_max_bytes == 1000
    with pytest.raises(ConfigError, match=r"websocket.history_max_bytes: must be greater than zero, got 0$"):
        load_config(write(tmp_path, "websocket:\n  history_max_bytes: 0\n"), environ={})


@pytest.mark.parametrize("text, message", [
    ("channels: {pattern: x}", "channels: expected a list of rules"),
    ("channels:\n  - patern: x\n", "channels[0]: unknown key 'patern' (did you mean 'pattern'?)"),
    ("channels:\n  - subscribe: [user]\n", "channels[0].pattern: expected a glob"),
    ("channels:\n  - pattern: |\n      chat.*\n", "channels[0].pattern: expected a glob"),  # 'chat.*\n'
    ("channels:\n  - pattern: 'chat room'\n", "channels[0].pattern: expected a glob"),
    ("channels:\n  - pattern: '*'\n    publish: admin\n", "channels[0].publish: expected a list of roles"),
    ("channels:\n  - pattern: '*'\n    history: {size: -1}\n", "channels[0].history.size: expected an integer of 0"),
    ("channels:\n  - pattern: '*'\n    history: {ttl: 0}\n", "channels[0].history.ttl: expected a number of seconds"),
    ("channels:\n  - pattern: '*'\n    history: {sise: 1}\n", "channels[0].history: unknown key 'sise'"),
    ("channels:\n  - pattern: '*'\n    presence: yes please\n", "channels[0].presence: expected true or false"),
    ("channels:\n  - pattern: '*'\n    join_leave: 1\n", "channels[0].join_leave: expected true or false"),
])
def test_bad_channel_rules_give_one_line_naming_the_rule_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), environ={})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_presence_ttl_defaults_to_30_seconds_and_must_be_positive(tmp_path):
    assert load_config(environ={}).presence_ttl == 30
    assert load_config(write(tmp_path, "websocket:\n  presence_ttl: 2.5\n"), environ={}).presence_ttl == 2.5
    with pytest.raises(ConfigError, match=r"websocket.presence_ttl: must be greater than zero, got 0"):
        load_config(write(tmp_path, "websocket:\n  presence_ttl: 0\n"), environ={})


def test_channel_rules_are_read_in_order_with_open_defaults(tmp_path):
    path = write(tmp_path, "channels:\n  - pattern: 'chat.*'\n    subscribe: [user]\n    history: {size: 5}\n"
                           "  - pattern: '*'\n")
    first, catch_all = load_config(path, environ={}).channels
    assert (first.pattern, first.subscribe, first.publish, first.history.size, first.history.ttl) == (
        "chat.*", ("user",), ("*",), 5, 300)
    assert (catch_all.pattern, catch_all.subscribe, catch_all.history.size) == ("*", ("*",), 100)
    assert (first.presence, first.join_leave) == (False, False)  # presence is off unless a rule turns it on


def test_the_twistd_flags_are_the_declared_ones_and_set_their_settings():
    flags = {setting.flag: setting for setting in SETTINGS.values() if setting.flag}
    help_text = str(Options())
    for flag, setting in flags.items():
        short = f"-{setting.short}, " if setting.short else "    "
        assert f"  {short}--{flag}{'' if setting.switch else '='} " in help_text
    options = Options()
    options.parseOptions(["-p", "2000", "-i", "::1", "--listen", "tcp:1", "--listen", "tcp:2", "--require-auth",
                          "--allowed-origin", "*", "--tokens", "t.yaml", "--zvafile", "@.zUI.main"])
    assert options.overrides() == {"port": "2000", "host": "::1", "listen": ["tcp:1", "tcp:2"], "require_auth": True,
                                   "allowed_origins": ["*"], "tokens_file": "t.yaml", "zvafile": "@.zUI.main"}
    assert Options().overrides() == {}


def _readme_section(start, end):
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return text[text.index(start):text.index(end, text.index(start))]


def test_the_readme_lists_every_setting_with_its_key_flag_and_environment_variable():
    listed = {}
    for row in _readme_section("| setting (`websocket:` key)", "\n\n").splitlines()[2:]:
        setting, flag, environment = row.split(" | ")[:3]
        for name in re.findall(r"`(\w+)`", setting):
            key = name if "top-level" in setting else f"websocket.{name}"
            listed[key] = (re.findall(r"`--([\w-]+)", flag), re.findall(r"`(WEBSOCKET_\w+)`", environment))
    declared = {setting.key: ([setting.flag] if setting.flag else [], [setting.env] if setting.env else [])
                for setting in SETTINGS.values() if setting.key != "channels"}  # channels: its own section
    assert listed == declared


def test_the_readme_names_exactly_the_settings_that_sighup_applies():
    named = re.findall(r"`(\w+):?`", _readme_section("- **Reload:**", "One log line"))
    assert sorted(named) == sorted(name for name, setting in SETTINGS.items() if setting.reloadable)
