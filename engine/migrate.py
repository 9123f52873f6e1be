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
from .errors import ConfigError
from .events import FileDone, JobFinished, Outcome, Progress
from .headers import HeaderProblem, InstanceHeader, read_header
from .integrity import IntegrityReport, check_paths, check_tree
from .jobs import Control, start_thread
from .manifest import DONE_STATES, FileRecord, ManifestStore
from .progress import RateMeter
from .pacing import Clock, Pacer
from .pool import SenderPool
from .worklock import WorkLock
from .sender import SendResult
from .walk import BAD_NAME_MARK, FileEntry, iter_files, walk_source

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
    senders: str = ""  # "processes" (one child per association) or "threads" (the fallback)


@dataclass
class _Tally:
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    visited: List[str] = field(default_factory=list)


def run_migration(source: str, dest: Destination, settings: Settings, control: Control, *,
                  work_dir: Optional[str] = None, retry_failed: bool = False,
                  only_paths: Optional[Collection[str]] = None,
                  count_first: bool = True, associations: int = 1,
                  max_mbps: Optional[float] = None, window: Optional[str] = None,
                  clock: Optional[Clock] = None) -> JobFinished:
    """Copy ``source`` to ``dest``; return the terminal event (its ``result`` is a
    MigrationResult). Emits Progress, FileDone and LogLine through ``control``.

    ``associations`` senders work in parallel; ``max_mbps`` caps the send rate and ``window``
    ("19:00-06:30") limits sending to a daily time window."""
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise ConfigError("The source folder %s does not exist or is not a folder." % source)
    work = os.path.abspath(work_dir or str(dirs.default_work_dir(create=False)))
    # realpath: a symbolic link must not smuggle the work folder into the source tree
    real_source = os.path.realpath(source)
    if os.path.commonpath([os.path.realpath(work), real_source]) == real_source:
        raise ConfigError("The work folder must not be inside the source folder: the source is "
                          "never written to. Choose another work folder.")
    if not 1 <= associations <= 16:
        raise ConfigError("The number of parallel associations must be between 1 and 16.")
    compat.configure_pynetdicom()
    pacer = Pacer(control, associations, max_mbps, window, clock)
    with WorkLock(work):
        return _Migration(source, dest, settings, control, work, retry_failed, only_paths,
                          count_first, associations, pacer).run()


class _Migration:
    def __init__(self, source: str, dest: Destination, settings: Settings, control: Control,
                 work_dir: str, retry_failed: bool, only_paths: Optional[Collection[str]],
                 count_first: bool, associations: int, pacer: Pacer) -> None:
        self.source, self.dest, self.settings, self.control = source, dest, settings, control
        self.dest_key = dest.key  # once: it is needed twice per file
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
        self.associations = associations
        self.pacer = pacer
        self._pool: Optional[SenderPool] = None

    # -- the run ------------------------------------------------------------------------
    def run(self) -> JobFinished:
        mode = "retry-failed" if self.retry_failed else ("selection" if self.only_paths else "all")
        self.run_id = self.store.start_run(self.source, self.dest_key, mode)
        started = time.monotonic()
        pool = SenderPool(self.dest, self.settings, self.control, self.associations, self.pacer)
        self._pool = pool
        stopped = ""
        try:
            self._pipeline(pool)
        finally:
            pool.finish(self._record_sent)
            self.store.commit()
        if pool.unreachable:
            stopped = pool.unreachable
        elif self.control.cancelled:
            stopped = "cancelled"
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
            associations=pool.associations_opened, elapsed_s=time.monotonic() - started,
            bytes_sent=self.meter.bytes, senders=pool.mode)
        self.store.close()
        return JobFinished(self.control.job_id, _summary(result), counts,
                           cancelled=stopped == "cancelled", exit_code=_exit_code(result),
                           result=result)

    def _pipeline(self, pool: SenderPool) -> None:
        batcher = _StudyBatcher(self.settings.batch_size)
        for entry in self._candidates():
            pool.drain(self._record_sent)
            if self.control.cancelled or pool.halted:
                return
            self.control.wait_if_paused()
            header = read_header(entry.path, entry.size, entry.mtime_ns)
            if isinstance(header, HeaderProblem):
                self._record_problem(header)
                continue
            for batch in batcher.add(header):
                pool.submit(batch, self._record_sent)
        for batch in batcher.flush_all():
            pool.submit(batch, self._record_sent)

    # -- what to send ---------------------------------------------------------------------
    def _candidates(self) -> Iterator[FileEntry]:
        if self.retry_failed:
            yield from self._from_paths([p for p in self.store.failed_paths(
                self.dest_key, self.source) if not p.endswith(BAD_NAME_MARK)])
        elif self.only_paths is not None:
            yield from self._from_paths(sorted(self.only_paths))
        else:
            if self.count_first:
                start_thread(self._count_files, "count-source")
            for batch in walk_source(self.source):
                self.current = batch.directory
                for path, reason in batch.problems:
                    self._record_problem(HeaderProblem(path, 0, 0, Outcome.FAILED, reason))
                for path, reason in batch.skipped:
                    self._record_problem(HeaderProblem(path, 0, 0, Outcome.SKIPPED, reason))
                known = self.store.known_in_dir(self.dest_key, batch.directory)
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
            notes = [h.warning] if h.warning else []
            if other:
                notes.append("Another file with the same SOP Instance UID was already sent "
                             "(%s); the destination keeps only one of them." % other)
            if notes:
                outcome, reason = Outcome.WARNING, " ".join(notes + [reason]).strip()
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
        return self.store.other_path_with_uid(self.dest_key, h.sop_instance_uid, h.path)

    def _finish(self, rec: FileRecord, outcome: Outcome, reason: str, patient: str,
                status: Optional[int]) -> None:
        # Results that arrived together are committed together: a result still waiting in
        # the queue is recorded (and the group committed) within moments, and a kill -9 loses
        # no more than the results not yet taken off the queue — as before, without a WAL
        # write per file while the destination answers faster than one commit takes.
        self.store.record(self.dest_key, rec, self.run_id, commit=False, count_attempt=True)
        if self._pool is None or not self._pool.results_waiting():
            self.store.commit()
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
            self.meter.eta(remaining), self.pacer.note or self.current,
            tuple(sorted(self.tally.counts.items()))))

    def _integrity(self, stopped: str) -> Optional[IntegrityReport]:
        if self.retry_failed or self.only_paths is not None:
            return check_paths(self.store, self.dest_key, self.tally.visited)
        if stopped:
            return None
        return check_tree(self.store, self.dest_key, self.source)


class _StudyBatcher:
    """Groups headers into batches of one study where possible, so a study travels on one
    association; no header waits more than BATCH_MAX_WAIT_S and memory stays bounded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending: Dict[str, List[InstanceHeader]] = {}
        self.count = 0
        self.oldest = 0.0

    def add(self, header: InstanceHeader) -> List[List[InstanceHeader]]:
        if not self.count:
            self.oldest = time.monotonic()
        self.pending.setdefault(header.study_uid, []).append(header)
        self.count += 1
        ready = []
        if len(self.pending[header.study_uid]) >= self.size:
            ready.append(self._take(header.study_uid))
        if self.count >= 2 * self.size or (self.count and
                                           time.monotonic() - self.oldest >= BATCH_MAX_WAIT_S):
            ready.extend(self.flush_all())
        return ready

    def _take(self, study: str) -> List[InstanceHeader]:
        batch = self.pending.pop(study)
        self.count -= len(batch)
        return batch

    def flush_all(self) -> List[List[InstanceHeader]]:
        """Everything pending, small studies merged into shared batches."""
        batches: List[List[InstanceHeader]] = []
        current: List[InstanceHeader] = []
        for study in list(self.pending):
            current.extend(self._take(study))
            while len(current) >= self.size:
                batches.append(current[:self.size])
                current = current[self.size:]
        if current:
            batches.append(current)
        self.count = 0
        return batches


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
