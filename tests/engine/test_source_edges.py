"""Awkward source trees and command lines a newcomer tried: every file still gets a status and
a reason, nothing in the source changes, and mistakes give exit code 2 with a sentence."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from engine.cli import main
from engine.errors import ConfigError
from engine.walk import BAD_NAME_MARK, SPECIAL_REASON, SYMLINK_REASON
from engine.worklock import WorkLock
from tests import corpus
from tests.engine.helpers import by_name, migrate, records
from tests.peers import StoreSCPPeer

pytestmark = pytest.mark.network
REPO = Path(__file__).resolve().parents[2]


def _store(root: Path, count: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        corpus.make_dicom(root / ("im%d.dcm" % i))
    return root


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_links_pipes_and_undecodable_names_get_a_status(
        tmp_path: Path, storescp_factory: Callable[..., StoreSCPPeer]) -> None:
    src = _store(tmp_path / "src")
    os.symlink(str(src / "im0.dcm"), str(src / "link.dcm"))
    os.symlink(str(src / "gone.dcm"), str(src / "dangling.dcm"))
    os.mkfifo(str(src / "pipe"))
    bad = os.fsencode(str(src)) + b"/bad\xff\xfename.dcm"
    with open(bad, "wb") as fh:
        fh.write((src / "im1.dcm").read_bytes())
    os.mkdir(os.fsencode(str(src)) + b"/dir\xfe")
    before = corpus.tree_digest(src)
    peer = storescp_factory()
    result, _, terminal = migrate(src, peer.port, peer.aet, tmp_path / "w")
    rows = by_name(tmp_path / "w")
    assert rows["link.dcm"].status == "skipped" and rows["link.dcm"].message == SYMLINK_REASON
    assert rows["dangling.dcm"].status == "skipped"
    assert rows["pipe"].status == "skipped" and rows["pipe"].message == SPECIAL_REASON
    bad_file = "bad\\xff\\xfename.dcm" + BAD_NAME_MARK
    bad_dir = "dir\\xfe" + BAD_NAME_MARK
    assert rows[bad_file].status == "failed" and "not valid text" in rows[bad_file].message
    assert rows[bad_dir].status == "failed" and "folder" in rows[bad_dir].message
    assert {r.status for n, r in rows.items() if n.startswith("im")} == {"sent"}
    assert terminal.exit_code == 1 and result.counts["sent"] == 3
    # A second run resumes without tripping over the same names.
    _, _, again = migrate(src, peer.port, peer.aet, tmp_path / "w")
    assert again.exit_code == 1 and len(records(tmp_path / "w")) == len(rows)
    # Retrying failures leaves them alone (renaming is the fix) and raises no false alarm.
    retried, _, _ = migrate(src, peer.port, peer.aet, tmp_path / "w", retry_failed=True)
    assert "Originals intact" in retried.integrity_line and not retried.counts.get("failed")
    assert by_name(tmp_path / "w")[bad_file].message == rows[bad_file].message
    assert corpus.tree_digest(src) == before
    code = main(["export-csv", "--work-dir", str(tmp_path / "w"), "--out",
                 str(tmp_path / "audit.csv")])
    audit = (tmp_path / "audit.csv").read_text("utf-8-sig")
    assert code == 0 and bad_file in audit and audit.count("\n") == len(rows) + 1


def test_work_folder_reached_through_a_link_is_refused(tmp_path: Path) -> None:
    src = _store(tmp_path / "src")
    os.symlink(str(src), str(tmp_path / "alias"))
    before = corpus.tree_digest(src)
    code = main(["migrate", str(src), "--host", "127.0.0.1", "--port", "1", "--called-aet", "X",
                 "--work-dir", str(tmp_path / "alias" / "work")])
    assert code == 2
    assert corpus.tree_digest(src) == before and not (src / "work").exists()


def test_default_work_folder_is_not_created_inside_the_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that contains the home folder: refuse before writing anything there."""
    from engine import dirs

    home = _store(tmp_path / "home")
    monkeypatch.setattr(dirs, "override", None)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    before = corpus.tree_digest(home)
    code = main(["migrate", str(home), "--host", "127.0.0.1", "--port", "1", "--called-aet", "X"])
    assert code == 2 and corpus.tree_digest(home) == before
    assert not (home / ".local").exists()


def test_one_run_per_work_folder(tmp_path: Path) -> None:
    with WorkLock(str(tmp_path)):
        with pytest.raises(ConfigError, match="Another copy is already running"):
            with WorkLock(str(tmp_path)):
                pass
    with WorkLock(str(tmp_path)):  # released: free again
        pass


@pytest.mark.parametrize("args", [
    ["migrate", "/no/such/folder"],
    ["migrate", __file__],
    ["migrate", ".", "--window", "25:00-06:00"],
    ["migrate", ".", "--max-mbps", "0"],
    ["migrate", ".", "--max-mbps", "nan"],
    ["migrate", ".", "--associations", "0"],
    ["migrate", ".", "--timeout", "0"],
    ["migrate", ".", "--work-dir", "/etc/passwd/work"],
])
def test_configuration_mistakes_exit_2(args, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "--work-dir" not in args:
        args = args + ["--work-dir", str(tmp_path.parent / (tmp_path.name + "-w"))]
    try:
        code = main(args + ["--host", "127.0.0.1", "--port", "1", "--called-aet", "X"])
    except SystemExit as exc:  # argparse rejects the value before anything runs
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("Error:" in err or "error:" in err)


def test_export_to_a_missing_folder_is_a_sentence(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from engine.manifest import ManifestStore

    ManifestStore(str(tmp_path / "w")).close()
    code = main(["export-csv", "--work-dir", str(tmp_path / "w"), "--out",
                 str(tmp_path / "no" / "such" / "a.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "No such file or directory" in err


def test_ctrl_c_stops_cleanly_while_waiting_for_the_window(tmp_path: Path) -> None:
    """The first Ctrl+C must stop at once, even outside the sending window, and say so."""
    src = _store(tmp_path / "src", 2)
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    window = "%02d:00-%02d:30" % (start, start)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "engine", "migrate", str(src), "--host",
                             "127.0.0.1", "--port", "1", "--called-aet", "X", "--work-dir",
                             str(tmp_path / "w"), "--window", window],
                            env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)  # see _sigint_default
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "w" / "manifest.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "waiting until %02d:00" % start in err and "Stopping after the files in flight" in err
    assert "Traceback" not in err and "is open: sending" not in err


def _sigint_default() -> None:
    """A test run started in the background inherits an ignored SIGINT; Ctrl+C is the point
    of this test, so the child gets the normal disposition back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
