"""The streaming migration: walk, read headers, send, record — as it goes, no pre-scan.

Memory stays flat: only one directory listing and one batch of headers are held at a time.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Collection, Dict, Iterator, List, Optional, Tuple

from . import compat, dirs
from .config import Destination, Settings
from .errors import ConfigError, DestinationUnreachable
from .events import FileDone, JobFinished, Outcome, Progress
from .headers import HeaderProblem, InstanceHeader, read_header
from .integrity import IntegrityReport, check_paths, check_tree
from .jobs import Control, start_thread
from .manifest import DONE_STATES, FileRecord, ManifestStore
from .progress import RateMeter
from .sender import SendResult, Sender
from .walk import FileEntry, iter_files, walk_source

BATCH_MAX_WAIT_S = 1.0  # the first file of a batch never waits longer than this for the rest
PROGRESS_EVERY_S = 0.25


@dataclass
class MigrationResult:
    counts: Dict[str, int]
    failure_summary: List[Tuple[str, int]]
    integrity: Optional[IntegrityReport]
    integrity_line: str
    manifest_path: str
    run_id: int
    stopped: str = ""  # "", "cancelled" or the reason the destination could not be reached
    associations: int = 0
    elapsed_s: float = 0.0
    bytes_sent: int = 0


@dataclass
class _Tally:
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    visited: List[str] = field(default_factory=list)


def run_migration(source: str, dest: Destination, settings: Settings, control: Control, *,
                  work_dir: Optional[str] = None, retry_failed: bool = False,
                  only_paths: Optional[Collection[str]] = None,
                  count_first: bool = True) -> JobFinished:
    """Copy ``source`` to ``dest``; return the terminal event (its ``result`` is a
    MigrationResult). Emits Progress, FileDone and LogLine through ``control``."""
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise ConfigError("The source folder %s does not exist or is not a folder." % source)
    work = os.path.abspath(work_dir or str(dirs.default_work_dir()))
    if os.path.commonpath([work, source]) == source:
        raise ConfigError("The work folder must not be inside the source folder: the source is "
                          "never written to. Choose another work folder.")
    compat.configure_pynetdicom()
    return _Migration(source, dest, settings, control, work, retry_failed, only_paths,
                      count_first).run()


class _Migration:
    def __init__(self, source: str, dest: Destination, settings: Settings, control: Control,
                 work_dir: str, retry_failed: bool, only_paths: Optional[Collection[str]],
                 count_first: bool) -> None:
        self.source, self.dest, self.settings, self.control = source, dest, settings, control
        self.store = ManifestStore(work_dir)
        self.retry_failed = retry_failed
        self.only_paths = only_paths
        self.count_first = count_first and not retry_failed and only_paths is None
        self.tally = _Tally()
        self.meter = RateMeter()
        self.total: Optional[int] = None
        self.done = 0
        self.current = ""
        self._last_progress = 0.0
        self.run_id = 0

    # -- the run ------------------------------------------------------------------------
    def run(self) -> JobFinished:
        mode = "retry-failed" if self.retry_failed else ("selection" if self.only_paths else "all")
        self.run_id = self.store.start_run(self.source, self.dest.key, mode)
        started = time.monotonic()
        sender = Sender(self.dest, self.settings, self.control)
        stopped = ""
        try:
            self._pipeline(sender)
            if self.control.cancelled:
                stopped = "cancelled"
        except DestinationUnreachable as exc:
            stopped = str(exc)
        finally:
            sender.close()
        self._emit_progress(force=True)
        integrity = self._integrity(stopped)
        state = "finished" if not stopped else ("cancelled" if stopped == "cancelled"
                                                else "unreachable")
        counts = dict(self.tally.counts)
        self.store.finish_run(self.run_id, state, counts)
        result = MigrationResult(
            counts=counts, failure_summary=self.tally.reasons.most_common(),
            integrity=integrity, integrity_line=integrity.line() if integrity else "",
            manifest_path=str(self.store.path), run_id=self.run_id, stopped=stopped,
            associations=sender.associations_opened, elapsed_s=time.monotonic() - started,
            bytes_sent=self.meter.bytes)
        self.store.close()
        return JobFinished(self.control.job_id, _summary(result), counts,
                           cancelled=stopped == "cancelled", exit_code=_exit_code(result),
                           result=result)

    def _pipeline(self, sender: Sender) -> None:
        batch: List[InstanceHeader] = []
        batch_started = 0.0
        for entry in self._candidates():
            if self.control.cancelled:
                return
            self.control.wait_if_paused()
            header = read_header(entry.path, entry.size, entry.mtime_ns)
            if isinstance(header, HeaderProblem):
                self._record_problem(header)
                continue
            if not batch:
                batch_started = time.monotonic()
            batch.append(header)
            if (len(batch) >= self.settings.batch_size
                    or time.monotonic() - batch_started >= BATCH_MAX_WAIT_S):
                self._send(sender, batch)
                batch = []
        if batch and not self.control.cancelled:
            self._send(sender, batch)

    def _send(self, sender: Sender, batch: List[InstanceHeader]) -> None:
        for result in sender.send_batch(batch):
            self._record_sent(result)

    # -- what to send ---------------------------------------------------------------------
    def _candidates(self) -> Iterator[FileEntry]:
        if self.retry_failed:
            yield from self._from_paths(self.store.failed_paths(self.dest.key, self.source))
        elif self.only_paths is not None:
            yield from self._from_paths(sorted(self.only_paths))
        else:
            if self.count_first:
                start_thread(self._count_files, "count-source")
            for batch in walk_source(self.source):
                self.current = batch.directory
                for path, reason in batch.problems:
                    self._record_problem(HeaderProblem(path, 0, 0, Outcome.FAILED, reason))
                known = self.store.known_in_dir(self.dest.key, batch.directory)
                for entry in batch.files:
                    row = known.get(entry.path)
                    if (row and row.size == entry.size and row.mtime_ns == entry.mtime_ns
                            and row.status in DONE_STATES + (Outcome.SKIPPED.value,)):
                        self._already_done(row.status)
                        continue
                    yield entry

    def _from_paths(self, paths: List[str]) -> Iterator[FileEntry]:
        self.total = len(paths)
        for path in paths:
            self.current = os.path.dirname(path)
            try:
                st = os.stat(path)
            except OSError as exc:
                self._record_problem(HeaderProblem(path, 0, 0, Outcome.FAILED,
                                                   "The file can no longer be found or read (%s)."
                                                   % (exc.strerror or exc)))
                continue
            yield FileEntry(path, st.st_size, st.st_mtime_ns)

    def _count_files(self) -> None:
        """Runs in its own thread: count the tree so progress can show a total and an ETA."""
        count = 0
        for _ in iter_files(self.source):
            if self.control.cancelled:
                return
            count += 1
        self.total = count

    # -- recording ------------------------------------------------------------------------
    def _already_done(self, status: str) -> None:
        self.tally.counts["already_done"] += 1
        self.tally.counts[status] += 1
        self.done += 1
        self._emit_progress()

    def _record_problem(self, problem: HeaderProblem) -> None:
        rec = FileRecord(path=problem.path, status=problem.outcome.value, message=problem.reason,
                         size=problem.size, mtime_ns=problem.mtime_ns,
                         sop_instance_uid=problem.sop_instance_uid)
        self._finish(rec, problem.outcome, problem.reason, "", None)

    def _record_sent(self, result: SendResult) -> None:
        h = result.header
        outcome, reason = result.outcome, result.reason
        if outcome is Outcome.SENT:
            other = self._duplicate_of(h)
            if other:
                outcome = Outcome.WARNING
                reason = ("Another file with the same SOP Instance UID was already sent (%s); "
                          "the destination keeps only one of them." % other)
        rec = FileRecord(
            path=h.path, status=outcome.value, message=reason, size=h.size, mtime_ns=h.mtime_ns,
            status_code=result.status, sop_instance_uid=h.sop_instance_uid,
            sop_class=h.sop_class_uid, transfer_syntax=h.transfer_syntax,
            sent_syntax=result.sent_syntax, patient_name=h.patient_name, patient_id=h.patient_id,
            study_date=h.study_date, modality=h.modality, study_instance_uid=h.study_uid,
            series_instance_uid=h.series_uid, bytes=h.size)
        if outcome in (Outcome.SENT, Outcome.WARNING):
            self.meter.add(1, h.size)
        self._finish(rec, outcome, reason, h.patient_name, result.status)

    def _duplicate_of(self, h: InstanceHeader) -> str:
        return self.store.other_path_with_uid(self.dest.key, h.sop_instance_uid, h.path)

    def _finish(self, rec: FileRecord, outcome: Outcome, reason: str, patient: str,
                status: Optional[int]) -> None:
        rec.attempts += 1
        self.store.record(self.dest.key, rec, self.run_id)
        self.tally.counts[outcome.value] += 1
        if outcome in (Outcome.FAILED, Outcome.SKIPPED):
            self.tally.reasons[reason] += 1
        if self.retry_failed or self.only_paths is not None:
            self.tally.visited.append(rec.path)
        self.done += 1
        self.control.emit(FileDone(self.control.job_id, rec.path, outcome, reason,
                                   rec.sop_instance_uid, patient, status))
        self._emit_progress()

    def _emit_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        fps, mbps = self.meter.rates()
        remaining = None if self.total is None else self.total - self.done
        self.control.emit(Progress(
            self.control.job_id, self.done, self.total, self.meter.bytes, fps, mbps,
            self.meter.eta(remaining), self.current, tuple(sorted(self.tally.counts.items()))))

    def _integrity(self, stopped: str) -> Optional[IntegrityReport]:
        if self.retry_failed or self.only_paths is not None:
            return check_paths(self.store, self.dest.key, self.tally.visited)
        if stopped:
            return None
        return check_tree(self.store, self.dest.key, self.source)


def _exit_code(result: MigrationResult) -> int:
    if result.stopped and result.stopped != "cancelled":
        return 3
    bad = result.counts.get(Outcome.FAILED.value, 0) + result.counts.get(Outcome.SKIPPED.value, 0)
    return 1 if bad or result.stopped else 0


def _summary(result: MigrationResult) -> str:
    c = result.counts
    text = ("%d sent, %d sent with warning, %d skipped, %d failed"
            % (c.get("sent", 0), c.get("sent_with_warning", 0), c.get("skipped", 0),
               c.get("failed", 0)))
    if c.get("already_done"):
        text += " (%d of them already done in an earlier run)" % c["already_done"]
    if result.stopped == "cancelled":
        text = "Cancelled: " + text
    elif result.stopped:
        text = "Stopped: %s " % result.stopped + text
    return text + "."
