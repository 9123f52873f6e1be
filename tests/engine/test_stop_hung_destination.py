"""Stopping while the destination has stopped answering: Ctrl+C, SIGTERM, a killed parent.

The destination here accepts each file and then never answers (a hung PACS). A Stop must not
wait for the 2-minute DIMSE timeout, and no sender process may outlive its parent.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from tests.corpus import make_dicom
from tests.peers import free_port

pytestmark = [pytest.mark.network, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


class HungPACS:
    """Stores nothing and answers nothing until released (or the test ends)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0
        ae = AE(ae_title="HUNG")
        ae.supported_contexts = StoragePresentationContexts
        ae.dimse_timeout = ae.network_timeout = 600
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: object) -> int:
        with self.lock:
            self.waiting += 1
        self.release.wait(300)
        return 0xA700  # "out of resources": nothing is stored

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.waiting < count:
            assert time.monotonic() < deadline, "the files never reached the destination"
            time.sleep(0.05)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def hung() -> Iterator[HungPACS]:
    pacs = HungPACS()
    yield pacs
    pacs.stop()


def _start(tmp_path: Path, port: int, associations: int) -> subprocess.Popen:
    src = tmp_path / "src"
    for i in range(20):
        make_dicom(src / ("f%02d.dcm" % i))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", str(src), "--host", "127.0.0.1", "--port",
         str(port), "--called-aet", "HUNG", "--work-dir", str(tmp_path / "w"),
         "--associations", str(associations), "--batch-size", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_signals)


def _default_signals() -> None:
    """A test run in the background inherits an ignored SIGINT; the signals are the point."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _children(pid: int) -> List[int]:
    with open("/proc/%d/task/%d/children" % (pid, pid)) as fp:
        return [int(p) for p in fp.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as fp:
            return fp.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _run_state(tmp_path: Path) -> Tuple[str, ...]:
    db = sqlite3.connect(str(tmp_path / "w" / "manifest.sqlite"))
    try:
        return tuple(r[0] for r in db.execute("SELECT state FROM runs ORDER BY id"))
    finally:
        db.close()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads child processes from /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_does_not_wait_for_a_destination_that_never_answers(tmp_path, hung, sig, code):
    proc = _start(tmp_path, hung.port, associations=2)
    try:
        hung.wait_for(2)  # both associations have a file in flight that will never be answered
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)  # the DIMSE timeout is 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "reconnecting" not in err, err
    assert "0 sent" in err  # the report is printed
    assert _run_state(tmp_path) == ("cancelled",)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads child processes from /proc")
def test_sender_processes_do_not_outlive_a_killed_parent(tmp_path, hung):
    if os.environ.get("DICOM_MIGRATOR_SENDERS") == "threads":
        pytest.skip("senders are threads in this run")
    proc = _start(tmp_path, hung.port, associations=2)
    try:
        hung.wait_for(2)
        children = _children(proc.pid)  # spawn adds multiprocessing's resource tracker
        assert len(children) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if _alive(c)], "sender processes outlived the parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
