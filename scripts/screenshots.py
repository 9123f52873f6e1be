"""Render every wizard step with realistic data to PNG files, for review.

    python scripts/screenshots.py [--out screenshots] [--scaling 1.5]

Drives the real wizard on a private Xvfb display (1024x768, or 1536x1152 at 150%) against a
scripted test PACS on 127.0.0.1 with files from the pydicom corpora, and captures the screen
with ImageMagick's ``import``. Only loopback addresses are ever contacted.
Needs: Xvfb, ImageMagick, and a venv with the test requirements (pydicom-data).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CORPUS_FILES = [
    "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "SC_rgb_dcmtk_+eb+cr.dcm", "ExplVR_BigEnd.dcm",
    "17106", "17136", "17166", "17196", "6293", "6924", "2062", "3023", "3353", "4919", "4950",
    "4981", "5011", "6273", "6605", "IM000000", "IM000001", "IM000002", "IM000003", "IM000004",
    "IM000005", "IM000006", "IM000007", "693_UNCI.dcm", "MR2_UNCI.dcm", "emri_small.dcm",
    "JPEG2000.dcm", "US1_UNCI.dcm", "test-SR.dcm",
]
US_CLASSES = ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1")


def start_xvfb(width: int, height: int) -> subprocess.Popen:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0",
                             "%dx%dx24" % (width, height), "-nolisten", "tcp", "-dpi", "96"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        os.environ["DISPLAY"] = ":" + pipe.readline().strip()
    return proc


def build_clinic(target: Path) -> Path:
    from tests import corpus

    by_name = {p.name: p for p in corpus.pydicom_data_files() + corpus.pydicom_test_files()}
    corpus.copy_corpus(target, [by_name[n] for n in CORPUS_FILES], layout="nested")
    (target / "PATIENT_00" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (target / "PATIENT_01" / "readme.txt").write_text("Export from the old archive\n")
    return target


class Shooter:
    def __init__(self, app: Any, out: Path, prefix: str) -> None:
        self.app, self.out, self.prefix = app, out, prefix
        self.files: List[Path] = []

    def settle(self, seconds: float = 0.4) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.app.update()
            time.sleep(0.02)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise SystemExit("timed out waiting for " + what)
            self.app.update()
            time.sleep(0.02)

    def shot(self, name: str) -> None:
        self.settle()
        path = self.out / ("%s%s.png" % (self.prefix, name))
        subprocess.run(["import", "-window", "root", str(path)], check=True)
        self.files.append(path)
        print("wrote", path)


def find_and_connect(app: Any, s: Shooter, pacs: Any, closed_port: int) -> None:
    c = app.controller
    find = c.current
    find.subnet.set("127.0.0.1/32")
    find.extra.set("127.0.0.2")
    find.ports.set("%d, 104, 4242, 11112" % pacs.port)
    find.start_search()
    s.wait(lambda: find.work_state == "done", "discovery")
    s.shot("1-find")
    find.use_selected()
    conn = c.current
    conn.vars["called"].set("TESTPACS")
    conn.vars["port"].set(str(closed_port))
    conn.test_connection()
    s.wait(lambda: conn.banner.kind == "Bad", "failed echo")
    s.shot("2-connect-failed")
    conn.vars["port"].set(str(pacs.port))
    conn.test_connection()
    s.wait(lambda: conn.banner.kind == "Good", "echo")
    s.shot("2-connect")
    c.go_next()


def choose_and_copy(app: Any, s: Shooter, pacs: Any, clinic: Path) -> None:
    c = app.controller
    choose = c.current
    choose.folder.set(str(clinic))
    choose.mode.set("scan")
    choose.start_scan()
    s.wait(lambda: choose._probe is not None and not choose.busy, "scan and probe")
    choose.tree.tree.item(choose.tree.tree.get_children()[1], open=True)
    for tab, name in ((0, "3-choose"), (1, "3-choose-check"), (2, "3-choose-unreadable")):
        choose.notebook.select(tab)
        s.shot(name)
    choose.notebook.select(0)
    c.go_next()
    copy = c.current
    copy.start()
    s.wait(lambda: copy.table.total >= 9, "copy progress")
    s.shot("4-copy-running")
    pacs.delay_s = 0.0
    s.wait(lambda: not copy.busy, "copy end")
    s.shot("4-copy-done")
    copy.notebook.select(1)
    s.shot("4-copy-problems")
    copy.notebook.select(0)
    c.go_next()


def check_and_settings(app: Any, s: Shooter, pacs: Any) -> None:
    check = app.controller.current
    pacs.stored.pop(next(iter(pacs.stored)))  # one image "lost" by the PACS
    check.start_verify()
    s.wait(lambda: not check.busy and check.banner.kind in ("Good", "Bad"), "verify")
    s.shot("5-check")
    dialog = app.open_advanced()
    s.shot("6-advanced")
    dialog.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    parser.add_argument("--scaling", type=float, default=1.0, help="1.5 renders at 150%%")
    args = parser.parse_args()
    for tool in ("Xvfb", "import"):
        if not shutil.which(tool):
            print("%s is missing (apt-get install xvfb imagemagick)" % tool, file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb(int(1024 * args.scaling), int(768 * args.scaling))
    work = Path(tempfile.mkdtemp(prefix="wizard-shots-"))
    try:
        return _run(args, out, work)
    finally:
        xvfb.terminate()
        xvfb.wait(10)
        shutil.rmtree(str(work), ignore_errors=True)


def _run(args: argparse.Namespace, out: Path, work: Path) -> int:
    from engine import dirs
    from tests.peers import free_port
    from tests.wizard.scp import ScriptedPACS, sop_uid_of
    from wizard.app import WizardApp

    dirs.override = work / "appdata"
    clinic = build_clinic(work / "Old archive" / "DICOM")
    fail = [sop_uid_of(next(clinic.rglob(n))) for n in ("17106", "4950")]
    pacs = ScriptedPACS(refuse_sop_classes=US_CLASSES, fail_first=fail, delay_s=0.25).start()
    app = WizardApp(scaling=(96 / 72) * args.scaling, resume_at_start=False)
    app.geometry("%dx%d+0+0" % (app.winfo_screenwidth(), app.winfo_screenheight()))
    prefix = "" if args.scaling == 1.0 else "scaled-%d-" % round(args.scaling * 100)
    shooter = Shooter(app, out, prefix)
    try:
        app.controller.update_prefs(retries=0, work_dir=str(work / "work"))
        find_and_connect(app, shooter, pacs, free_port())
        choose_and_copy(app, shooter, pacs, clinic)
        check_and_settings(app, shooter, pacs)
    finally:
        app.controller.shutdown()
        app.destroy()
        pacs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
