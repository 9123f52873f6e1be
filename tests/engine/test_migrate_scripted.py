"""Migrations against in-process SCPs that misbehave on purpose."""
from __future__ import annotations

import threading
from typing import Callable, List

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from tests.corpus import make_dicom
from tests.engine.helpers import by_name, migrate, records
from tests.peers import free_port

pytestmark = pytest.mark.network
MR = "1.2.840.10008.5.1.4.1.1.4"


class ScriptedSCP:
    """A storage SCP whose answer to each C-STORE comes from ``script(n, event)``."""

    def __init__(self, script: Callable[[int, object], int], contexts=None) -> None:
        self.script = script
        self.received: List[str] = []
        self.calls = 0
        self.lock = threading.Lock()
        ae = AE(ae_title="SCRIPTED")
        for cx in contexts or StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax,
                                     [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event):
        with self.lock:
            self.calls += 1
            n = self.calls
        status = self.script(n, event)
        if status in (0x0000, 0xB000, 0xB007):
            with self.lock:
                self.received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scripted():
    made: List[ScriptedSCP] = []

    def factory(script, contexts=None) -> ScriptedSCP:
        scp = ScriptedSCP(script, contexts)
        made.append(scp)
        return scp
    yield factory
    for scp in made:
        scp.stop()


def _tree(tmp_path, n: int = 5, **kw):
    src = tmp_path / "src"
    for i in range(n):
        make_dicom(src / "s" / ("f%02d.dcm" % i), **kw)
    return src


def test_warnings_count_as_sent_with_warning(tmp_path, scripted):
    scp = scripted(lambda n, e: 0xB000 if n % 2 else 0x0000)
    result, _, terminal = migrate(_tree(tmp_path, 4), scp.port, "SCRIPTED", tmp_path / "w")
    assert result.counts == {"sent": 2, "sent_with_warning": 2}
    assert terminal.exit_code == 0
    warned = [r for r in records(tmp_path / "w") if r.status == "sent_with_warning"]
    assert all("0xB000" in r.message and "coercion" in r.message for r in warned)


def test_out_of_resources_is_retried_with_backoff(tmp_path, scripted):
    scp = scripted(lambda n, e: 0xA700 if n <= 2 else 0x0000)  # busy twice, then fine
    result, events, terminal = migrate(_tree(tmp_path, 3), scp.port, "SCRIPTED", tmp_path / "w",
                                       retries=2)
    assert result.counts.get("sent") == 3 and terminal.exit_code == 0
    assert len(set(scp.received)) == 3
    assert any("busy" in getattr(e, "text", "") for e in events)


def test_out_of_resources_gives_up_after_retries(tmp_path, scripted):
    scp = scripted(lambda n, e: 0xA700)
    result, _, terminal = migrate(_tree(tmp_path, 1), scp.port, "SCRIPTED", tmp_path / "w",
                                  retries=1)
    (rec,) = records(tmp_path / "w")
    assert rec.status == "failed" and "0xA700" in rec.message and "out of resources" in rec.message
    assert scp.calls == 2 and terminal.exit_code == 1


def test_permanent_failure_is_not_retried(tmp_path, scripted):
    scp = scripted(lambda n, e: 0xC000)
    result, _, _ = migrate(_tree(tmp_path, 2), scp.port, "SCRIPTED", tmp_path / "w", retries=3)
    assert scp.calls == 2
    assert all(r.status == "failed" and "0xC000" in r.message for r in records(tmp_path / "w"))


def test_abort_mid_association_resends_the_file_in_flight(tmp_path, scripted):
    def script(n, event):
        if n == 3:
            event.assoc.abort()  # the peer drops the connection while file 3 is in flight
            return 0x0000
        return 0x0000
    scp = scripted(script)
    result, events, terminal = migrate(_tree(tmp_path, 6), scp.port, "SCRIPTED", tmp_path / "w")
    assert result.counts.get("sent") == 6, result.counts
    assert terminal.exit_code == 0
    assert result.associations >= 2
    assert any("reconnecting" in getattr(e, "text", "") for e in events)


def test_refused_sop_class_is_named_in_words(tmp_path, scripted):
    ct_only = [cx for cx in StoragePresentationContexts if cx.abstract_syntax == CTImageStorage]
    scp = scripted(lambda n, e: 0x0000, contexts=ct_only)
    src = _tree(tmp_path, 2)
    make_dicom(src / "mr" / "mr.dcm", sop_class=MRImageStorage)
    result, _, terminal = migrate(src, scp.port, "SCRIPTED", tmp_path / "w")
    rows = by_name(tmp_path / "w")
    assert rows["mr.dcm"].status == "failed"
    assert "does not accept MR Image Storage" in rows["mr.dcm"].message
    assert "PACS administrator" in rows["mr.dcm"].message
    assert rows["f00.dcm"].status == "sent" and terminal.exit_code == 1


def test_more_than_128_contexts_opens_more_associations(tmp_path, scripted):
    # 70 storage SOP classes x 2 contexts each (own syntax ELE + ILE) = 140 contexts > 128
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class
    contexts = [cx for cx in StoragePresentationContexts  # retired classes differ by version
                if uid_to_service_class(cx.abstract_syntax) is StorageServiceClass][:70]
    scp = scripted(lambda n, e: 0x0000, contexts=contexts)
    src = tmp_path / "src"
    for i, cx in enumerate(contexts):
        make_dicom(src / ("f%02d.dcm" % i), sop_class=cx.abstract_syntax)
    result, _, terminal = migrate(src, scp.port, "SCRIPTED", tmp_path / "w")
    assert result.counts.get("sent") == 70, result.counts
    assert result.associations == 2 and terminal.exit_code == 0
    assert len(set(scp.received)) == 70


def test_unreachable_destination_is_exit_3(tmp_path):
    result, _, terminal = migrate(_tree(tmp_path, 2), free_port(), "NOBODY", tmp_path / "w",
                                  retries=0, connect_timeout=2)
    assert terminal.exit_code == 3
    assert "refused" in result.stopped
    assert records(tmp_path / "w") == []  # nothing recorded as failed: a re-run sends all


def test_rejected_calling_aet_is_exit_3(tmp_path):
    ae = AE(ae_title="STRICT")
    ae.require_called_aet = True
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        result, _, terminal = migrate(_tree(tmp_path, 1), port, "WRONG", tmp_path / "w")
    finally:
        server.shutdown()
    assert terminal.exit_code == 3
    assert "called AE title" in result.stopped


def test_resume_skips_sent_files_without_opening_them(tmp_path, scripted, monkeypatch):
    scp = scripted(lambda n, e: 0x0000)
    src = _tree(tmp_path, 5)
    migrate(src, scp.port, "SCRIPTED", tmp_path / "w")
    assert scp.calls == 5
    import engine.migrate as m
    opened = []
    real = m.read_header
    monkeypatch.setattr(m, "read_header", lambda p, *a: opened.append(p) or real(p, *a))
    make_dicom(src / "s" / "new.dcm")
    result, _, terminal = migrate(src, scp.port, "SCRIPTED", tmp_path / "w")
    assert [p.rsplit("/", 1)[-1] for p in opened] == ["new.dcm"]
    assert scp.calls == 6 and result.counts["already_done"] == 5 and terminal.exit_code == 0


def test_retry_failed_resends_only_failures(tmp_path, scripted):
    fail_first = {"on": True}
    scp = scripted(lambda n, e: 0xC000 if fail_first["on"] and n in (2, 4) else 0x0000)
    src = _tree(tmp_path, 5)
    result, _, _ = migrate(src, scp.port, "SCRIPTED", tmp_path / "w")
    assert result.counts == {"sent": 3, "failed": 2}
    fail_first["on"] = False
    calls_before = scp.calls
    result, _, terminal = migrate(src, scp.port, "SCRIPTED", tmp_path / "w", retry_failed=True)
    assert scp.calls - calls_before == 2
    assert result.counts == {"sent": 2} and terminal.exit_code == 0
    assert all(r.status == "sent" for r in records(tmp_path / "w"))
    # the manifest counts the runs that tried each file: 2 for the retried ones
    assert sorted(r.attempts for r in records(tmp_path / "w")) == [1, 1, 1, 2, 2]


def test_a_second_destination_is_a_separate_job(tmp_path, scripted):
    a = scripted(lambda n, e: 0x0000)
    b = scripted(lambda n, e: 0x0000)
    src = _tree(tmp_path, 3)
    migrate(src, a.port, "SCRIPTED", tmp_path / "w")
    migrate(src, b.port, "SCRIPTED", tmp_path / "w")
    assert a.calls == 3 and b.calls == 3
