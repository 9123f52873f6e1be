"""A results table that stays fast with 100,000 files: only the newest rows and the failures
are kept on screen (everything is in the manifest and the CSV audit anyway).

Rows are buffered by ``add()`` and inserted in one go by ``flush()``, which the event pump calls
after each batch, so Tk sees a few dozen inserts per tick at most.
"""
from __future__ import annotations

import collections
import tkinter as tk
from typing import Deque, List, Sequence, Tuple

from .widgets import ScrolledTree

KEEP_RECENT = 1000
KEEP_FAILURES = 5000

Row = Tuple[Tuple[object, ...], str, bool]  # values, tag, is_failure


class CappedTable(ScrolledTree):
    def __init__(self, master: tk.Misc, columns: Sequence[Tuple[str, str, float]],
                 keep_recent: int = KEEP_RECENT, keep_failures: int = KEEP_FAILURES,
                 height: int = 8) -> None:
        super().__init__(master, columns, height=height, selectmode="browse")
        self.keep_recent = keep_recent
        self.keep_failures = keep_failures
        self._pending: List[Row] = []
        self._recent: Deque[str] = collections.deque()
        self._failures: List[str] = []
        self._pending_failures = 0
        self.total = 0            # rows ever added
        self.failures_total = 0   # failure rows ever added (shown or not)

    def add(self, values: Tuple[object, ...], tag: str, failure: bool) -> None:
        self.total += 1
        if failure:
            self.failures_total += 1
            if len(self._failures) + self._pending_failures >= self.keep_failures:
                return  # over the cap: the CSV audit still lists it
            self._pending_failures += 1
        self._pending.append((values, tag, failure))

    def flush(self) -> None:
        if not self._pending:
            return
        at_bottom = self.tree.yview()[1] >= 0.999
        normal = sum(1 for _, _, failure in self._pending if not failure)
        skip = max(0, normal - self.keep_recent)  # rows that would be evicted at once
        last = ""
        for values, tag, failure in self._pending:
            if not failure and skip:
                skip -= 1
                continue
            last = self.tree.insert("", "end", values=values, tags=(tag,))
            (self._failures if failure else self._recent).append(last)
        self._pending.clear()
        self._pending_failures = 0
        extra = len(self._recent) - self.keep_recent
        if extra > 0:
            self.tree.delete(*[self._recent.popleft() for _ in range(extra)])
        if at_bottom and last:
            self.tree.see(last)  # follow new rows unless the user scrolled up to read

    def reset(self) -> None:
        self._pending.clear()
        self._pending_failures = 0
        self._recent.clear()
        self._failures.clear()
        self.total = 0
        self.failures_total = 0
        self.clear()

    @property
    def shown(self) -> int:
        return len(self._recent) + len(self._failures)

    def note(self) -> str:
        """A sentence saying what is and is not on screen."""
        if self.total <= self.shown:
            return ""
        return ("Showing the newest {:,} of {:,} files{}. Every file is listed in the CSV audit."
                .format(len(self._recent), self.total,
                        " and the first {:,} problems".format(len(self._failures))
                        if self._failures else ""))
