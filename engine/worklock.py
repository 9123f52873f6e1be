"""One migration at a time per work folder: two runs sharing a manifest would both send
every file (each sees the other's files as not yet done)."""
from __future__ import annotations

import os
from typing import IO, Optional

from .errors import ConfigError

LOCK_NAME = "migration.lock"


class WorkLock:
    """An OS-level lock on a file in the work folder; released when the process ends, even on
    a crash, so a stale lock never blocks the next run."""

    def __init__(self, work_dir: str) -> None:
        self.path = os.path.join(work_dir, LOCK_NAME)
        self._fh: Optional[IO[str]] = None

    def __enter__(self) -> "WorkLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fh = open(self.path, "a+")
        try:
            _lock(fh)
        except OSError:
            fh.close()
            raise ConfigError("Another copy is already running with the work folder %s. Wait "
                              "for it to finish, or give this one another work folder."
                              % os.path.dirname(self.path)) from None
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                _unlock(fh)
            finally:
                fh.close()


if os.name == "nt":  # pragma: no cover - exercised on Windows builds
    import msvcrt

    def _lock(fh: IO[str]) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(fh: IO[str]) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
