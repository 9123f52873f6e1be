"""Small shared helpers for engine tests: run a migration and collect its events."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from engine.config import Destination, Settings
from engine.events import EngineEvent, FileDone, JobFinished
from engine.jobs import run_job
from engine.manifest import FileRecord, ManifestStore
from engine.migrate import MigrationResult, run_migration


def migrate(source: Any, port: int, aet: str, work_dir: Any, host: str = "127.0.0.1",
            **kwargs: Any) -> Tuple[MigrationResult, List[EngineEvent], JobFinished]:
    settings_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in Settings.__dataclass_fields__}
    settings_kw.setdefault("backoff_base_s", 0.05)
    settings = Settings(**settings_kw)
    events: List[EngineEvent] = []
    terminal = run_job("migrate", lambda c: run_migration(
        str(source), Destination(host, port, aet), settings, c, work_dir=str(work_dir),
        **kwargs), events.append)
    assert isinstance(terminal, JobFinished), terminal
    return terminal.result, events, terminal


def records(work_dir: Any, dest_key: Optional[str] = None) -> List[FileRecord]:
    store = ManifestStore(str(work_dir))
    try:
        return [rec for _, rec in store.records(dest_key)]
    finally:
        store.close()


def by_name(work_dir: Any) -> dict:
    import os
    return {os.path.basename(r.path): r for r in records(work_dir)}


def file_events(events: List[EngineEvent]) -> List[FileDone]:
    return [e for e in events if isinstance(e, FileDone)]
