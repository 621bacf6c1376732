"""The example systemd unit: systemd's own checks accept it, its hardening scores as systemd rates
it, and it runs the command the README documents."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "examples" / "ekm-async.service"
ANALYZE = shutil.which("systemd-analyze")
EXPOSURE_MAX = 2.0
"""systemd-analyze security's exposure, at most (0 safest … 10 unsafe; a default service scores 9.6)."""


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart on this environment's ekm-async (systemd checks that it is executable)."""
    if ANALYZE is None:
        pytest.fail("systemd-analyze not found: `apt-get install systemd` (scripts/test installs it)")
    script = Path(sys.executable).with_name("ekm-async")
    text = UNIT.read_text().replace("/opt/ekm-async/bin/ekm-async", str(script))
    path = tmp_path / "ekm-async.service"
    path.write_text(text)
    return path


def test_systemd_accepts_the_unit(unit: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_the_unit_is_hardened(unit: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r"Overall exposure level for ekm-async\.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= EXPOSURE_MAX, result.stdout


def test_the_unit_runs_the_config_command() -> None:
    (line,) = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[1:] == ["run", "--config", "/etc/ekm-async/ekm.toml"]
