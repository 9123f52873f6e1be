"""The portable single-file build: scripts/build_linux.sh freezes dicom_migrator.spec with the
legacy stack, runs the binary's --self-test headless and checks its size budget.

Slow (about a minute, more with a cold pip cache). It builds the legacy stack in its own venv,
so it runs once per CI run: in the legacy pytest run. SKIP_BUILD=1 skips it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from engine import compat

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "dist" / "DICOMPACSMigrator"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux build only"),
    pytest.mark.skipif(compat.PYDICOM_MAJOR >= 3,
                       reason="builds the legacy stack: runs once, in the legacy pytest run"),
    pytest.mark.skipif(os.environ.get("SKIP_BUILD") == "1", reason="SKIP_BUILD=1"),
]


def _build_info() -> Dict[str, str]:
    lines = (ROOT / "dist" / "build-info.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


@pytest.fixture(scope="module")
def built() -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}  # the build has its own venv
    return subprocess.run(["bash", str(ROOT / "scripts" / "build_linux.sh")], cwd=str(ROOT),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=1500)


@pytest.mark.timeout(1800)
def test_build_passes_its_self_test_within_budget(built: subprocess.CompletedProcess,
                                                  capsys: pytest.CaptureFixture) -> None:
    tail = "\n".join(built.stdout.splitlines()[-40:])
    assert built.returncode == 0, tail
    assert "Self-test passed" in built.stdout, tail
    assert "FAIL" not in built.stdout, tail
    info = _build_info()
    size, budget = int(info["size_bytes"]), int(info["size_budget_bytes"])
    with capsys.disabled():  # record the size in the CI log even under pytest -q
        print("\n[build] dist/DICOMPACSMigrator: %.1f MB (%d bytes, budget %.0f MB), %s, "
              "build %s s" % (size / 1e6, size, budget / 1e6, info["python"],
                              info["build_seconds"]))
    assert size <= budget


@pytest.mark.timeout(1800)
def test_built_binary_is_also_the_cli(built: subprocess.CompletedProcess) -> None:
    """A first argument that is a sub-command runs engine.cli instead of the wizard."""
    assert built.returncode == 0, built.stdout[-3000:]
    from engine.receiver import start_receiver

    receiver = start_receiver(0, aet="PRACTICE")
    try:
        result = subprocess.run(
            [str(BINARY), "echo", "--host", "127.0.0.1", "--port", str(receiver.port),
             "--called-aet", "PRACTICE", "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
            timeout=120)
    finally:
        receiver.stop()
    assert result.returncode == 0, result.stdout
    assert "C-ECHO answered" in result.stdout
    unknown = subprocess.run([str(BINARY), "no-such-command"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert unknown.returncode == 2, unknown.stdout


@pytest.mark.gui
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (Xvfb)")
def test_built_binary_opens_the_wizard(built: subprocess.CompletedProcess,
                                       tmp_path: Path) -> None:
    """The self-test never opens a window; this shows the bundled Tk really can."""
    assert built.returncode == 0, built.stdout[-3000:]
    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"))
    proc = subprocess.Popen([str(BINARY)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    try:
        deadline = time.monotonic() + 60
        logs: List[Path] = []
        while time.monotonic() < deadline and proc.poll() is None and not logs:
            time.sleep(0.5)
            logs = list((tmp_path / "data").glob("*/logs/wizard-*.log"))
        time.sleep(3)  # past start-up: a Tk or import error would have ended it by now
        assert proc.poll() is None, "the wizard exited (%s):\n%s" % (
            proc.returncode, proc.communicate(timeout=10)[0])
        assert logs, "the wizard wrote no log file"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
