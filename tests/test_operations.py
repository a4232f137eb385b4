"""Operations files: the systemd units are valid, sandboxed, and start the command the README shows."""

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(REPO, "contrib", "systemd")
UNIT_NAMES = ("zbifrost.service", "zbifrost@.service", "zbifrost.socket")
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def installed_units(folder):
    """The units as installed, with this test run's twistd standing in for /opt/zbifrost/venv's;
    the template is also instantiated as zbifrost@1.service."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    paths = {}
    for name in (*UNIT_NAMES, "zbifrost@1.service"):
        with open(os.path.join(UNITS, name.replace("@1", "@")), encoding="utf-8") as handle:
            text = handle.read()
        paths[name] = folder / name
        paths[name].write_text(text.replace("/opt/zbifrost/venv/bin/twistd", twistd))
    return paths


def test_the_service_units_start_the_readme_command_as_a_notify_service_with_reload():
    for name in ("zbifrost.service", "zbifrost@.service"):
        with open(os.path.join(UNITS, name), encoding="utf-8") as handle:
            text = handle.read()
        command = "/opt/zbifrost/venv/bin/twistd --nodaemon --pidfile= --logger=zbifrost.logs.text zbifrost --config"
        assert command in text
        assert "\nType=notify\n" in text and "\nExecReload=/bin/kill -HUP $MAINPID\n" in text
    with open(os.path.join(UNITS, "zbifrost@.service"), encoding="utf-8") as handle:
        assert "\nSockets=zbifrost.socket\n" in handle.read()


@pytest.mark.slow  # runs systemd-analyze
@needs_systemd_analyze
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path):
    units = installed_units(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units.values())], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "zbifrost" not in result.stderr, result.stderr


@pytest.mark.slow  # runs systemd-analyze
@needs_systemd_analyze
@pytest.mark.parametrize("name", ["zbifrost.service", "zbifrost@1.service"])
def test_systemd_analyze_security_rates_the_service_units_2_or_lower(tmp_path, name):
    unit = installed_units(tmp_path)[name]
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout
