"""``python -m wizard --self-test`` from source: the same checks the frozen exe runs.

Each test runs the self-test in a fresh interpreter, as the exe does, so nothing imported by
pytest (or by another test) can hide a missing import.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from wizard import selftest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "assets" / "samples"

pytestmark = pytest.mark.network  # the receivers it starts listen on 127.0.0.1


def _run_selftest(env_extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(selftest.SAMPLES_ENV, None)
    env.pop(selftest.REPORT_ENV, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "wizard", "--self-test"], cwd=str(ROOT),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=180)


def _samples_copy(tmp_path: Path) -> Path:
    target = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(target))
    return target


def _line(output: str, prefix: str) -> str:
    matches = [line for line in output.splitlines() if line.startswith(prefix)]
    assert matches, "no line starting with %r in:\n%s" % (prefix, output)
    return matches[0]


@pytest.fixture(scope="module")
def passing_run() -> subprocess.CompletedProcess:
    return _run_selftest()


def test_all_checks_pass_from_source(passing_run: subprocess.CompletedProcess) -> None:
    out = passing_run.stdout
    assert passing_run.returncode == 0, out + passing_run.stderr
    assert "FAIL" not in out
    for sample in selftest.SAMPLES:
        _line(out, "PASS decode %s (%s)" % (sample.label, sample.name))
    for check in ("assets present", "codec plugins found", "GUI toolkit (Tcl/Tk) bundled",
                  "C-ECHO practice receiver", "send %s" % selftest.SEND_SAMPLE):
        _line(out, "PASS " + check)
    assert "arrived decompressed, pixels identical" in out
    assert out.rstrip().splitlines()[-1].startswith("Self-test passed: all 13 checks")


def test_every_compressed_syntax_the_exe_must_decode_has_a_sample() -> None:
    covered = {sample.transfer_syntax for sample in selftest.SAMPLES}
    required = {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended 12-bit
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    }
    assert required <= covered
    total = sum(p.stat().st_size for p in SAMPLES.glob("*.dcm"))
    assert total < 256 * 1024, "samples grew to %d bytes; keep the exe small" % total
    names = {p.name for p in SAMPLES.glob("*.dcm")}
    assert names == set(selftest._sample_files()), "unused or missing sample files"


def test_corrupted_sample_fails_and_exits_1(tmp_path: Path) -> None:
    samples = _samples_copy(tmp_path)
    target = samples / "MR_small_jp2klossless.dcm"
    data = bytearray(target.read_bytes())
    start = len(data) - 2000  # inside the JPEG 2000 code-stream, well before its end marker
    data[start:start + 64] = bytes(64)
    target.write_bytes(bytes(data))

    result = _run_selftest({selftest.SAMPLES_ENV: str(samples)})

    assert result.returncode == 1, result.stdout + result.stderr
    line = _line(result.stdout, "FAIL decode JPEG 2000 Lossless (MR_small_jp2klossless.dcm): ")
    assert "differ" in line or "damaged" in line or "Error" in line, line
    # The other codecs are unaffected and still reported on their own line.
    _line(result.stdout, "PASS decode JPEG-LS Lossless")
    assert "Self-test FAILED" in result.stdout


def test_missing_and_mislabelled_samples_fail(tmp_path: Path) -> None:
    samples = _samples_copy(tmp_path)
    (samples / "JPGExtended.dcm").unlink()
    # An uncompressed file where the RLE sample should be: the codec would not be exercised.
    shutil.copy2(str(samples / "MR_small.dcm"), str(samples / "MR_small_RLE.dcm"))

    result = _run_selftest({selftest.SAMPLES_ENV: str(samples)})

    assert result.returncode == 1, result.stdout + result.stderr
    assert "samples/JPGExtended.dcm" in _line(result.stdout, "FAIL assets present: ")
    assert "sample file missing" in _line(result.stdout, "FAIL decode JPEG Extended 12-bit")
    assert "not 1.2.840.10008.1.2.5" in _line(result.stdout, "FAIL decode RLE Lossless")


def test_report_file_holds_the_same_lines(tmp_path: Path) -> None:
    report = tmp_path / "selftest.txt"

    result = _run_selftest({selftest.REPORT_ENV: str(report)})

    assert result.returncode == 0, result.stdout + result.stderr
    assert report.read_text(encoding="utf-8").splitlines() == result.stdout.splitlines()


def test_selftest_does_not_import_the_wizard_ui() -> None:
    # Headless: the module must load without the Tk wizard (only check_tcl touches tkinter).
    code = ("import sys, wizard.selftest; "
            "bad = [m for m in sys.modules if m == 'tkinter' or m.startswith('wizard.') "
            "and m != 'wizard.selftest']; print(bad); sys.exit(1 if bad else 0)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stdout
