"""A migration killed with SIGKILL resumes: nothing confirmed is sent twice, nothing is lost."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from engine.manifest import ManifestStore
from tests.corpus import make_dicom, tree_digest
from tests.peers import free_port

pytestmark = [pytest.mark.network, pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return [sys.executable, "-m", "engine"] + list(args), env


@pytest.mark.parametrize("associations", [1, 4])
def test_kill_9_then_resume(tmp_path, associations):
    src = tmp_path / "src"
    for i in range(120):
        make_dicom(src / ("p%d" % (i % 4)) / ("f%03d.dcm" % i))
    before = tree_digest(src)
    received = collections.Counter()
    lock = threading.Lock()

    def on_store(event):
        time.sleep(0.02)  # a slow PACS, so the kill lands mid-run
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0x0000

    ae = AE(ae_title="SLOW")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    unrecorded = 2 * associations + (1 if associations == 1 else 0)
    work = tmp_path / "work"
    args = ["migrate", str(src), "--host", "127.0.0.1", "--port", str(port), "--called-aet",
            "SLOW", "--work-dir", str(work), "--quiet", "--associations", str(associations)]
    try:
        cmd, env = _cli(*args)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while sum(received.values()) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert 0 < sum(received.values()) < 120, "the kill must land mid-run"

        store = ManifestStore(str(work))
        confirmed = {r.sop_instance_uid for _, r in store.records() if r.status == "sent"}
        store.close()
        first_run = dict(received)
        # Unrecorded: per association, the file in flight and at most one answer that arrived
        # but was not yet written when the kill landed; with a single association also the
        # answer its child holds until the next file is on the wire (procsend._HeldResult).
        # That is with this slow PACS; a fast one has a few more answers on their way to the
        # manifest, see README.
        assert len(confirmed) >= len(first_run) - unrecorded

        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()
    finally:
        server.shutdown()
    assert len(received) == 120  # nothing missing
    for uid in confirmed:
        assert received[uid] == 1, "a confirmed file was sent again"
    assert sum(received.values()) - 120 <= unrecorded  # only those arrive twice
    assert tree_digest(src) == before
    assert b"already done in an earlier run" in done.stderr
