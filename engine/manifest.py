"""The crash-safe record of every file: SQLite in the work directory, one row per (destination,
path), committed after each file so a killed run loses at most the file in flight.

One connection per thread; only the migration's writer thread writes.
"""
from __future__ import annotations

import datetime as _dt
import json
import operator
import os
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import ManifestError
from .events import Outcome

MANIFEST_NAME = "manifest.sqlite"
SCHEMA_VERSION = "1"
DONE_STATES = (Outcome.SENT.value, Outcome.WARNING.value)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    dest TEXT NOT NULL, path TEXT NOT NULL, dir TEXT NOT NULL,
    size INTEGER, mtime_ns INTEGER, status TEXT NOT NULL, message TEXT, status_code INTEGER,
    sop_instance_uid TEXT, sop_class TEXT, transfer_syntax TEXT, sent_syntax TEXT,
    patient_name TEXT, patient_id TEXT, study_date TEXT, modality TEXT,
    study_instance_uid TEXT, series_instance_uid TEXT, bytes INTEGER,
    timestamp TEXT, attempts INTEGER NOT NULL DEFAULT 0, run_id INTEGER,
    PRIMARY KEY (dest, path)
);
CREATE INDEX IF NOT EXISTS files_dir ON files (dest, dir);
CREATE INDEX IF NOT EXISTS files_status ON files (dest, status);
CREATE INDEX IF NOT EXISTS files_sop ON files (dest, sop_instance_uid);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT, dest TEXT, mode TEXT,
    started TEXT, finished TEXT, state TEXT, counts TEXT
);
"""


@dataclass
class FileRecord:
    """One manifest row (also one CSV line)."""

    path: str
    status: str
    message: str = ""
    size: int = 0
    mtime_ns: int = 0
    status_code: Optional[int] = None
    sop_instance_uid: str = ""
    sop_class: str = ""
    transfer_syntax: str = ""
    sent_syntax: str = ""
    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    modality: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    bytes: int = 0
    timestamp: str = ""
    attempts: int = 0


_RECORD_COLUMNS = [f.name for f in fields(FileRecord)]
_record_values = operator.attrgetter(*_RECORD_COLUMNS)
_INSERT_SQL = "INSERT OR REPLACE INTO files (%s) VALUES (%s)" % (
    ", ".join(["dest", "dir", "run_id"] + _RECORD_COLUMNS),
    ", ".join("?" * (len(_RECORD_COLUMNS) + 3)))
# The same, with ``attempts`` counted on from the row it replaces (one statement, not two).
_RECOUNT_SQL = _INSERT_SQL.replace(
    ", ".join("?" * (len(_RECORD_COLUMNS) + 3)),
    ", ".join("?" * (len(_RECORD_COLUMNS) + 2))
    + ", COALESCE((SELECT attempts FROM files WHERE dest=? AND path=?), 0) + ?")
_BEFORE_ATTEMPTS = operator.attrgetter(*_RECORD_COLUMNS[:_RECORD_COLUMNS.index("attempts")])


@dataclass(frozen=True)
class Known:
    """What the manifest remembers of a path, enough to skip it without opening the file."""

    size: int
    mtime_ns: int
    status: str


_stamp = [0, ""]  # (whole second, its text): formatting once per second, not once per file


def now_iso() -> str:
    second = int(time.time())
    if second != _stamp[0]:
        _stamp[1] = _dt.datetime.fromtimestamp(second, _dt.timezone.utc).astimezone().isoformat(
            timespec="seconds")
        _stamp[0] = second
    return str(_stamp[1])


def manifest_path(work_dir: str) -> Path:
    return Path(work_dir) / MANIFEST_NAME


class ManifestStore:
    """Open (or create) the manifest of a work directory."""

    def __init__(self, work_dir: str) -> None:
        self.path = manifest_path(work_dir)
        try:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a killed process (not a power cut) without an fsync per file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise ManifestError("The manifest %s cannot be opened (%s). Choose another work "
                                "folder or move this file away." % (self.path, exc)) from exc

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self._db.commit()
        elif row[0] != SCHEMA_VERSION:
            raise ManifestError("The manifest %s was written by another version of this tool."
                                % self.path)

    def close(self) -> None:
        self._db.close()

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, source: str, dest: str, mode: str) -> int:
        # A run still marked running belongs to a process that died: say so.
        self._db.execute("UPDATE runs SET state='interrupted' WHERE state='running' AND source=? "
                         "AND dest=?", (source, dest))
        cur = self._db.execute("INSERT INTO runs (source, dest, mode, started, state) "
                               "VALUES (?, ?, ?, ?, 'running')", (source, dest, mode, now_iso()))
        self._db.commit()
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, state: str, counts: Dict[str, int]) -> None:
        self._db.execute("UPDATE runs SET finished=?, state=?, counts=? WHERE id=?",
                         (now_iso(), state, json.dumps(counts), run_id))
        self._db.commit()

    def last_run(self, source: str, dest: str) -> Optional[Dict[str, object]]:
        row = self._db.execute("SELECT id, mode, started, finished, state, counts FROM runs "
                               "WHERE source=? AND dest=? ORDER BY id DESC LIMIT 1",
                               (source, dest)).fetchone()
        if row is None:
            return None
        keys = ("id", "mode", "started", "finished", "state", "counts")
        result = dict(zip(keys, row))
        result["counts"] = json.loads(row[5]) if row[5] else {}
        return result

    # -- files --------------------------------------------------------------------------
    def known_in_dir(self, dest: str, directory: str) -> Dict[str, Known]:
        rows = self._db.execute("SELECT path, size, mtime_ns, status FROM files "
                                "WHERE dest=? AND dir=?", (dest, directory))
        return {p: Known(s or 0, m or 0, st) for p, s, m, st in rows}

    def known(self, dest: str, path: str) -> Optional[Known]:
        row = self._db.execute("SELECT size, mtime_ns, status FROM files WHERE dest=? AND path=?",
                               (dest, path)).fetchone()
        return Known(row[0] or 0, row[1] or 0, row[2]) if row else None

    def record(self, dest: str, rec: FileRecord, run_id: int = 0, commit: bool = True,
               count_attempt: bool = False) -> None:
        """Insert or replace the row for ``rec.path``; commit at once (crash safety) unless the
        caller commits a group of rows itself (see commit()). ``count_attempt``: this row is
        one more attempt at the file (the earlier rows' count plus one); otherwise an
        ``attempts`` of 0 keeps the earlier count."""
        if not rec.timestamp:
            rec.timestamp = now_iso()
        if count_attempt or rec.attempts == 0:
            self._db.execute(_RECOUNT_SQL, (dest, os.path.dirname(rec.path), run_id)
                             + _BEFORE_ATTEMPTS(rec)
                             + (dest, rec.path, 1 if count_attempt else 0))
        else:
            self._db.execute(_INSERT_SQL, (dest, os.path.dirname(rec.path), run_id)
                             + _record_values(rec))
        if commit:
            self._db.commit()

    def commit(self) -> None:
        """Make the rows recorded with ``commit=False`` durable (one WAL write for all)."""
        self._db.commit()

    def other_path_with_uid(self, dest: str, sop_uid: str, path: str) -> str:
        """Another file already sent to ``dest`` with this SOP Instance UID, or ''."""
        row = self._db.execute("SELECT path FROM files WHERE dest=? AND sop_instance_uid=? AND "
                               "path<>? AND status IN (?, ?) LIMIT 1",
                               (dest, sop_uid, path) + DONE_STATES).fetchone()
        return row[0] if row else ""

    def mark_for_resend(self, dest: str, sop_uids: Sequence[str], reason: str) -> int:
        """Turn instances the destination does not hold into failures, so a retry resends them."""
        count = 0
        for uid in sop_uids:
            cur = self._db.execute("UPDATE files SET status=?, message=?, timestamp=? WHERE dest=? "
                                   "AND sop_instance_uid=? AND status IN (?, ?)",
                                   (Outcome.FAILED.value, reason, now_iso(), dest, uid)
                                   + DONE_STATES)
            count += cur.rowcount
        self._db.commit()
        return count

    def failed_paths(self, dest: str, under: Optional[str] = None) -> List[str]:
        rows = self._db.execute("SELECT path FROM files WHERE dest=? AND status=? ORDER BY path",
                                (dest, Outcome.FAILED.value)).fetchall()
        paths = [r[0] for r in rows]
        if under:
            prefix = os.path.join(os.path.abspath(under), "")
            paths = [p for p in paths if p.startswith(prefix)]
        return paths

    def records(self, dest: Optional[str] = None) -> Iterator[Tuple[str, FileRecord]]:
        sql = "SELECT dest, %s FROM files" % ", ".join(_RECORD_COLUMNS)
        args: Tuple[str, ...] = ()
        if dest:
            sql += " WHERE dest=?"
            args = (dest,)
        for row in self._db.execute(sql + " ORDER BY dest, path", args):
            yield row[0], FileRecord(*row[1:])

    def counts(self, dest: str) -> Dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM files WHERE dest=? GROUP BY status",
                                (dest,))
        return {status: n for status, n in rows}

    def sent_by_study(self, dest: str) -> Dict[str, List[Tuple[str, str, str]]]:
        """Study UID -> [(SOP Instance UID, series UID, patient name)] of what we sent."""
        result: Dict[str, List[Tuple[str, str, str]]] = {}
        rows = self._db.execute("SELECT study_instance_uid, sop_instance_uid, series_instance_uid, "
                                "patient_name FROM files WHERE dest=? AND status IN (?, ?)",
                                (dest,) + DONE_STATES)
        for study, sop, series, name in rows:
            result.setdefault(study or "", []).append((sop or "", series or "", name or ""))
        return result

    def destinations(self) -> List[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT dest FROM files ORDER BY dest")]


def unfinished_run(work_dir: str, source: str, dest_key: str) -> Optional[Dict[str, object]]:
    """The last run of ``source`` to ``dest_key`` if it did not finish (crashed, cancelled,
    stopped), so the wizard can offer to resume it; None otherwise."""
    if not manifest_path(work_dir).exists():
        return None
    store = ManifestStore(work_dir)
    try:
        last = store.last_run(os.path.abspath(source), dest_key)
    finally:
        store.close()
    if last is None or last.get("state") == "finished":
        return None
    return last

