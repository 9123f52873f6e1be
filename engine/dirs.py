"""Per-user folders for the manifest, logs and settings (never inside the source tree)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_DIR_NAME = "DICOMPACSMigrator"

# Tests point this somewhere else (``monkeypatch.setattr(dirs, "override", tmp_path)``).
override = None  # type: Path | None


def _data_path() -> Path:
    if override is not None:
        return Path(override)
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(local) / APP_DIR_NAME
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / APP_DIR_NAME.lower()


def data_dir() -> Path:
    """The per-user data folder (created on demand)."""
    base = _data_path()
    base.mkdir(parents=True, exist_ok=True)
    return base


def default_work_dir(create: bool = True) -> Path:
    """``create=False`` only names it: a migration first checks it is not inside the source."""
    path = _data_path() / "work"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = data_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
