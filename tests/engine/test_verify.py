"""Verification (C-FIND) against real Orthanc and DCMTK dcmqrscp, and against in-process
pynetdicom SCPs that answer the way awkward PACS do (no counts, capped answers, refused levels,
aborts, pending 0xFF01, no UID-list matching)."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from engine import cli
from engine.cfind import STUDY_ROOT_FIND, FindRefused, refusal_message
from engine.config import Destination, Settings
from engine.errors import ConfigError, DestinationUnreachable
from engine.events import JobFailed, StudyVerified
from engine.jobs import Control, run_job
from engine.manifest import FileRecord, ManifestStore
from engine.verify import (REPORT_COLUMNS, VerifyResult, _resend_folder, resend_missing,
                           verify, write_report_csv)
from tests.corpus import make_dicom, pydicom_test_files
from tests.engine.helpers import migrate, records
from tests.peers import free_port

pytestmark = pytest.mark.network
FAST = dict(backoff_base_s=0.05, acse_timeout=10, dimse_timeout=10, connect_timeout=5)
CORPUS = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")


def settings(**kw: Any) -> Settings:
    return Settings(**dict(FAST, **kw))


def run_verify(work: Any, dest: Destination, **kw: Any) -> Tuple[VerifyResult, List[Any], Any]:
    events: List[Any] = []
    finished = verify(str(work), dest, settings(**kw), Control(7, events.append))
    return finished.result, events, finished


def rows_by_study(result: VerifyResult) -> Dict[str, StudyVerified]:
    return {r.study_instance_uid: r for r in result.studies}


# --- source trees --------------------------------------------------------------------------------
class Tree:
    """A source folder with 3 generated studies (5 series, 15 files) plus real corpus files
    (by default 3 files in 3 more studies)."""

    def __init__(self, root: Path, series_sizes: Sequence[Sequence[int]] = ((5, 3), (4,), (2, 1)),
                 corpus: Sequence[str] = CORPUS) -> None:
        self.root = root
        self.files: Dict[str, Path] = {}  # SOP Instance UID -> file
        self.study_of: Dict[str, str] = {}
        self.series_of: Dict[str, str] = {}
        for s, sizes in enumerate(series_sizes):
            study = generate_uid()
            for k, size in enumerate(sizes):
                series = generate_uid()
                for i in range(size):
                    path = make_dicom(root / ("P%d" % s) / ("S%d" % k) / ("%02d.dcm" % i),
                                      StudyInstanceUID=study, SeriesInstanceUID=series,
                                      PatientName="PATIENT^%s" % "ABC"[s % 3], SeriesNumber=k + 1,
                                      InstanceNumber=i + 1, PatientID="PID%d" % s)
                    self._add(path)
        wanted = [p for p in pydicom_test_files() if p.name in corpus]
        for src in wanted:
            target = root / "corpus" / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(str(src), str(target))
            self._add(target)

    def _add(self, path: Path) -> None:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID)
        self.files[uid] = path
        self.study_of[uid] = str(ds.StudyInstanceUID)
        self.series_of[uid] = str(ds.SeriesInstanceUID)

    def studies(self) -> Set[str]:
        return set(self.study_of.values())

    def in_study(self, study: str) -> List[str]:
        return sorted(u for u, s in self.study_of.items() if s == study)

    def in_series(self, series: str) -> List[str]:
        return sorted(u for u, s in self.series_of.items() if s == series)

    def generated_study(self, index: int) -> str:
        return self.study_of[self._first_of(index, 0)]

    def generated_series(self, index: int, series: int) -> str:
        return self.series_of[self._first_of(index, series)]

    def _first_of(self, index: int, series: int) -> str:
        path = self.root / ("P%d" % index) / ("S%d" % series) / "00.dcm"
        return next(u for u, p in self.files.items() if p == path)

    def corpus_study(self, name: str) -> str:
        return self.study_of[next(u for u, p in self.files.items() if p.name == name)]


def assert_all_match(result: VerifyResult, tree: Tree) -> None:
    assert {r.study_instance_uid for r in result.studies} == tree.studies()
    assert [r.verdict for r in result.studies] == ["MATCH"] * len(tree.studies()), result
    assert result.matched == len(tree.studies()) and not result.missing_sop_uids()
    for row in result.studies:
        assert row.expected == row.found == len(tree.in_study(row.study_instance_uid))


def assert_names_exactly(result: VerifyResult, tree: Tree, gone: Set[str]) -> None:
    assert set(result.missing_sop_uids()) == gone
    assert len(result.missing_sop_uids()) == len(gone)
    rows = rows_by_study(result)
    for study in tree.studies():
        lost = {u for u in gone if tree.study_of[u] == study}
        row = rows[study]
        assert set(row.missing) == lost, study
        expected = len(tree.in_study(study))
        if not lost:
            assert row.verdict == "MATCH"
        elif lost == set(tree.in_study(study)):
            assert (row.verdict, row.found) == ("MISSING", 0)
        else:
            assert (row.verdict, row.found) == ("MISMATCH", expected - len(lost))


# --- Orthanc -------------------------------------------------------------------------------------
def test_orthanc_match_then_deleted_named_then_resend(tmp_path, orthanc_factory):
    orthanc = orthanc_factory()
    tree = Tree(tmp_path / "src")
    work = tmp_path / "work"
    _, _, mig = migrate(tree.root, orthanc.dicom_port, orthanc.aet, work, **FAST)
    assert mig.exit_code == 0 and orthanc.sop_instance_uids() == set(tree.files)
    dest = Destination("127.0.0.1", orthanc.dicom_port, orthanc.aet)

    result, events, finished = run_verify(work, dest)
    assert_all_match(result, tree)
    assert finished.exit_code == 0 and len(tree.studies()) == 6 and len(tree.files) == 18
    assert [e for e in events if isinstance(e, StudyVerified)] == result.studies
    assert any(r.patient == "PATIENT^A" for r in result.studies)
    assert set(result.study_dates.values()) >= {"20240115"}

    gone = set(tree.in_series(tree.generated_series(0, 0))[1:3])  # 2 of 5
    gone.add(tree.in_study(tree.generated_study(1))[0])  # 1 of 4
    gone |= set(tree.in_study(tree.corpus_study("CT_small.dcm")))  # a whole study
    for uid in gone:
        orthanc.delete_instance(orthanc.find_instance(uid))
    result, _, finished = run_verify(work, dest)
    assert_names_exactly(result, tree, gone)
    assert finished.exit_code == 1 and (result.matched, result.mismatched, result.missing) == \
        (3, 2, 1)

    resent = resend_missing(str(work), dest, settings(), Control(8), result, associations=2)
    assert resent.exit_code == 0 and resent.result.counts.get("sent") == len(gone), resent
    assert orthanc.sop_instance_uids() == set(tree.files)
    result, _, finished = run_verify(work, dest)
    assert_all_match(result, tree)
    assert finished.exit_code == 0


def test_orthanc_find_limit_still_names_exactly_the_missing(tmp_path, orthanc_factory):
    orthanc = orthanc_factory(LimitFindInstances=5, LimitFindResults=5)
    tree = Tree(tmp_path / "src", series_sizes=((9, 2), (3,)), corpus=())
    work = tmp_path / "work"
    migrate(tree.root, orthanc.dicom_port, orthanc.aet, work, **FAST)
    dest = Destination("127.0.0.1", orthanc.dicom_port, orthanc.aet)
    result, _, finished = run_verify(work, dest)
    assert_all_match(result, tree)
    assert finished.exit_code == 0

    big = tree.generated_series(0, 0)
    assert len(tree.in_series(big)) == 9
    gone = set(tree.in_series(big)[3:5])
    for uid in gone:
        orthanc.delete_instance(orthanc.find_instance(uid))
    result, _, finished = run_verify(work, dest)
    assert_names_exactly(result, tree, gone)
    cap_notes = [n for n in result.notes if "LimitFindInstances" in n]
    assert cap_notes and "returned only 5 images of the 7 it holds" in cap_notes[0], \
        result.notes

    resend_missing(str(work), dest, settings(), Control(8), result)
    result, _, finished = run_verify(work, dest)
    assert_all_match(result, tree)


def test_orthanc_that_refuses_find_gives_the_plain_message(tmp_path, orthanc_factory):
    orthanc = orthanc_factory(DicomAlwaysAllowFind=False)
    tree = Tree(tmp_path / "src", series_sizes=((2,),), corpus=())
    migrate(tree.root, orthanc.dicom_port, orthanc.aet, tmp_path / "w", **FAST)
    dest = Destination("127.0.0.1", orthanc.dicom_port, orthanc.aet)
    with pytest.raises(FindRefused) as caught:
        run_verify(tmp_path / "w", dest, calling_aet="MIGRATOR7")
    assert refusal_message("MIGRATOR7") in str(caught.value)
    assert "ask the PACS administrator to allow C-FIND for MIGRATOR7" in str(caught.value)


def test_cli_against_orthanc_mismatch_csv_and_resend(tmp_path, orthanc_factory, capsys):
    orthanc = orthanc_factory()
    tree = Tree(tmp_path / "src", series_sizes=((4,), (2,)), corpus=("CT_small.dcm",))
    work = tmp_path / "work"
    migrate(tree.root, orthanc.dicom_port, orthanc.aet, work, **FAST)
    gone = tree.in_study(tree.generated_study(0))[:2]
    for uid in gone:
        orthanc.delete_instance(orthanc.find_instance(uid))
    argv = ["verify", "--work-dir", str(work), "--host", "127.0.0.1", "--port",
            str(orthanc.dicom_port), "--called-aet", orthanc.aet]
    report = tmp_path / "report.csv"
    assert cli.main(argv + ["--csv", str(report)]) == 1
    out = capsys.readouterr().out
    assert "PATIENT A" in out and "2024-01-15" in out and "MISMATCH" in out
    assert all(uid in out for uid in gone)
    data = report.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0] == ",".join(REPORT_COLUMNS) and len(lines) == 1 + 3
    assert any(" ".join(sorted(gone)) in line and "MISMATCH" in line for line in lines)

    assert cli.main(argv + ["--resend-missing"]) == 0
    out = capsys.readouterr().out
    assert "Sending 2 missing images again" in out and "Checking again" in out
    assert orthanc.sop_instance_uids() == set(tree.files)


# --- DCMTK dcmqrscp ------------------------------------------------------------------------------
def test_dcmqrscp_match_then_lost_instances_named_then_resend(tmp_path, dcmqrscp_factory):
    """dcmqrscp cannot delete an instance, and it answers C-FIND from its index, so deleting
    stored files proves nothing. Honest alternative: after the real migration, wipe its
    storage (files + index) while it is stopped, restart it on the same port and AE title, and
    refill it with an independent migration (own work folder) of every file except a chosen
    few. The manifest under test still says all were sent; the PACS lacks exactly those."""
    qr = dcmqrscp_factory()
    tree = Tree(tmp_path / "src")
    work = tmp_path / "work"
    _, _, mig = migrate(tree.root, qr.port, qr.aet, work, **FAST)
    assert mig.exit_code == 0, mig.summary
    dest = Destination("127.0.0.1", qr.port, qr.aet)
    result, _, finished = run_verify(work, dest)
    assert_all_match(result, tree)  # no instance counts from dcmqrscp: every series listed
    assert finished.exit_code == 0

    study_c = tree.generated_study(2)
    gone = {tree.in_study(study_c)[0], tree.in_study(tree.generated_study(0))[4]}
    gone |= set(tree.in_study(tree.corpus_study("MR_small.dcm")))
    _refill_without(qr, tree, gone, tmp_path)
    result, _, finished = run_verify(work, dest)
    assert_names_exactly(result, tree, gone)
    assert finished.exit_code == 1

    resent = resend_missing(str(work), dest, settings(), Control(8))  # re-checks by itself
    assert resent.exit_code == 0 and resent.result.counts.get("sent") == len(gone)
    result, _, finished = run_verify(work, dest)
    assert_all_match(result, tree)


def _refill_without(qr: Any, tree: Tree, gone: Set[str], tmp_path: Path) -> None:
    qr.stop()
    shutil.rmtree(str(qr.storage_dir))
    qr.start()
    keep = tmp_path / "keep"
    for uid, path in tree.files.items():
        if uid not in gone:
            target = keep / path.relative_to(tree.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(str(path), str(target))
    _, _, mig = migrate(keep, qr.port, qr.aet, tmp_path / "other-work", **FAST)
    assert mig.exit_code == 0, mig.summary
    assert len(qr.stored_files()) == len(tree.files) - len(gone)


# --- in-process SCPs with scripted C-FIND behaviour ----------------------------------------------
class FindSCP:
    """A Study Root C-FIND SCP answering from ``held`` [(study, series, sop)].

    counts: answer Number of Study/Series Related Instances; cap: at most this many matches
    per query, ending with ``cap_status``; pending: 0xFF00 or 0xFF01; refuse_levels: answer
    0xC000 at these levels; lists: understand UID lists; abort_queries: numbers (1-based) of
    the queries answered with an A-ABORT instead.
    """

    def __init__(self, held: Sequence[Tuple[str, str, str]], *, counts: bool = True,
                 cap: Optional[int] = None, cap_status: int = 0xFE00, pending: int = 0xFF00,
                 refuse_levels: Sequence[str] = (), lists: bool = True,
                 abort_queries: Sequence[int] = (),
                 aet: str = "FINDSCP") -> None:
        self.held = list(held)
        self.counts, self.cap, self.cap_status, self.pending = counts, cap, cap_status, pending
        self.refuse_levels, self.lists = set(refuse_levels), lists
        self.abort_queries = set(abort_queries)
        self.queries: List[Tuple[str, Dict[str, Any]]] = []
        self.associations = 0
        self.lock = threading.Lock()
        ae = AE(ae_title=aet)
        ae.add_supported_context(STUDY_ROOT_FIND)
        ae.add_supported_context(Verification)
        self.aet, self.port = aet, free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self._on_find), (evt.EVT_ESTABLISHED, self._on_assoc)])

    def _on_assoc(self, event: Any) -> None:
        with self.lock:
            self.associations += 1

    def _on_find(self, event: Any) -> Iterator[Any]:
        query = event.identifier
        level = str(query.QueryRetrieveLevel)
        with self.lock:
            self.queries.append((level, {e.keyword: e.value for e in query}))
            abort = len(self.queries) in self.abort_queries
        if abort:
            event.assoc.abort()
            return
        if level in self.refuse_levels or not self._parents_ok(level, query):
            yield 0xC000, None
            return
        answers = self._answers(level, query)
        if self.cap is not None and len(answers) > self.cap:
            for ds in answers[:self.cap]:
                yield self.pending, ds
            if self.cap_status != 0:
                yield self.cap_status, None
            return
        for ds in answers:
            yield self.pending, ds

    @staticmethod
    def _parents_ok(level: str, query: Dataset) -> bool:
        # Like dcmqrscp and many PACS: lower levels need single-valued parent UIDs.
        need = {"SERIES": ("StudyInstanceUID",),
                "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID")}.get(level, ())
        return all(_values(query, k) and len(_values(query, k)) == 1 for k in need)

    def _answers(self, level: str, query: Dataset) -> List[Dataset]:
        rows = [r for r in self.held if self._match(query, r)]
        key = {"STUDY": 0, "SERIES": 1, "IMAGE": 2}[level]
        groups: Dict[str, List[Tuple[str, str, str]]] = {}
        for row in rows:
            groups.setdefault(row[key], []).append(row)
        out = []
        for uid, members in sorted(groups.items()):
            ds = Dataset()
            ds.QueryRetrieveLevel = level
            ds.StudyInstanceUID = members[0][0]
            if level == "STUDY":
                ds.StudyDate, ds.PatientName = "20240115", "SCRIPTED^PATIENT"
                if self.counts:
                    ds.NumberOfStudyRelatedInstances = len(members)
            if level in ("SERIES", "IMAGE"):
                ds.SeriesInstanceUID = members[0][1]
            if level == "SERIES" and self.counts:
                ds.NumberOfSeriesRelatedInstances = len(members)
            if level == "IMAGE":
                ds.SOPInstanceUID = uid
            out.append(ds)
        return out

    def _match(self, query: Dataset, row: Tuple[str, str, str]) -> bool:
        for index, keyword in enumerate(("StudyInstanceUID", "SeriesInstanceUID",
                                         "SOPInstanceUID")):
            wanted = _values(query, keyword)
            if len(wanted) > 1 and not self.lists:
                wanted = ["\\".join(wanted)]  # a PACS without list matching: a literal value
            if wanted and row[index] not in wanted:
                return False
        return True

    def stop(self) -> None:
        self.server.shutdown()


def _values(query: Dataset, keyword: str) -> List[str]:
    value = query.get(keyword, None)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


@pytest.fixture
def find_scp() -> Iterator[Any]:
    made: List[FindSCP] = []

    def factory(*args: Any, **kwargs: Any) -> FindSCP:
        scp = FindSCP(*args, **kwargs)
        made.append(scp)
        return scp
    yield factory
    for scp in made:
        scp.stop()


def held_instances(shape: Sequence[Sequence[int]]) -> List[Tuple[str, str, str]]:
    rows = []
    for sizes in shape:
        study = generate_uid()
        for size in sizes:
            series = generate_uid()
            rows += [(study, series, generate_uid()) for _ in range(size)]
    return rows


def fill_manifest(work: Path, dest: Destination, rows: Sequence[Tuple[str, str, str]],
                  folder: Optional[Path] = None) -> None:
    folder = folder or work.parent / "src"
    store = ManifestStore(str(work))
    try:
        for i, (study, series, sop) in enumerate(rows):
            store.record(dest.key, FileRecord(
                path=str(folder / ("%03d.dcm" % i)), status="sent", sop_instance_uid=sop,
                study_instance_uid=study, series_instance_uid=series,
                patient_name="DOE^JANE"))
    finally:
        store.close()


def scripted_case(tmp_path: Path, find_scp: Any, shape: Sequence[Sequence[int]],
                  drop: Sequence[int] = (), extra: int = 0, **options: Any
                  ) -> Tuple[FindSCP, Destination, List[Tuple[str, str, str]], Set[str]]:
    """Manifest says ``shape`` was sent; the SCP holds all but ``drop`` (+ ``extra`` more)."""
    sent = held_instances(shape)
    held = [r for i, r in enumerate(sent) if i not in drop]
    held += [(sent[0][0], sent[0][1], generate_uid()) for _ in range(extra)]
    scp = find_scp(held, **options)
    dest = Destination("127.0.0.1", scp.port, scp.aet)
    fill_manifest(tmp_path / "work", dest, sent)
    return scp, dest, sent, {sent[i][2] for i in drop}


def image_queries(scp: FindSCP) -> List[Dict[str, Any]]:
    return [keys for level, keys in scp.queries if level == "IMAGE"]


def test_scripted_counts_settle_studies_on_one_association(tmp_path, find_scp):
    scp, dest, sent, _ = scripted_case(tmp_path, find_scp, [(3, 2), (4,), (1,)])
    result, events, finished = run_verify(tmp_path / "work", dest)
    assert [r.verdict for r in result.studies] == ["MATCH"] * 3 and finished.exit_code == 0
    assert {level for level, _ in scp.queries} == {"STUDY"} and len(scp.queries) == 3
    assert scp.associations == 1
    progress = [(e.done, e.total) for e in events if type(e).__name__ == "Progress"]
    assert progress[0] == (0, 3) and progress[-1] == (3, 3)


def test_scripted_no_counts_pending_ff01_lists_each_series_with_parents(tmp_path, find_scp):
    scp, dest, sent, gone = scripted_case(tmp_path, find_scp, [(4, 3), (2,)], drop=(1, 5),
                                          counts=False, pending=0xFF01)
    result, _, finished = run_verify(tmp_path / "work", dest)
    assert set(result.missing_sop_uids()) == gone and finished.exit_code == 1
    row = rows_by_study(result)[sent[0][0]]
    assert (row.expected, row.found, row.verdict) == (7, 5, "MISMATCH")
    for keys in image_queries(scp):  # Study Root: both parents, single values
        assert isinstance(keys["StudyInstanceUID"], str) and keys["StudyInstanceUID"]
        assert isinstance(keys["SeriesInstanceUID"], str) and keys["SeriesInstanceUID"]
    assert scp.associations == 1


def test_scripted_silent_cap_is_detected_from_series_count(tmp_path, find_scp):
    # Caps at 3 answers but still ends with Success: only the series count gives it away.
    scp, dest, sent, gone = scripted_case(tmp_path, find_scp, [(8, 1)], drop=(6,), cap=3,
                                          cap_status=0x0000)
    result, _, _ = run_verify(tmp_path / "work", dest)
    assert set(result.missing_sop_uids()) == gone
    assert result.studies[0].found == 8 and result.studies[0].verdict == "MISMATCH"
    assert any("returned only 3 images of the 7 it holds" in n for n in result.notes)
    assert all(len(_values_of(k)) <= 3 for k in image_queries(scp))  # each answer fits the cap


def _values_of(keys: Dict[str, Any]) -> List[str]:
    value = keys.get("SOPInstanceUID", "")
    return [value] if isinstance(value, str) else list(value)


def test_scripted_cap_without_counts_stopped_status(tmp_path, find_scp):
    scp, dest, sent, gone = scripted_case(tmp_path, find_scp, [(7,)], drop=(0, 6), cap=2,
                                          counts=False)
    result, _, _ = run_verify(tmp_path / "work", dest)
    assert set(result.missing_sop_uids()) == gone
    assert any("returned only 2 images in one answer" in n for n in result.notes)


def test_scripted_without_uid_list_matching_asks_one_by_one(tmp_path, find_scp):
    scp, dest, sent, gone = scripted_case(tmp_path, find_scp, [(6,)], drop=(2,),
                                          counts=False, lists=False)
    result, _, _ = run_verify(tmp_path / "work", dest)
    assert set(result.missing_sop_uids()) == gone and result.studies[0].found == 5


def test_scripted_refused_image_level_is_not_a_match(tmp_path, find_scp):
    scp, dest, sent, _ = scripted_case(tmp_path, find_scp, [(3,), (2,)], drop=(0,),
                                       refuse_levels=("IMAGE",))
    result, _, finished = run_verify(tmp_path / "work", dest)
    row = rows_by_study(result)[sent[0][0]]
    assert row.verdict == "MISMATCH" and row.found == 2 and row.missing == ()
    assert rows_by_study(result)[sent[3][0]].verdict == "MATCH"  # settled by its count
    assert any("refused to list the images" in n and "0xC000" in n for n in result.notes)
    assert any("3 images could not be checked" in n for n in result.notes)
    assert finished.exit_code == 1


def test_scripted_refused_series_level_falls_back_to_each_series(tmp_path, find_scp):
    scp, dest, sent, gone = scripted_case(tmp_path, find_scp, [(3, 2)], drop=(4,),
                                          refuse_levels=("SERIES",))
    result, _, _ = run_verify(tmp_path / "work", dest)
    assert set(result.missing_sop_uids()) == gone and result.studies[0].found == 4
    assert any("refused a series-level query" in n for n in result.notes)
    assert len(image_queries(scp)) >= 2  # one listing per series the manifest knows


def test_scripted_extra_instances_still_match_with_a_note(tmp_path, find_scp):
    scp, dest, sent, _ = scripted_case(tmp_path, find_scp, [(3,)], extra=2)
    result, _, finished = run_verify(tmp_path / "work", dest)
    row = result.studies[0]
    assert (row.verdict, row.expected, row.found) == ("MATCH", 3, 5) and finished.exit_code == 0
    assert any("2 more than were copied" in n for n in result.notes)


def test_scripted_abort_reopens_the_association(tmp_path, find_scp):
    scp, dest, sent, gone = scripted_case(tmp_path, find_scp, [(2,), (3,)], drop=(4,),
                                          abort_queries=(2,))
    result, _, _ = run_verify(tmp_path / "work", dest)
    assert set(result.missing_sop_uids()) == gone and result.matched == 1
    assert scp.associations == 2


def test_scp_with_only_storage_refuses_find_plainly(tmp_path):
    ae = AE(ae_title="STOREONLY")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        dest = Destination("127.0.0.1", port, "STOREONLY")
        fill_manifest(tmp_path / "work", dest, held_instances([(2,)]))
        with pytest.raises(FindRefused) as caught:
            run_verify(tmp_path / "work", dest)
        assert str(caught.value) == refusal_message("PACSMIGRATOR")
        assert str(caught.value) == ("The destination does not allow queries (C-FIND) from our "
                                     "AE title — ask the PACS administrator to allow C-FIND "
                                     "for PACSMIGRATOR.")
        terminal = run_job("verify", lambda c: verify(str(tmp_path / "work"), dest,
                                                      settings(), c), lambda e: None)
        assert isinstance(terminal, JobFailed) and terminal.message == str(caught.value)
        argv = ["verify", "--work-dir", str(tmp_path / "work"), "--host", "127.0.0.1",
                "--port", str(port), "--called-aet", "STOREONLY"]
        assert cli.main(argv) == 3
    finally:
        server.shutdown()


def test_scripted_abort_on_every_query_reads_as_refusal(tmp_path, find_scp):
    scp, dest, sent, _ = scripted_case(tmp_path, find_scp, [(2,)], abort_queries=range(1, 100))
    with pytest.raises(FindRefused) as caught:
        run_verify(tmp_path / "work", dest, calling_aet="ABC")
    assert "closed the connection each time we asked" in str(caught.value)
    assert str(caught.value).endswith(refusal_message("ABC"))


# --- no network needed, or nothing listening -----------------------------------------------------
def test_unreachable_destination_exit_3(tmp_path, capsys):
    dest = Destination("127.0.0.1", free_port(), "NOBODY")
    fill_manifest(tmp_path / "work", dest, held_instances([(1,)]))
    with pytest.raises(DestinationUnreachable):
        run_verify(tmp_path / "work", dest)
    argv = ["verify", "--work-dir", str(tmp_path / "work"), "--host", "127.0.0.1", "--port",
            str(dest.port), "--called-aet", "NOBODY", "--timeout", "3"]
    assert cli.main(argv) == 3
    assert "refused the connection" in capsys.readouterr().err


def test_other_spelling_of_the_destination_is_explained(tmp_path, capsys):
    sent_to = Destination("LOCALHOST", 4242, "ORTHANC")
    fill_manifest(tmp_path / "work", sent_to, held_instances([(1,)]))
    asked = Destination("127.0.0.1", 4242, "ORTHANC")  # nothing listens: no query is sent
    result, _, finished = run_verify(tmp_path / "work", asked)
    assert result.studies == [] and finished.exit_code == 1
    assert "ORTHANC@localhost:4242" in result.notes[0] and "spelling" in result.notes[0]
    with pytest.raises(ConfigError):
        run_verify(tmp_path / "nowhere", asked)
    assert not (tmp_path / "nowhere").exists()  # checking never creates a manifest


def test_cli_all_match_and_long_missing_list(tmp_path, find_scp, capsys):
    scp, dest, sent, _ = scripted_case(tmp_path, find_scp, [(2,)])
    argv = ["verify", "--work-dir", str(tmp_path / "work"), "--host", "127.0.0.1", "--port",
            str(scp.port), "--called-aet", scp.aet]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "MATCH" in out and "1 study checked: 1 MATCH, 0 MISMATCH" in out

    scp2, dest2, sent2, gone = scripted_case(tmp_path / "b", find_scp, [(30,)],
                                             drop=tuple(range(25)), counts=False)
    argv = ["verify", "--work-dir", str(tmp_path / "b" / "work"), "--host", "127.0.0.1",
            "--port", str(scp2.port), "--called-aet", scp2.aet]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "... and 5 more" in out and "25 images missing from the PACS" in out
    shown = [uid for uid in gone if uid in out]
    assert len(shown) == 20


def test_report_csv_has_bom_and_one_line_per_study(tmp_path):
    result = VerifyResult(studies=[
        StudyVerified(0, "1.2.3", "MÜLLER^JÖRG", 3, 1, "MISMATCH", ("1.2.3.1", "1.2.3.2")),
        StudyVerified(0, "1.2.4", "", 1, 1, "MATCH")])
    path = tmp_path / "r.csv"
    assert write_report_csv(result, str(path)) == 2
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").splitlines()
    assert lines == ["study_uid,patient,expected,found,verdict,missing_sop_uids",
                     "1.2.3,MÜLLER^JÖRG,3,1,MISMATCH,1.2.3.1 1.2.3.2", "1.2.4,,1,1,MATCH,"]


def test_resend_folder_is_the_common_parent_and_never_holds_the_work_folder(tmp_path):
    control = Control()
    paths = [str(tmp_path / "src" / "a" / "1.dcm"), str(tmp_path / "src" / "b" / "2.dcm")]
    assert _resend_folder(paths, None, str(tmp_path / "work"), control) == \
        str(tmp_path / "src")
    with pytest.raises(ConfigError, match="work folder"):
        _resend_folder(paths, None, str(tmp_path / "src" / "w"), control)
    assert _resend_folder(paths, str(tmp_path), str(tmp_path / "w"), control) == str(tmp_path)


def test_resend_with_nothing_missing_sends_nothing(tmp_path, find_scp):
    scp, dest, sent, _ = scripted_case(tmp_path, find_scp, [(2,)])
    finished = resend_missing(str(tmp_path / "work"), dest, settings(), Control())
    assert finished.exit_code == 0 and "nothing to send again" in finished.summary
    assert {r.status for r in records(tmp_path / "work")} == {"sent"}
