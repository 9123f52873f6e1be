"""Per-user folders for the manifest, logs and settings (never inside the source tree)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_DIR_NAME = "DICOMPACSMigrator"

# Tests point this somewhere else (``monkeypatch.setattr(dirs, "override", tmp_path)``).
override = None  # type: Path | None


def data_dir() -> Path:
    """The per-user data folder (created on demand)."""
    if override is not None:
        base = Path(override)
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / APP_DIR_NAME
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = Path(xdg) / APP_DIR_NAME.lower()
    base.mkdir(parents=True, exist_ok=True)
    return base


def default_work_dir(create: bool = True) -> Path:
    """``create=False`` only names it: a migration first checks it is not inside the source."""
    if not create and override is None:
        if sys.platform == "win32":
            base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
            return base / APP_DIR_NAME / "work"
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(xdg) / APP_DIR_NAME.lower() / "work"
    path = data_dir() / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = data_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
