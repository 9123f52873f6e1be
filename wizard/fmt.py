"""Numbers and durations written the way clinic staff read them."""
from __future__ import annotations

from typing import Optional


def count(n: int, singular: str, plural: Optional[str] = None) -> str:
    """``count(1, "file") == "1 file"``, ``count(1200, "file") == "1,200 files"``."""
    word = singular if n == 1 else (plural or singular + "s")
    return "{:,} {}".format(n, word)


def size(n_bytes: float) -> str:
    value = float(n_bytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return ("%d %s" % (value, unit)) if unit == "bytes" else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%.1f TB" % value  # pragma: no cover - loop always returns


def duration(seconds: Optional[float]) -> str:
    """"about 3 min", "about 2 h 5 min", or "" when unknown."""
    if seconds is None or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return "less than a minute" if s >= 10 else "a few seconds"
    minutes = s // 60
    if minutes < 60:
        return "about %d min" % minutes
    return "about %d h %d min" % (minutes // 60, minutes % 60)


def dicom_date(value: str) -> str:
    """``20240131`` -> ``2024-01-31``; anything else unchanged."""
    v = value.strip()
    if len(v) == 8 and v.isdigit():
        return "%s-%s-%s" % (v[:4], v[4:6], v[6:])
    return v


def parse_date(text: str) -> Optional[str]:
    """Accept ``2024-01-31``, ``20240131`` or ``31.01.2024``; return ``YYYYMMDD`` or None.

    Raises ValueError with a sentence when the text is not empty and not a date.
    """
    import datetime as dt

    t = text.strip()
    if not t:
        return None
    for pattern in ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(t, pattern).strftime("%Y%m%d")
        except ValueError:
            continue
    raise ValueError("'%s' is not a date. Write it like 2024-01-31." % t)
