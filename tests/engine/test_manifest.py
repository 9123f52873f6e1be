import csv

from engine.audit import CSV_COLUMNS, export_csv
from engine.manifest import FileRecord, ManifestStore


def test_record_and_reopen(tmp_path):
    store = ManifestStore(str(tmp_path))
    store.record("A@h:1", FileRecord(path="/src/a.dcm", status="sent", size=10, mtime_ns=5,
                                     sop_instance_uid="1.2.3", patient_name="Müller^Zoë"))
    store.record("A@h:1", FileRecord(path="/src/b.dcm", status="failed", message="boom"))
    store.close()
    store = ManifestStore(str(tmp_path))
    known = store.known_in_dir("A@h:1", "/src")
    assert known["/src/a.dcm"].status == "sent" and known["/src/a.dcm"].size == 10
    assert store.failed_paths("A@h:1") == ["/src/b.dcm"]
    assert store.known("B@h:1", "/src/a.dcm") is None  # another destination is another job


def test_attempts_accumulate(tmp_path):
    store = ManifestStore(str(tmp_path))
    for _ in range(3):
        store.record("d", FileRecord(path="/x", status="failed", attempts=0))
        rec = FileRecord(path="/x", status="failed")
    row = list(store.records("d"))[0][1]
    assert row.attempts == 0  # attempts are counted by the migration, kept across rewrites
    store.record("d", FileRecord(path="/x", status="failed", attempts=4))
    store.record("d", FileRecord(path="/x", status="sent"))
    assert list(store.records("d"))[0][1].attempts == 4
    del rec


def test_csv_has_bom_and_columns(tmp_path):
    store = ManifestStore(str(tmp_path))
    store.record("d", FileRecord(path="/s/a.dcm", status="sent", patient_name="山田^太郎"))
    store.close()
    out = tmp_path / "audit.csv"
    assert export_csv(str(tmp_path), str(out)) == 1
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1][CSV_COLUMNS.index("patient_name")] == "山田^太郎"
    assert rows[1][CSV_COLUMNS.index("destination")] == "d"


def test_mark_for_resend(tmp_path):
    store = ManifestStore(str(tmp_path))
    store.record("d", FileRecord(path="/s/a", status="sent", sop_instance_uid="1.1"))
    assert store.mark_for_resend("d", ["1.1"], "missing at destination") == 1
    assert store.failed_paths("d") == ["/s/a"]
