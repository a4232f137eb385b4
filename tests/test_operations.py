"""Operations files: the systemd unit is valid and starts the same command the README shows."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(REPO, "contrib", "systemd", "zbifrost.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    with open(UNIT, encoding="utf-8") as handle:
        text = handle.read()
    assert "/opt/zbifrost/venv/bin/twistd --nodaemon --pidfile= --logfile=- zbifrost --config" in text
    unit = tmp_path / "zbifrost.service"
    unit.write_text(text.replace("/opt/zbifrost/venv/bin/twistd", twistd))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "zbifrost.service" not in result.stderr, result.stderr
