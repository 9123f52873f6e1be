"""Headless self-test of a build: ``python -m wizard --self-test`` or ``DICOMPACSMigrator.exe
--self-test``.

A frozen exe can lose what works from source: a codec plugin that is found through package
metadata (entry points), a pixel handler pydicom imports at run time, a data file. This test runs
the engine's real code paths on the bundled samples in ``assets/samples`` and prints one line per
check, ``PASS <check>`` or ``FAIL <check>: <reason>``. :func:`run` returns 0 only if every check
passed.

It imports only the engine, never the wizard's Tk modules, so it needs no display. The one GUI
check loads the Tcl interpreter (no window, no display needed) to prove the Tcl/Tk files were
bundled.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, List, Optional, Tuple

# A folder to use instead of the bundled samples (tests corrupt a copy to see FAIL lines).
SAMPLES_ENV = "DICOM_MIGRATOR_SAMPLES"
# Also write the report to this file: a windowed Windows exe has no console to print to.
REPORT_ENV = "DICOM_MIGRATOR_SELFTEST_REPORT"

EXPLICIT_LE = "1.2.840.10008.1.2.1"
ICON_FILES = ("app.ico", "app-16.png", "app-32.png", "app-48.png", "app-64.png", "app-256.png")
NETWORK_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Expected:
    """What a sample without an uncompressed twin must decode to."""

    shape: Tuple[int, ...]
    mean: float
    mean_tolerance: float
    # (index, value, tolerance): a few known pixel values (lossy decoders may differ by a little)
    probes: Tuple[Tuple[Tuple[int, ...], int, int], ...] = ()
    sha256: str = ""  # lossless: the decoded pixel bytes exactly


@dataclass(frozen=True)
class Sample:
    label: str
    name: str
    transfer_syntax: str
    reference: str = ""  # an uncompressed file holding the same image
    max_mean_error: float = 0.0  # 0: lossless, must equal the reference exactly
    expected: Optional[Expected] = None


# One sample per compressed transfer syntax the Windows exe must decode. All come from the
# pydicom test corpus (see assets/samples/README.md).
SAMPLES = (
    Sample("JPEG Baseline", "SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50",
           reference="SC_rgb.dcm", max_mean_error=2.0),
    Sample("JPEG Extended 12-bit", "JPGExtended.dcm", "1.2.840.10008.1.2.4.51",
           expected=Expected((1024, 256), 14.383, 0.2,
                             probes=(((420, 140), 244, 3), ((230, 120), 95, 3)))),
    Sample("JPEG Lossless SV1", "SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70",
           reference="SC_rgb.dcm"),
    Sample("JPEG 2000 Lossless", "MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90",
           reference="MR_small.dcm"),
    Sample("JPEG 2000 (lossy)", "JPEG2000.dcm", "1.2.840.10008.1.2.4.91",
           expected=Expected((1024, 256), 13.458, 0.2,
                             probes=(((420, 140), 222, 3), ((230, 120), 95, 3)))),
    Sample("JPEG-LS Lossless", "MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80",
           reference="MR_small.dcm"),
    Sample("RLE Lossless", "MR_small_RLE.dcm", "1.2.840.10008.1.2.5",
           reference="MR_small.dcm"),
    Sample("Deflated Explicit VR Little Endian", "image_dfl.dcm", "1.2.840.10008.1.2.1.99",
           expected=Expected((512, 512), 127.116, 0.01, sha256=(
               "1f5f1b1c1a57606a55d7e4212ee2655c8205b45e264bd55057f7388c258deef8"))),
)
# The file sent through the real migration path to a receiver that refuses compression.
SEND_SAMPLE = "MR_small_jp2klossless.dcm"


class CheckFailed(Exception):
    """A check found a problem; the message is the reason printed after FAIL."""


# --- where things are -----------------------------------------------------------------------


def assets_dir() -> Path:
    """``assets/`` from source, ``sys._MEIPASS/assets`` when frozen by PyInstaller.

    Same rule as wizard.assets.assets_dir, repeated because that module imports tkinter.
    """
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "assets"
    return Path(__file__).resolve().parent.parent / "assets"


def samples_dir() -> Path:
    override = os.environ.get(SAMPLES_ENV)
    return Path(override) if override else assets_dir() / "samples"


# --- running and reporting ------------------------------------------------------------------


class Report:
    """Prints each line as it comes and keeps them for the report file."""

    def __init__(self, stream: Optional[IO[str]]) -> None:
        self.stream = stream
        self.lines: List[str] = []
        self.passed = 0
        self.failed = 0

    def line(self, text: str) -> None:
        self.lines.append(text)
        if self.stream is not None:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # console closed under us: the report file still has it
                self.stream = None

    def check(self, name: str, func: Callable[[], str]) -> bool:
        """Run one check; ``func`` returns a detail for the PASS line or raises."""
        try:
            detail = func()
        except CheckFailed as exc:
            return self._fail(name, str(exc))
        except Exception as exc:  # an import or codec blowing up is exactly what we look for
            return self._fail(name, "%s: %s" % (type(exc).__name__, _one_line(exc)))
        self.passed += 1
        self.line("PASS %s%s" % (name, ": " + detail if detail else ""))
        return True

    def _fail(self, name: str, reason: str) -> bool:
        self.failed += 1
        self.line("FAIL %s: %s" % (name, reason))
        return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def run() -> int:
    """Run every check, print one line each, and return the exit code (0: all passed)."""
    report = Report(sys.stdout)
    started = time.monotonic()
    report.line("Self-test of DICOM PACS Migrator (%s)" % _environment())
    report.line("Samples: %s" % samples_dir())
    run_checks(report)
    elapsed = time.monotonic() - started
    total = report.passed + report.failed
    if report.failed:
        report.line("Self-test FAILED: %d of %d checks failed (%.1f s)."
                    % (report.failed, total, elapsed))
    else:
        report.line("Self-test passed: all %d checks (%.1f s)." % (total, elapsed))
    _write_report_file(report)
    return 1 if report.failed else 0


def run_checks(report: Report) -> None:
    report.check("assets present", check_assets)
    report.check("codec plugins found", check_plugins)
    report.check("GUI toolkit (Tcl/Tk) bundled", check_tcl)
    for sample in SAMPLES:
        report.check("decode %s (%s)" % (sample.label, sample.name),
                     lambda s=sample: check_decode(s))  # type: ignore[misc]
    report.check("C-ECHO practice receiver", check_echo)
    report.check("send %s to a receiver that only accepts Explicit VR Little Endian"
                 % SEND_SAMPLE, check_send_decompressed)


def _environment() -> str:
    parts = ["Python %s" % sys.version.split()[0]]
    for module in ("pydicom", "pynetdicom", "numpy"):
        try:
            parts.append("%s %s" % (module, __import__(module).__version__))
        except Exception as exc:  # reported again, as a FAIL, by the check that needs it
            parts.append("%s missing (%s)" % (module, type(exc).__name__))
    parts.append("frozen" if getattr(sys, "frozen", False) else "from source")
    return ", ".join(parts)


def _write_report_file(report: Report) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path and report.stream is None:
        # Windowed exe started without a console: leave the result where IT can find it.
        try:
            from engine import dirs

            path = str(dirs.log_dir() / ("selftest-%s.txt"
                                         % dt.datetime.now().strftime("%Y%m%d-%H%M%S")))
        except Exception:
            return
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(report.lines) + "\n")


# --- the checks -----------------------------------------------------------------------------


def check_assets() -> str:
    folder = assets_dir()
    missing = [name for name in ICON_FILES if not (folder / name).is_file()]
    missing += ["samples/" + name for name in _sample_files()
                if not (samples_dir() / name).is_file()]
    if missing:
        raise CheckFailed("missing from %s: %s" % (folder, ", ".join(missing)))
    return ""


def _sample_files() -> List[str]:
    names = {s.name for s in SAMPLES} | {s.reference for s in SAMPLES if s.reference}
    return sorted(names)


def check_plugins() -> str:
    """pylibjpeg finds its codecs through entry points, which only exist if the packages'
    metadata was bundled. Pillow may mask a missing openjpeg for JPEG 2000, so ask directly."""
    from pylibjpeg.utils import get_pixel_data_decoders

    found = set(get_pixel_data_decoders())
    wanted = {"1.2.840.10008.1.2.4.70": "libjpeg (JPEG Lossless)",
              "1.2.840.10008.1.2.4.80": "libjpeg (JPEG-LS)",
              "1.2.840.10008.1.2.4.90": "openjpeg (JPEG 2000)"}
    missing = [name for ts, name in wanted.items() if ts not in found]
    if missing:
        raise CheckFailed("pylibjpeg does not find %s: the package metadata (entry points) "
                          "was probably not bundled" % ", ".join(missing))
    return "pylibjpeg finds libjpeg and openjpeg"


def check_tcl() -> str:
    """Load Tcl (needs no display) and, when frozen, find Tk's script library."""
    import tkinter

    interp = tkinter.Tcl()  # fails with "Can't find a usable init.tcl" when Tcl's files are missing
    version = str(interp.eval("info patchlevel"))
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        tk_dirs = [p for p in Path(frozen_root).glob("_tk_data") if (p / "tk.tcl").is_file()]
        if not tk_dirs:
            raise CheckFailed("Tk's script library (_tk_data/tk.tcl) is not in the bundle")
    return "Tcl %s, Tk %s" % (version, tkinter.TkVersion)


def check_decode(sample: Sample) -> str:
    from engine.transcode import transcode_file
    from pydicom import dcmread

    path = samples_dir() / sample.name
    if not path.is_file():
        raise CheckFailed("sample file missing: %s" % path)
    meta = dcmread(str(path), stop_before_pixels=True, force=True).file_meta
    ts = str(meta.get("TransferSyntaxUID", "")).strip("\x00 ")
    if ts != sample.transfer_syntax:
        raise CheckFailed("the sample is in %s, not %s" % (ts or "no transfer syntax",
                                                           sample.transfer_syntax))
    # The same call the sender makes when a destination refuses the file's compression.
    decoded = transcode_file(str(path), EXPLICIT_LE).pixel_array
    return _compare(sample, decoded)


def _compare(sample: Sample, decoded: Any) -> str:
    import numpy as np

    if sample.reference:
        from pydicom import dcmread

        ref = dcmread(str(samples_dir() / sample.reference)).pixel_array
        if decoded.shape != ref.shape:
            raise CheckFailed("decoded image is %s, the original is %s"
                              % (decoded.shape, ref.shape))
        diff = np.abs(decoded.astype("f8") - ref.astype("f8"))
        if not sample.max_mean_error:
            bad = int(np.count_nonzero(diff))
            if bad:
                raise CheckFailed("%d of %d pixels differ from the uncompressed original %s"
                                  % (bad, diff.size, sample.reference))
            return "identical to %s" % sample.reference
        error = float(diff.mean())
        if error > sample.max_mean_error:
            raise CheckFailed("decoded image is too far from the original %s (mean error "
                              "%.2f, limit %.2f)" % (sample.reference, error,
                                                     sample.max_mean_error))
        return "mean error %.2f against %s" % (error, sample.reference)
    exp = sample.expected
    assert exp is not None, sample
    if tuple(decoded.shape) != exp.shape:
        raise CheckFailed("decoded image is %s, expected %s" % (decoded.shape, exp.shape))
    mean = float(decoded.mean())
    if abs(mean - exp.mean) > exp.mean_tolerance:
        raise CheckFailed("mean pixel value %.3f, expected %.3f" % (mean, exp.mean))
    for index, value, tolerance in exp.probes:
        got = int(decoded[index])
        if abs(got - value) > tolerance:
            raise CheckFailed("pixel %s is %d, expected %d" % (index, got, value))
    if exp.sha256:
        digest = hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest()
        if digest != exp.sha256:
            raise CheckFailed("decoded pixels differ from the known image (sha256 %s...)"
                              % digest[:12])
    return "matches the known image"


def _settings(calling_aet: str) -> Any:
    from engine.config import Settings

    return Settings(calling_aet=calling_aet, retries=0, backoff_base_s=0.1,
                    connect_timeout=NETWORK_TIMEOUT_S / 2, acse_timeout=NETWORK_TIMEOUT_S,
                    dimse_timeout=NETWORK_TIMEOUT_S, network_timeout=NETWORK_TIMEOUT_S)


def check_echo() -> str:
    from engine.config import Destination
    from engine.echo import echo
    from engine.receiver import start_receiver

    receiver = start_receiver(0, out_dir=None, aet="PRACTICE")
    try:
        result = echo(Destination(receiver.host, receiver.port, receiver.aet),
                      _settings("SELFTEST"))
    finally:
        receiver.stop()
    if not result.ok:
        raise CheckFailed(result.reason)
    return "answered in %.0f ms" % result.elapsed_ms


class UncompressedOnlyReceiver:
    """A Storage SCP that accepts one SOP class in Explicit VR Little Endian only, so a
    compressed file reaches it only if the engine decompressed it."""

    AET = "SELFTEST-ELE"

    def __init__(self, sop_class: str) -> None:
        from pynetdicom import AE, evt

        self.received: List[Tuple[str, Any]] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=self.AET)
        ae.add_supported_context(sop_class, EXPLICIT_LE)
        self._server = ae.start_server(("127.0.0.1", 0), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self._server.server_address[1])

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append((str(event.context.transfer_syntax), ds))
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


def check_send_decompressed() -> str:
    from engine.config import Destination
    from engine.jobs import SENDERS_ENV, Control
    from engine.migrate import run_migration
    from pydicom import dcmread

    sample = samples_dir() / SEND_SAMPLE
    original = dcmread(str(sample))
    expected = original.pixel_array  # decoded independently of the engine's transcoder
    work = Path(tempfile.mkdtemp(prefix="dicom-selftest-"))
    receiver = UncompressedOnlyReceiver(str(original.SOPClassUID))
    try:
        source = work / "source"
        source.mkdir()
        shutil.copy2(str(sample), str(source / SEND_SAMPLE))
        finished = run_migration(str(source), Destination("127.0.0.1", receiver.port,
                                                          receiver.AET),
                                 _settings("SELFTEST"), Control(), work_dir=str(work / "work"),
                                 count_first=False)
    finally:
        receiver.stop()
        shutil.rmtree(str(work), ignore_errors=True)
    if finished.exit_code != 0 or finished.counts.get("sent") != 1:
        raise CheckFailed("the migration did not send the file: %s" % finished.summary)
    if len(receiver.received) != 1:
        raise CheckFailed("the receiver got %d objects, expected 1" % len(receiver.received))
    senders = finished.result.senders
    if senders != "processes" and os.environ.get(SENDERS_ENV, "").lower() != "threads":
        # the frozen exe must be able to start its sender processes (freeze_support)
        raise CheckFailed("the file went out from a %s sender, not a child process" % senders)
    ts, received = receiver.received[0]
    if ts != EXPLICIT_LE:
        raise CheckFailed("the file arrived in %s, not Explicit VR Little Endian" % ts)
    pixels = received.pixel_array
    if pixels.shape != expected.shape or not (pixels == expected).all():
        raise CheckFailed("the received pixels differ from the sample's decoded pixels")
    return "arrived decompressed, pixels identical (sent from a child process)" \
        if senders == "processes" else "arrived decompressed, pixels identical"
