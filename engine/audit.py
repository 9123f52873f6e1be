"""The CSV audit: one line per file, for IT and for the hospital's records.

UTF-8 with a byte order mark, so Excel on Windows shows accented and Asian names correctly.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
from pathlib import Path
from typing import Any, Optional

from . import cli_common as common
from . import dirs
from .errors import ConfigError
from .manifest import ManifestStore, manifest_path

CSV_COLUMNS = (
    "sop_instance_uid", "path", "status", "message", "timestamp", "patient_name", "patient_id",
    "study_date", "modality", "study_instance_uid", "series_instance_uid", "sop_class",
    "transfer_syntax", "bytes", "destination",
)


def export_csv(work_dir: str, out_path: str, dest_key: Optional[str] = None) -> int:
    """Write the audit of ``work_dir``'s manifest to ``out_path``; return the number of rows."""
    if not manifest_path(work_dir).exists():
        raise ConfigError("There is no manifest in %s: run a migration with this work folder "
                          "first." % work_dir)
    store = ManifestStore(work_dir)
    rows = 0
    tmp = out_path + ".part"
    try:
        with open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for dest, rec in store.records(dest_key):
                values = dict(vars(rec), destination=dest, sop_class=rec.sop_class)
                writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
                rows += 1
        os.replace(tmp, out_path)  # never leave a half-written audit behind
    finally:
        store.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows


def default_csv_name(work_dir: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path(work_dir) / ("migration-audit-%s.csv" % stamp))


def register(sub: Any) -> None:
    p = sub.add_parser("export-csv", help="write the CSV audit of a work folder's manifest")
    p.add_argument("--work-dir", metavar="DIR",
                   help="work folder of the migration (default: the per-user data folder)")
    p.add_argument("--out", metavar="FILE", help="CSV file to write (default: in the work folder)")
    p.add_argument("--destination", metavar="AET@HOST:PORT",
                   help="only this destination (as shown in the CSV's destination column)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    work = args.work_dir or str(dirs.default_work_dir())
    out = args.out or default_csv_name(work)
    rows = export_csv(work, out, args.destination)
    print("Wrote %d rows to %s" % (rows, out))
    return common.EXIT_OK
