"""Verification: ask the destination (C-FIND) what it holds and compare, study by study, with
what the manifest says was sent; resend exactly what is missing; write the per-study report.

Queries go down the Study Root hierarchy as real PACS require: STUDY first (its instance count,
when the PACS gives one, settles most studies), then SERIES, then IMAGE with both parent UIDs,
one series at a time so every answer stays small. The C-FIND mechanics live in ``cfind``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, TextIO, Tuple

from . import cli_common as common
from . import dirs
from .cfind import FindReply, FindSession, describe_find_status, int_of, query_keys, text_of
from .cfind import uid_chunks
from .config import Destination, Settings
from .errors import ConfigError
from .events import JobFinished, LogLine, Progress, StudyVerified
from .jobs import Control
from .manifest import DONE_STATES, ManifestStore, manifest_path
from .worklock import WorkLock

MATCH, MISMATCH, MISSING = "MATCH", "MISMATCH", "MISSING"
CHUNK = 50  # SOP Instance UIDs asked about in one targeted query
SHOW_MISSING = 20  # missing UIDs listed per study on the command line
REPORT_COLUMNS = ("study_uid", "patient", "expected", "found", "verdict", "missing_sop_uids")
LIMIT_HINT = "it limits C-FIND results (in Orthanc: the LimitFindInstances setting)"


@dataclass
class VerifyResult:
    """The outcome of one verification; ``studies`` holds the rows in the order checked."""

    destination: str = ""
    studies: List[StudyVerified] = field(default_factory=list)
    matched: int = 0
    mismatched: int = 0
    missing: int = 0
    notes: List[str] = field(default_factory=list)
    study_dates: Dict[str, str] = field(default_factory=dict)  # as the PACS reported them
    unchecked: int = 0  # copied images the PACS could not be asked about (no Study UID)
    cancelled: bool = False

    @property
    def all_match(self) -> bool:
        return (bool(self.studies) and self.matched == len(self.studies)
                and not self.unchecked and not self.cancelled)

    def missing_sop_uids(self) -> List[str]:
        return [uid for row in self.studies for uid in row.missing]

    def add(self, row: StudyVerified, study_date: str) -> None:
        self.studies.append(row)
        self.study_dates[row.study_instance_uid] = study_date
        if row.verdict == MATCH:
            self.matched += 1
        elif row.verdict == MISSING:
            self.missing += 1
        else:
            self.mismatched += 1


@dataclass
class _Expected:
    """What the manifest says one study should hold."""

    study_uid: str
    patient: str
    series: Dict[str, Set[str]]  # series UID -> SOP Instance UIDs

    @property
    def sops(self) -> Set[str]:
        return set().union(*self.series.values()) if self.series else set()


@dataclass
class _Found:
    """What the destination told us about one study."""

    present: bool = False
    study_date: str = ""
    count: Optional[int] = None  # Number of Study Related Instances, when answered
    uids: Set[str] = field(default_factory=set)  # instances shown to be there
    unknown: Set[str] = field(default_factory=set)  # expected ones we could not ask about
    notes: List[str] = field(default_factory=list)


# -- reading the manifest ------------------------------------------------------------------
def _load_expected(work_dir: str, dest: Destination) -> Tuple[List[_Expected], int, List[str]]:
    """(studies, images without a Study UID, destinations the manifest knows)."""
    if not manifest_path(work_dir).exists():
        raise ConfigError("There is no manifest in %s: choose the work folder used for the "
                          "copy." % work_dir)
    store = ManifestStore(work_dir)
    try:
        sent = store.sent_by_study(dest.key)
        known = store.destinations()
    finally:
        store.close()
    no_study = len({sop for sop, _, _ in sent.pop("", [])})
    studies = []
    for study_uid in sent:
        series: Dict[str, Set[str]] = {}
        names = [name for _, _, name in sent[study_uid] if name]
        for sop, series_uid, _ in sent[study_uid]:
            series.setdefault(series_uid, set()).add(sop)
        studies.append(_Expected(study_uid, names[0] if names else "", series))
    studies.sort(key=lambda e: (_person(e.patient).upper(), e.study_uid))  # as staff look
    return studies, no_study, known


def _shared_uid_note(studies: Sequence[_Expected]) -> Optional[str]:
    # A PACS keeps one instance per SOP Instance UID, so a UID in two studies looks missing
    # from one of them: warn before anyone resends in a loop.
    owner: Dict[str, str] = {}
    shared = set()
    for exp in studies:
        for uid in exp.sops:
            if owner.setdefault(uid, exp.study_uid) != exp.study_uid:
                shared.add(uid)
    if not shared:
        return None
    return ("%s carry the same SOP Instance UID as an image of another study. A PACS keeps "
            "only one image per UID, so one of those studies will look incomplete however "
            "often it is sent." % plural(len(shared), "copied image"))


# -- asking the destination ----------------------------------------------------------------
def _uids(reply: FindReply) -> Set[str]:
    return {text_of(m, "SOPInstanceUID") for m in reply.matches} - {""}


def _check_study(session: FindSession, exp: _Expected) -> _Found:
    found = _Found()
    reply = session.query(query_keys("STUDY", StudyInstanceUID=exp.study_uid, StudyDate="",
                                     PatientName="", NumberOfStudyRelatedInstances=""))
    if reply.failed:
        found.unknown = exp.sops
        found.notes.append("The destination could not answer for this study (%s)."
                           % describe_find_status(reply.status, reply.comment))
        return found
    hits = [m for m in reply.matches if text_of(m, "StudyInstanceUID") in ("", exp.study_uid)]
    if not hits:
        return found
    found.present = True
    found.study_date = text_of(hits[0], "StudyDate")
    found.count = int_of(hits[0], "NumberOfStudyRelatedInstances")
    if found.count == len(exp.sops):
        found.uids = exp.sops  # the PACS's own count agrees: no need to list every image
        return found
    _check_series(session, exp, found)
    return found


def _check_series(session: FindSession, exp: _Expected, found: _Found) -> None:
    reply = session.query(query_keys("SERIES", StudyInstanceUID=exp.study_uid,
                                     SeriesInstanceUID="", NumberOfSeriesRelatedInstances=""))
    listed: Optional[Dict[str, Optional[int]]] = None
    if reply.failed:
        found.notes.append("The destination refused a series-level query (%s); each series was "
                           "checked image by image." % describe_find_status(reply.status))
    else:
        listed = {text_of(m, "SeriesInstanceUID"): int_of(m, "NumberOfSeriesRelatedInstances")
                  for m in reply.matches}
    for series_uid, sops in sorted(exp.series.items()):
        if listed is not None and reply.complete and series_uid not in listed:
            continue  # the whole series is absent
        count = listed.get(series_uid) if listed else None
        if count == len(sops):
            found.uids |= sops
            continue
        _check_images(session, exp.study_uid, series_uid, sops, count, found)


def _check_images(session: FindSession, study_uid: str, series_uid: str, sops: Set[str],
                  count: Optional[int], found: _Found) -> None:
    reply = session.query(query_keys("IMAGE", StudyInstanceUID=study_uid,
                                     SeriesInstanceUID=series_uid, SOPInstanceUID=""))
    if reply.failed:
        found.unknown |= sops - found.uids
        found.notes.append("The destination refused to list the images of series %s (%s)."
                           % (series_uid, describe_find_status(reply.status, reply.comment)))
        return
    seen = _uids(reply)
    found.uids |= seen
    capped = reply.truncated or (count is not None and len(seen) < count)
    if capped:
        of = " of the %d it holds" % count if count is not None else ""
        found.notes.append("Series %s: the destination returned only %s%s in one answer — %s. "
                           "The rest were checked with smaller queries."
                           % (series_uid, plural(len(seen), "image"), of, LIMIT_HINT))
    unseen = sorted(sops - seen)
    if unseen:
        limit = len(seen) if capped else None
        _confirm(session, (study_uid, series_uid), unseen, sorted(seen), limit, found)


def _confirm(session: FindSession, parents: Tuple[str, str], unseen: List[str],
             seen: List[str], limit: Optional[int], found: _Found) -> None:
    """Ask about specific UIDs the listing did not show, in small lists.

    Each list carries one UID the destination has just listed: if that one does not come back,
    the destination does not understand UID lists, and we ask one UID at a time instead.
    """
    probe = seen[0] if seen else ""
    size = CHUNK if limit is None else min(CHUNK, limit - 1)
    if not probe or size < 1:
        _confirm_singly(session, parents, unseen, found)
        return
    for chunk in uid_chunks(unseen, size):
        reply = session.query(_image_keys(parents, chunk + [probe]))
        got = _uids(reply)
        if reply.failed or reply.truncated or probe not in got:
            _confirm_singly(session, parents, chunk, found)
        else:
            found.uids |= got & set(chunk)


def _confirm_singly(session: FindSession, parents: Tuple[str, str], uids: List[str],
                    found: _Found) -> None:
    for uid in uids:
        reply = session.query(_image_keys(parents, uid))
        if reply.failed:
            found.unknown.add(uid)
        elif uid in _uids(reply):
            found.uids.add(uid)


def _image_keys(parents: Tuple[str, str], sop: Any) -> Any:
    return query_keys("IMAGE", StudyInstanceUID=parents[0], SeriesInstanceUID=parents[1],
                      SOPInstanceUID=sop)


# -- turning answers into rows ---------------------------------------------------------------
def _row(job_id: int, exp: _Expected, found: _Found) -> StudyVerified:
    expected = exp.sops
    missing = tuple(sorted(expected - found.uids - found.unknown))
    count = max(len(found.uids), found.count or 0)
    if not found.present and not found.unknown:
        verdict = MISSING
    elif missing or found.unknown:
        verdict = MISMATCH
    else:
        verdict = MATCH
    return StudyVerified(job_id, exp.study_uid, exp.patient, len(expected), count, verdict,
                         missing)


def _study_notes(exp: _Expected, found: _Found, row: StudyVerified) -> List[str]:
    who = "Study %s%s" % (exp.study_uid, " (%s)" % _person(exp.patient) if exp.patient else "")
    notes = ["%s: %s" % (who, text) for text in found.notes]
    if found.unknown:
        notes.append("%s: %s could not be checked, so the study is not confirmed."
                     % (who, plural(len(found.unknown), "image")))
    if row.found > row.expected and not row.missing:
        notes.append("%s: the PACS holds %s, %d more than were copied from here — that is "
                     "fine." % (who, plural(row.found, "image"), row.found - row.expected))
    return notes


def plural(count: int, word: str, words: str = "") -> str:
    """'1 image', '3 images'."""
    return "%d %s" % (count, word if count == 1 else (words or word + "s"))


def _person(name: str) -> str:
    return " ".join(name.replace("^", " ").split())


# -- the job ----------------------------------------------------------------------------------
def verify(work_dir: str, dest: Destination, settings: Settings, control: Control, *,
           source: Optional[str] = None) -> JobFinished:
    """Compare the manifest of ``work_dir`` for ``dest`` with what ``dest`` holds.

    Emits StudyVerified and Progress as it goes; ``result`` is a VerifyResult. Raises
    DestinationUnreachable (FindRefused) when the destination cannot be queried at all.
    ``source`` is accepted for symmetry with the other jobs and not needed here.
    """
    work = os.path.abspath(work_dir)
    # A copy still running would give a false MATCH; a missing folder is reported by the load.
    with WorkLock(work) if os.path.isdir(work) else contextlib.nullcontext():
        studies, no_study, known = _load_expected(work, dest)
    result = VerifyResult(destination=dest.key, unchecked=no_study)
    _pre_notes(result, studies, no_study, known, dest)
    if studies:
        session = FindSession(dest, settings, control)
        try:
            _check_all(session, studies, result, control)
        finally:
            session.close()
    return JobFinished(control.job_id, _summary(result), _counts(result),
                       cancelled=result.cancelled, exit_code=0 if result.all_match else 1,
                       result=result)


def _pre_notes(result: VerifyResult, studies: List[_Expected], no_study: int,
               known: List[str], dest: Destination) -> None:
    if not studies and not no_study:
        others = [k for k in known if k != dest.key]
        text = "The records in this work folder show no image sent successfully to %s." % (
            dest.key)
        if others:
            text += (" They do hold images sent to: %s. Use the same host, port and AE title "
                     "spelling as for the copy." % ", ".join(others))
        result.notes.append(text)
    if no_study:
        result.notes.append("%s without a Study Instance UID cannot be looked up in the PACS."
                            % plural(no_study, "copied image"))
    shared = _shared_uid_note(studies)
    if shared:
        result.notes.append(shared)


def _check_all(session: FindSession, studies: List[_Expected], result: VerifyResult,
               control: Control) -> None:
    control.emit(Progress(control.job_id, 0, len(studies)))
    for done, exp in enumerate(studies, 1):
        control.wait_if_paused()
        if control.cancelled:
            result.cancelled = True
            return
        found = _check_study(session, exp)
        row = _row(control.job_id, exp, found)
        result.add(row, found.study_date)
        for note in _study_notes(exp, found, row):
            result.notes.append(note)
            control.emit(LogLine(control.job_id, "warning", note))
        control.emit(row)
        control.emit(Progress(control.job_id, done, len(studies), current=exp.study_uid,
                              counts=tuple(sorted(_counts(result).items()))))


def _counts(result: VerifyResult) -> Dict[str, int]:
    return {MATCH: result.matched, MISMATCH: result.mismatched, MISSING: result.missing,
            "missing_images": len(result.missing_sop_uids())}


def _summary(result: VerifyResult) -> str:
    text = ("%s checked: %d MATCH, %d MISMATCH (images missing), %d MISSING (study not in the "
            "PACS)" % (plural(len(result.studies), "study", "studies"), result.matched,
                       result.mismatched, result.missing))
    lost = len(result.missing_sop_uids())
    if lost:
        text += "; %s missing from the PACS in all" % plural(lost, "image")
    if result.unchecked:
        text += "; %s could not be checked" % plural(result.unchecked, "image")
    if result.cancelled:
        text = "Cancelled: " + text
    return text + "."


# -- resending what is missing ----------------------------------------------------------------
class _QuietControl(Control):
    """Follows the caller's cancel/pause but reports nothing (the check inside a resend)."""

    def __init__(self, parent: Control) -> None:
        super().__init__(parent.job_id, None)
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return self._parent.cancelled

    def wait_if_paused(self, poll_s: float = 0.2) -> None:
        self._parent.wait_if_paused(poll_s)

    def sleep(self, seconds: float) -> bool:
        return self._parent.sleep(seconds)


def resend_missing(work_dir: str, dest: Destination, settings: Settings, control: Control,
                   result: Optional[VerifyResult] = None, *, source: Optional[str] = None,
                   associations: int = 1) -> JobFinished:
    """Mark the instances ``result`` found missing as failed, then send them again.

    Without ``result`` the destination is checked first (silently). ``source`` is the folder
    to resend from; by default the folder that holds all the missing files. ``associations``
    goes to the migration (parallel associations). The migration's
    JobFinished is returned (``result`` a MigrationResult), or a short one when nothing is
    missing.
    """
    from .migrate import run_migration  # verification alone never needs the sender stack

    work = os.path.abspath(work_dir)
    if result is None:
        result = verify(work, dest, settings, _QuietControl(control)).result
    uids = set(result.missing_sop_uids())
    store = ManifestStore(work)
    try:
        paths = sorted(rec.path for _, rec in store.records(dest.key)
                       if rec.sop_instance_uid in uids and rec.status in DONE_STATES)
        if not paths:
            return JobFinished(control.job_id, "Nothing is missing from the PACS: nothing to "
                               "send again.", {}, result=None)
        folder = _resend_folder(paths, source, work, control)  # may refuse: mark nothing yet
        store.mark_for_resend(dest.key, sorted(uids), "Not found in the PACS at verification "
                              "on %s; to be sent again." % _dt.date.today().isoformat())
    finally:
        store.close()
    control.emit_log("info", "Sending %s again from %s."
                     % (plural(len(paths), "missing file"), folder))
    # only_paths: exactly the missing files, not older failures of other files
    return run_migration(folder, dest, settings, control, work_dir=work, only_paths=paths,
                         associations=associations)


def _resend_folder(paths: List[str], source: Optional[str], work_dir: str,
                   control: Control) -> str:
    # run_migration(retry_failed=True) resends the failed files *under* its source folder.
    if source:
        folder = os.path.abspath(source)
        outside = [p for p in paths if not p.startswith(os.path.join(folder, ""))]
        if outside:
            control.emit_log("warning", "Not inside %s, so not sent again from there: %s "
                             "(for example %s)." % (folder, plural(len(outside), "missing file"),
                                                    outside[0]))
        return folder
    folder = os.path.commonpath([os.path.dirname(p) for p in paths])
    if os.path.commonpath([folder, work_dir]) == folder:
        raise ConfigError("The images to send again are spread over %s, which also holds the "
                          "work folder %s. Give the source folder of the copy explicitly, or "
                          "keep the work folder elsewhere." % (folder, work_dir))
    return folder


# -- the report ---------------------------------------------------------------------------------
def write_report_csv(result: VerifyResult, path: str) -> int:
    """One line per study (UTF-8 with BOM, for Excel); returns the number of studies."""
    tmp = path + ".part"
    try:
        with open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(REPORT_COLUMNS)
            for row in result.studies:
                writer.writerow([row.study_instance_uid, row.patient, row.expected, row.found,
                                 row.verdict, " ".join(row.missing)])
        os.replace(tmp, path)  # never leave a half-written report behind
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return len(result.studies)


# -- command line -------------------------------------------------------------------------------
def register(sub: Any) -> None:
    """Add ``dicom-migrate verify``."""
    p = sub.add_parser(
        "verify", help="check with C-FIND that every copied image is in the destination",
        description="Ask the destination (C-FIND) which images it holds and compare, study by "
                    "study, with what the manifest says was sent. Only reads from the PACS, "
                    "unless --resend-missing is given. Give exactly the host, port and called AE "
                    "title spelling used for the copy: the manifest keeps its records per "
                    "destination as AET@host:port, so 'localhost' and '127.0.0.1' count as "
                    "different destinations. Exit code 0 when every study matches, 1 when "
                    "something is missing or could not be checked, 3 when the destination "
                    "cannot be reached or does not allow queries.")
    common.add_destination_args(p)
    p.add_argument("--work-dir", metavar="DIR",
                   help="work folder of the copy (default: the per-user data folder)")
    p.add_argument("--resend-missing", action="store_true",
                   help="send the missing images again, then check again")
    p.add_argument("--source", metavar="SOURCE_DIR",
                   help="with --resend-missing: the folder to resend from (default: the folder "
                        "holding all the missing files)")
    p.add_argument("--csv", metavar="FILE", help="also write the per-study report to FILE")
    common.add_network_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dest = common.destination_from_args(args)
    settings = common.settings_from_args(args)
    work = args.work_dir or str(dirs.default_work_dir())
    finished = verify(work, dest, settings, Control(0, _StudyTicker()))
    result: VerifyResult = finished.result  # type: ignore[assignment]
    print_result(result, finished.summary)
    if args.resend_missing and result.missing_sop_uids():
        finished, result = _resend_and_recheck(args, work, dest, settings, result)
        if result is None:
            return finished.exit_code
    if args.csv:
        count = write_report_csv(result, args.csv)
        print("Report of %s written to %s" % (plural(count, "study", "studies"), args.csv))
    return finished.exit_code


def _resend_and_recheck(args: argparse.Namespace, work: str, dest: Destination,
                        settings: Settings, result: VerifyResult
                        ) -> Tuple[JobFinished, Optional[VerifyResult]]:
    from .migrate_cli import ProgressPrinter

    print("\nSending %s again..." % plural(len(result.missing_sop_uids()), "missing image"))
    printer = ProgressPrinter(sys.stderr)  # the stream of now, not of import time
    resent = resend_missing(work, dest, settings, Control(0, printer), result,
                            source=args.source)
    printer.finish()
    print(resent.summary)
    if resent.exit_code == common.EXIT_UNREACHABLE:
        return resent, None
    print("\nChecking again...")
    finished = verify(work, dest, settings, Control(0, _StudyTicker()))
    again: VerifyResult = finished.result  # type: ignore[assignment]
    print_result(again, finished.summary)
    return finished, again


class _StudyTicker:
    """Shows "checked n/N studies" on a terminal while the check runs."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, event: Any) -> None:
        if self.tty and isinstance(event, Progress) and event.total:
            self.stream.write("\r\x1b[KChecked %d of %d studies" % (event.done, event.total))
            if event.done == event.total:
                self.stream.write("\r\x1b[K")
            self.stream.flush()


def print_result(result: VerifyResult, summary: str, stream: Optional[TextIO] = None) -> None:
    """The per-study table, the missing UIDs, the notes and the summary line."""
    out = stream or sys.stdout
    if result.studies:
        print("%-24s %-10s %8s %8s  %-8s  %s" % ("Patient", "Study date", "Expected", "Found",
                                                 "Verdict", "Study UID"), file=out)
        for row in result.studies:
            print("%-24s %-10s %8d %8d  %-8s  %s" % (
                _person(row.patient)[:24] or "(no name)",
                _date(result.study_dates.get(row.study_instance_uid, "")), row.expected,
                row.found, row.verdict, row.study_instance_uid), file=out)
    for row in result.studies:
        _print_missing(row, out)
    print("", file=out)
    for note in result.notes:
        print("Note: %s" % note, file=out)
    print(summary, file=out)


def _print_missing(row: StudyVerified, out: TextIO) -> None:
    if not row.missing:
        return
    print("\nMissing from the PACS, study %s (%s): %s"
          % (row.study_instance_uid, _person(row.patient) or "no name",
             plural(len(row.missing), "image")), file=out)
    for uid in row.missing[:SHOW_MISSING]:
        print("  %s" % uid, file=out)
    if len(row.missing) > SHOW_MISSING:
        print("  ... and %d more" % (len(row.missing) - SHOW_MISSING), file=out)


def _date(value: str) -> str:
    """'20240115' -> '2024-01-15'; anything else as it came."""
    if len(value) == 8 and value.isdigit():
        return "%s-%s-%s" % (value[:4], value[4:6], value[6:])
    return value
