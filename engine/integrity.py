"""Measure, after a run, that the source tree was left exactly as it was found.

Every file we walked has a manifest row with the size and modification time seen then; a second
walk compares. Nothing here writes anywhere near the source.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from .manifest import ManifestStore
from .walk import walk_source


@dataclass(frozen=True)
class IntegrityReport:
    checked: int
    changed: int
    created: int
    missing: int
    complete: bool  # False when the run stopped early and only visited files were checked

    @property
    def ok(self) -> bool:
        return self.changed == 0 and self.created == 0 and self.missing == 0

    def line(self) -> str:
        scope = "all" if self.complete else "the visited"
        text = ("Source check: %s %d files re-read after the run; %d changed size or modification "
                "time, %d new files appeared, %d disappeared."
                % (scope, self.checked, self.changed, self.created, self.missing))
        if self.ok:
            return text + " Originals intact."
        return text + (" Another program changed the source folder during the copy (this tool "
                       "only opens files for reading); re-run to copy the changed files.")


def check_tree(store: ManifestStore, dest_key: str, root: str) -> IntegrityReport:
    checked = changed = created = 0
    for batch in walk_source(root):
        known = store.known_in_dir(dest_key, batch.directory)
        for entry in batch.files:
            checked += 1
            row = known.get(entry.path)
            if row is None:
                created += 1
            elif row.size != entry.size or row.mtime_ns != entry.mtime_ns:
                changed += 1
    return IntegrityReport(checked, changed, created, 0, True)


def check_paths(store: ManifestStore, dest_key: str, paths: Iterable[str]) -> IntegrityReport:
    checked = changed = missing = 0
    for path in paths:
        row = store.known(dest_key, path)
        if row is None:
            continue
        checked += 1
        try:
            st = os.stat(path)
        except OSError:
            missing += 1
            continue
        if st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
            changed += 1
    return IntegrityReport(checked, changed, 0, missing, False)
