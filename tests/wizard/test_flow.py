"""The real wizard, driven through all five steps against a real SCP with real corpus files."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from pydicom.uid import UID

from tests import corpus
from tests.wizard.conftest import ScriptedDialogs, wait_until
from tests.wizard.scp import ScriptedPACS, sop_uid_of

pytestmark = [pytest.mark.network, pytest.mark.slow]

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"          # refused by the test PACS
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CLINIC_FILES = [
    "CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
    "SC_rgb_dcmtk_+eb+cr.dcm",   # JPEG baseline: the PACS takes it only decompressed
    "ExplVR_BigEnd.dcm",         # ultrasound: a SOP class the PACS refuses
    "17106", "17136", "17166", "17196", "6293", "6924", "2062", "4919", "4950", "4981",
    # (not the dicomdirtests IM0000xx CT stubs: without Pixel Data they fail as cut off)
    "SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm", "emri_small.dcm",
    "test-SR.dcm", "reportsi.dcm", "liver_1frame.dcm",
]
FAIL_FIRST = ("17106", "17136")  # rejected on the first attempt, accepted on retry


def corpus_file(name: str) -> Path:
    for path in corpus.pydicom_test_files() + corpus.pydicom_data_files():
        if path.name == name:
            return path
    raise LookupError(name)


@pytest.fixture
def clinic(tmp_path: Path) -> Path:
    """An old image store: corpus files in patient/study folders, plus a stray text file."""
    root = tmp_path / "clinic"
    corpus.copy_corpus(root, [corpus_file(n) for n in CLINIC_FILES], layout="nested")
    (root / "PATIENT_00" / "notes.txt").write_text("not an image\n")
    return root


def path_of(root: Path, name: str) -> Path:
    return next(root.rglob(name))


@pytest.fixture
def pacs(clinic: Path) -> Iterator[ScriptedPACS]:
    fail = [sop_uid_of(path_of(clinic, n)) for n in FAIL_FIRST]
    server = ScriptedPACS(refuse_sop_classes=[US_IMAGE, US_MULTIFRAME], fail_first=fail).start()
    yield server
    server.stop()


def set_advanced(app: Any, **values: str) -> None:
    dialog = app.open_advanced()
    for key, value in values.items():
        dialog.vars[key].set(value)
    dialog.save()
    assert not dialog.winfo_exists()


def to_copy_step(app: Any, server: ScriptedPACS, clinic: Path) -> Any:
    """From step 1 to the Copy step: skip discovery, connect to ``server``, copy all of
    ``clinic`` without a scan."""
    c = app.controller
    c.go_next()
    conn = c.current
    for key, value in (("host", "127.0.0.1"), ("port", str(server.port)), ("called", "TESTPACS")):
        conn.vars[key].set(value)
    assert c.go_next()
    c.current.folder.set(str(clinic))
    assert c.go_next()
    return c.current


def idle(step: Any) -> bool:
    return not step.busy


def find_the_pacs(app: Any, pacs: ScriptedPACS) -> None:
    """Step 1: discovery on loopback only (the test PACS's port), then pick the row."""
    find = app.controller.current
    find.subnet.set("127.0.0.1/32")
    find.ports.set(str(pacs.port))
    find.start_search()
    wait_until(lambda: find.results.tree.get_children() and find.work_state == "done", app,
               what="discovery")
    assert find.results.tree.item(find.results.tree.get_children()[0], "values")[2] == "Yes"
    find.use_selected()


def connect(app: Any, pacs: ScriptedPACS) -> None:
    """Step 2: filled from the row; a bad port is refused; the echo is green."""
    c = app.controller
    conn = c.current
    assert conn.title == "Connect"
    assert conn.vars["host"].get() == "127.0.0.1"
    assert conn.vars["port"].get() == str(pacs.port)
    conn.vars["port"].set("abc")
    assert not c.go_next()
    assert "number" in conn.form.errors["port"].cget("text")
    conn.vars["port"].set(str(pacs.port))
    conn.vars["called"].set("TESTPACS")
    conn.test_connection()
    wait_until(lambda: conn.banner.kind in ("Good", "Bad"), app, what="echo")
    assert conn.banner.kind == "Good", conn.banner.text
    assert c.go_next()


def choose_files(app: Any, clinic: Path) -> None:
    """Step 3: scan, unreadable files, filters, and the pre-flight probe."""
    c = app.controller
    choose = c.current
    choose.folder.set(str(clinic))
    choose.mode.set("scan")
    assert "Scan" in (choose.validate() or "")
    choose.start_scan()
    wait_until(lambda: choose._scan is not None and idle(choose), app, timeout=60, what="scan")
    wait_until(lambda: choose._probe is not None and idle(choose), app, timeout=60, what="probe")
    problems = [choose.problems.tree.item(i, "values")[0]
                for i in choose.problems.tree.get_children()]
    assert any(p.endswith("notes.txt") for p in problems)
    assert len(choose.tree.selected_files()) == len(CLINIC_FILES)
    choose.filter_vars["text"].set("Doe")
    choose.apply_filters()
    shown = choose.tree.selected_files()
    assert shown and all(Path(p).name in {"17106", "17136", "17166", "17196", "6293", "6924",
                                          "2062", "4919", "4950", "4981"} for p in shown)
    choose.filter_vars["from"].set("not a date")
    choose.apply_filters()
    assert "not a date" in choose.filter_error.cget("text")
    for var in choose.filter_vars.values():
        var.set("")
    choose.apply_filters()
    assert len(choose.tree.selected_files()) == len(CLINIC_FILES)
    actions = {choose.probe_table.tree.item(i, "values")[3]
               for i in choose.probe_table.tree.get_children()}
    assert {"sent as is", "decompressed first", "refused by the PACS"} <= actions
    assert choose.probe_banner.kind == "Bad"  # something will be refused: said up front
    assert c.go_next()


def copy_retry_export(app: Any, dialogs: ScriptedDialogs, pacs: ScriptedPACS, clinic: Path,
                      tmp_path: Path) -> None:
    """Step 4: a refused class and first-attempt failures, Retry failed, then the CSV."""
    c = app.controller
    copy = c.current
    assert copy.title == "Copy"
    copy.start()
    wait_until(lambda: c.state.migration is not None and idle(copy), app, timeout=120,
               what="copy")
    assert c.state.migration.counts.get("failed") == 3, c.state.migration.counts
    statuses = [copy.table.tree.item(i, "values")[2] for i in copy.table.tree.get_children()]
    assert statuses.count("Failed") == 3 and statuses.count("Copied") >= 17
    assert copy.reasons.tree.get_children()
    assert copy.banner.kind == "Warn" and "Retry failed" in copy.banner.text
    assert "Source check" in copy.banner.text
    assert copy.retry_button.instate(["!disabled"])
    # The run ended normally: the highlight (and the focus) moves to Retry failed; the start
    # button says what pressing it again would do.
    assert str(copy.retry_button.cget("style")) == "Accent.TButton"
    assert str(copy.start_button.cget("style")) != "Accent.TButton"
    assert copy.start_button.cget("text") == "Copy new or changed files"
    assert app.focus_get() is copy.retry_button
    copy.retry_failed()
    wait_until(lambda: idle(copy) and c.state.migration is not None, app, timeout=60,
               what="retry")
    assert c.state.migration.counts.get("failed") == 1  # only the refused ultrasound image
    for name in FAIL_FIRST:
        assert pacs.attempts[sop_uid_of(path_of(clinic, name))] == 2
    assert len(copy.reasons.tree.get_children()) == 1
    assert str(copy.retry_button.cget("style")) == "Accent.TButton"  # one still failed
    csv_path = tmp_path / "audit.csv"
    dialogs.paths.append(str(csv_path))
    copy.export_csv()
    wait_until(lambda: csv_path.exists() and copy.export_button.instate(["!disabled"]), app,
               what="CSV export")
    with open(str(csv_path), encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(CLINIC_FILES)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["ExplVR_BigEnd.dcm"]["status"] == "failed"
    assert by_name["17106"]["status"] == "sent"
    assert c.go_next()


def check_result(app: Any, dialogs: ScriptedDialogs, pacs: ScriptedPACS, clinic: Path,
                 tmp_path: Path) -> None:
    """Step 5: all match; the PACS loses an image; send it again; all match; the report."""
    check = app.controller.current
    check.start_verify()
    wait_until(lambda: idle(check) and check.banner.kind in ("Good", "Bad", "Warn"), app,
               timeout=60, what="verify")
    assert check.banner.kind == "Good", check.banner.text
    lost = sop_uid_of(path_of(clinic, "6293"))
    del pacs.stored[lost]
    check.start_verify()
    wait_until(lambda: idle(check) and check.banner.kind == "Bad", app, timeout=60,
               what="mismatch")
    verdicts = [check.table.tree.item(i, "values")[0] for i in check.table.tree.get_children()]
    assert any("MISMATCH" in v for v in verdicts)
    assert check.resend_button.instate(["!disabled"])
    check.resend_missing()
    wait_until(lambda: idle(check) and check.banner.kind == "Good", app, timeout=90,
               what="resend and re-verify")
    assert lost in pacs.stored
    report = tmp_path / "verification.csv"
    dialogs.paths.append(str(report))
    check.export_report()
    wait_until(lambda: report.exists() and idle(check) and check.banner.kind == "Good", app,
               what="report")
    assert "MATCH" in report.read_text(encoding="utf-8")


def test_all_five_steps(make_app: Any, dialogs: ScriptedDialogs, pacs: ScriptedPACS,
                        clinic: Path, tmp_path: Path) -> None:
    before = corpus.tree_digest(clinic)
    app = make_app()
    set_advanced(app, retries="0", work_dir=str(tmp_path / "work"))
    find_the_pacs(app, pacs)
    connect(app, pacs)
    choose_files(app, clinic)
    copy_retry_export(app, dialogs, pacs, clinic, tmp_path)
    check_result(app, dialogs, pacs, clinic, tmp_path)
    assert corpus.tree_digest(clinic) == before  # copy-only: the source is untouched
    assert app.controller.go_next()  # Finish closes the window
    assert not app.controller.running_jobs()


def test_cancel_while_copying_then_continue(make_app: Any, clinic: Path, tmp_path: Path) -> None:
    server = ScriptedPACS(delay_s=0.15).start()
    try:
        app = make_app()
        c = app.controller
        set_advanced(app, retries="0", work_dir=str(tmp_path / "work"))
        copy = to_copy_step(app, server, clinic)
        copy.start()
        assert copy.busy and not app.next_button.instate(["!disabled"])
        assert not c.go_back()  # no leaving mid-copy
        wait_until(lambda: copy.table.total >= 3, app, timeout=30, what="first files")
        copy.toggle_pause()
        assert copy.pause_button.cget("text") == "Resume"
        copy.toggle_pause()
        copy.stop()
        assert copy.work_state == "cancelling"
        wait_until(lambda: idle(copy), app, timeout=30, what="stop")
        assert "Stopped by you" in copy.banner.text
        # Stopped: continuing is the natural next step, so it stays the highlighted button.
        assert copy.start_button.cget("text") == "Continue copying"
        assert str(copy.start_button.cget("style")) == "Accent.TButton"
        assert "Continue copying" in copy.banner.text
        first = c.state.migration
        assert first.stopped == "cancelled"
        sent_first = first.counts.get("sent", 0)
        assert 0 < sent_first < len(CLINIC_FILES) - 2
        copy.start()  # "Continue copying": only what is left is sent
        wait_until(lambda: idle(copy) and c.state.migration is not first, app, timeout=60,
                   what="continue")
        assert all(n == 1 for n in server.attempts.values()), server.attempts
        done = sum(1 for n in server.attempts.values())
        assert done == len(server.stored) and done >= len(CLINIC_FILES) - 1
        # Finished with nothing failed: no highlighted copy button, the focus is on Next.
        assert not c.state.migration.counts.get("failed")
        assert copy.start_button.cget("text") == "Copy new or changed files"
        assert str(copy.start_button.cget("style")) == "TButton"
        assert str(copy.retry_button.cget("style")) == "TButton"
        assert app.focus_get() is app.next_button
    finally:
        server.stop()


def test_close_during_copy_asks_cancels_and_joins(make_app: Any, dialogs: ScriptedDialogs,
                                                  clinic: Path, tmp_path: Path) -> None:
    server = ScriptedPACS(delay_s=0.3).start()
    try:
        app = make_app()
        c = app.controller
        set_advanced(app, work_dir=str(tmp_path / "work"))
        c.go_next()
        for key, value in (("host", "127.0.0.1"), ("port", str(server.port)),
                           ("called", "TESTPACS")):
            c.current.vars[key].set(value)
        assert c.go_next()
        c.current.folder.set(str(clinic))
        assert c.go_next()
        c.current.start()
        wait_until(lambda: c.current.table.total >= 1, app, timeout=30, what="first file")
        (job,) = c.running_jobs()
        dialogs.yes_no.append(False)
        assert not c.request_close()  # "No": keep copying
        assert job.is_alive() and app.winfo_exists()
        dialogs.yes_no.append(True)
        assert c.request_close()
        assert not job.is_alive()
        assert "Stop and close?" in dialogs.asked[-1][0]
    finally:
        server.stop()


def test_refused_sop_class_name_is_readable() -> None:
    assert "Ultrasound" in UID(US_IMAGE).name


def test_sending_window_waits_visibly_and_cancels(make_app: Any, clinic: Path,
                                                  tmp_path: Path) -> None:
    """Advanced settings reach the engine: outside the window nothing is sent and the copy
    step says what it is waiting for; Stop works while waiting."""
    import datetime as dt

    opens = dt.datetime.now() + dt.timedelta(hours=2)
    window = "%s-%s" % (opens.strftime("%H:%M"), (opens + dt.timedelta(hours=1)).strftime("%H:%M"))
    server = ScriptedPACS().start()
    try:
        app = make_app()
        c = app.controller
        set_advanced(app, work_dir=str(tmp_path / "work"), window=window, max_mbps="5")
        assert c.state.prefs.time_window() == window and c.state.prefs.rate_cap() == 5.0
        copy = to_copy_step(app, server, clinic)
        copy.start()
        wait_until(lambda: "waiting until %s" % opens.strftime("%H:%M")
                   in copy.current.cget("text"), app, timeout=30, what="waiting notice")
        copy.stop()
        wait_until(lambda: idle(copy), app, timeout=10, what="stop while waiting")
        assert not server.stored
    finally:
        server.stop()
