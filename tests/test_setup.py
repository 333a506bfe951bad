"""setup.sh refuses to start a virtualenv it has no room to finish."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_stops_early_when_the_disk_is_too_full(tmp_path):
    shutil.copy(ROOT / "setup.sh", tmp_path / "setup.sh")
    done = subprocess.run(
        ["bash", "setup.sh"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CAFEBENCH_SETUP_NEED_GB": "1000000"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "the virtualenv needs about 1000000 GB" in done.stderr
    assert not (tmp_path / ".venv").exists()
