"""The wizard's per-user preferences: advanced settings plus the last values typed.

Stored as JSON in ``engine.dirs.data_dir()``. A missing file gives the defaults quietly; a
corrupt or invalid one gives the defaults plus a notice the app shows once.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from engine import dirs
from engine.config import DEFAULT_CALLING_AET, Settings, check_ae_title
from engine.errors import ConfigError
from engine.pacing import TimeWindow

LOG = logging.getLogger(__name__)
FILE_NAME = "wizard-settings.json"


@dataclass(frozen=True)
class Prefs:
    # Advanced settings (the dialog edits these).
    calling_aet: str = DEFAULT_CALLING_AET
    batch_size: int = 100
    retries: int = 2
    max_pdu: int = 0
    decompress: bool = True
    work_dir: str = ""  # empty = the per-user default work folder
    associations: int = 2
    max_mbps: str = ""  # empty = no cap; text so an empty field round-trips
    window: str = ""  # daily sending window such as 19:00-06:30; empty = any time
    # Remembered from the last session so the user does not retype them.
    host: str = ""
    port: int = 104
    called_aet: str = ""
    source: str = ""

    def to_settings(self) -> Settings:
        return Settings(calling_aet=self.calling_aet.strip(), batch_size=self.batch_size,
                        retries=self.retries, max_pdu=self.max_pdu, decompress=self.decompress)

    def rate_cap(self) -> Optional[float]:
        """The MB/s cap, or None for no cap (call only on checked prefs)."""
        return float(self.max_mbps.replace(",", ".")) if self.max_mbps.strip() else None

    def time_window(self) -> Optional[str]:
        return self.window.strip() or None

    def resolved_work_dir(self) -> str:
        if self.work_dir.strip():
            return self.work_dir.strip()
        return str(dirs.default_work_dir())


def check(prefs: Prefs) -> Dict[str, str]:
    """Field name -> why the value is not acceptable (empty when all is fine)."""
    problems: Dict[str, str] = {}
    reason = check_ae_title(prefs.calling_aet)
    if reason:
        problems["calling_aet"] = reason
    if not 1 <= prefs.batch_size <= 500:
        problems["batch_size"] = "Files per connection must be between 1 and 500."
    if not 0 <= prefs.retries <= 10:
        problems["retries"] = "Retries must be between 0 and 10."
    if prefs.max_pdu != 0 and not 4096 <= prefs.max_pdu <= 2 ** 32 - 1:
        problems["max_pdu"] = "Use 0 (no limit) or a size of at least 4096 bytes."
    if not 1 <= prefs.associations <= 16:
        problems["associations"] = "Parallel connections must be between 1 and 16."
    if prefs.max_mbps.strip():
        try:
            if float(prefs.max_mbps.replace(",", ".")) <= 0:
                raise ValueError
        except ValueError:
            problems["max_mbps"] = "Use a number of MB per second above 0, or leave it empty."
    if prefs.window.strip():
        try:
            TimeWindow(prefs.window)
        except ConfigError as exc:
            problems["window"] = str(exc)
    if prefs.work_dir.strip() and not Path(prefs.work_dir).expanduser().is_absolute():
        problems["work_dir"] = "The work folder must be a full path (for example C:\\Migration)."
    return problems


def settings_path() -> Path:
    return dirs.data_dir() / FILE_NAME


def load(path: Optional[Path] = None) -> Tuple[Prefs, Optional[str]]:
    """Read the preferences; return ``(prefs, notice)`` where notice explains a reset."""
    target = path or settings_path()
    if not target.exists():
        return Prefs(), None
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
        prefs = _from_dict(raw)
    except (OSError, ValueError, TypeError) as exc:
        LOG.warning("Settings file %s unreadable: %s", target, exc)
        return Prefs(), ("Your saved settings could not be read, so the defaults are used. "
                         "(File: %s)" % target)
    problems = check(prefs)
    if problems:
        LOG.warning("Settings file %s has invalid values: %s", target, problems)
        return Prefs(), ("Some saved settings were not valid, so the defaults are used. "
                         "(File: %s)" % target)
    return prefs, None


def save(prefs: Prefs, path: Optional[Path] = None) -> None:
    """Write atomically: a crash mid-write must not leave a half file behind."""
    target = path or settings_path()
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(asdict(prefs), indent=2, sort_keys=True), encoding="utf-8")
    os.replace(str(tmp), str(target))


def _from_dict(raw: Any) -> Prefs:
    if not isinstance(raw, dict):
        raise ValueError("settings file does not hold an object")
    defaults = Prefs()
    values: Dict[str, Any] = {}
    for f in fields(Prefs):
        if f.name not in raw:
            continue  # older files lack newer keys: keep the default
        default = getattr(defaults, f.name)
        value = raw[f.name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError("%s must be true or false" % f.name)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("%s must be a whole number" % f.name)
        elif not isinstance(value, str):
            raise TypeError("%s must be text" % f.name)
        values[f.name] = value
    return replace(defaults, **values)
