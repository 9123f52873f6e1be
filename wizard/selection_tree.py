"""Patient → study → series tree with tick boxes and filters, over an engine ScanResult.

What gets copied is every ticked series that the current filters show. Ticks live per series,
so changing a filter never loses them.
"""
from __future__ import annotations

import tkinter as tk
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from engine.scan import filter_patients

from . import fmt
from .widgets import ScrolledTree

CHECKED, UNCHECKED, PARTIAL = "☑", "☐", "◪"
COLUMNS = (("files", "Files", 4), ("size", "Size", 5.5), ("date", "Date", 6.5),
           ("modality", "Type", 4))


class Filters:
    """Filter values: name or ID text, modality, study date range (``YYYYMMDD`` or "")."""

    def __init__(self, text: str = "", modality: str = "", date_from: str = "",
                 date_to: str = "") -> None:
        self.text = text.strip()
        self.modality = modality.strip().upper()
        self.date_from = date_from
        self.date_to = date_to


class SelectionTree(ScrolledTree):
    def __init__(self, master: tk.Misc, on_change: Callable[[], None]) -> None:
        super().__init__(master, COLUMNS, tree_heading=("Patient / study / series", 22),
                         height=8, selectmode="browse")
        self._on_change = on_change
        self._scan: Any = None
        self._checked: Dict[str, bool] = {}   # series UID -> ticked
        self._series: Dict[str, Any] = {}     # series UID -> SeriesNode
        self._dates: Dict[str, str] = {}      # series UID -> its study's date, for display
        self._leaves: Dict[str, List[str]] = {}  # tree item -> series UIDs shown under it
        self.filters = Filters()
        self.tree.bind("<space>", self._toggle_focused)
        self.tree.bind("<Button-1>", self._click)

    # -- data -------------------------------------------------------------------------------
    def load(self, scan: Any) -> None:
        self._scan = scan
        self._series = {}
        self._dates = {}
        for _, study, series in self._walk(Filters()):
            self._series[series.series_uid] = series
            self._dates[series.series_uid] = fmt.dicom_date(str(study.date or ""))
        self._checked = dict.fromkeys(self._series, True)
        self.refresh()

    def modalities(self) -> List[str]:
        return sorted({str(s.modality) for s in self._series.values() if s.modality})

    def _walk(self, filters: Filters) -> Iterator[Tuple[Any, Any, Any]]:
        if self._scan is None:
            return
        # The engine picks patients and studies; within a study only series of the chosen
        # type are shown, so "CT" does not drag along a study's reports or scout images.
        for patient in filter_patients(self._scan, filters.text, filters.modality,
                                       filters.date_from, filters.date_to):
            for study in patient.studies:
                for series in study.series:
                    if not filters.modality or series.modality.upper() == filters.modality:
                        yield patient, study, series

    def set_filters(self, filters: Filters) -> None:
        self.filters = filters
        self.refresh()

    # -- drawing ----------------------------------------------------------------------------
    def refresh(self) -> None:
        self.clear()
        self._leaves = {}
        patients: Dict[str, str] = {}
        studies: Dict[str, str] = {}
        for patient, study, series in self._walk(self.filters):
            p_key = "%s|%s" % (patient.patient_id, patient.name)
            p_item = patients.get(p_key)
            if p_item is None:
                p_item = self.tree.insert("", "end", open=True, text=self._patient_label(patient))
                patients[p_key] = p_item
            s_item = studies.get(study.study_uid)
            if s_item is None:
                s_item = self.tree.insert(p_item, "end", open=False, text=self._study_label(study))
                studies[study.study_uid] = s_item
            r_item = self.tree.insert(s_item, "end", text=series.description or "(no name)")
            for item in (p_item, s_item, r_item):
                self._leaves.setdefault(item, []).append(series.series_uid)
        self._redraw_marks()
        self._on_change()

    @staticmethod
    def _patient_label(patient: Any) -> str:
        name = str(patient.name or "(no name)").replace("^", " ").strip()
        return "%s  (ID %s)" % (name, patient.patient_id or "none")

    @staticmethod
    def _study_label(study: Any) -> str:
        return study.description or "Study %s" % fmt.dicom_date(str(study.date or "")) or "Study"

    def _redraw_marks(self) -> None:
        for item, uids in self._leaves.items():
            ticked = sum(1 for u in uids if self._checked.get(u))
            mark = CHECKED if ticked == len(uids) else UNCHECKED if not ticked else PARTIAL
            label = self.tree.item(item, "text")
            if label[:1] in (CHECKED, UNCHECKED, PARTIAL):
                label = label[2:]
            files = sum(len(self._series[u].files) for u in uids)
            size = sum(int(self._series[u].bytes or 0) for u in uids)
            date = self._dates[uids[0]] if self.tree.parent(item) else ""
            modality = ", ".join(sorted({str(self._series[u].modality) for u in uids}))
            self.tree.item(item, text="%s %s" % (mark, label),
                           values=("{:,}".format(files), fmt.size(size), date, modality))

    # -- ticking ----------------------------------------------------------------------------
    def toggle(self, item: str) -> None:
        uids = self._leaves.get(item, [])
        value = not all(self._checked.get(u) for u in uids)
        for uid in uids:
            self._checked[uid] = value
        self._redraw_marks()
        self._on_change()

    def set_all_shown(self, value: bool) -> None:
        for uid in {u for uids in self._leaves.values() for u in uids}:
            self._checked[uid] = value
        self._redraw_marks()
        self._on_change()

    def _toggle_focused(self, _event: object) -> str:
        item = self.tree.focus()
        if item:
            self.toggle(item)
        return "break"

    def _click(self, event: Any) -> Optional[str]:
        # Only a click on the tick box itself toggles; elsewhere it selects as usual.
        if self.tree.identify_region(event.x, event.y) != "tree":
            return None
        item = self.tree.identify_row(event.y)
        if not item or self.tree.identify_element(event.x, event.y) == "Treeitem.indicator":
            return None
        self.tree.focus(item)
        self.tree.selection_set(item)
        self.toggle(item)
        return "break"

    # -- results ----------------------------------------------------------------------------
    def selected_series(self) -> List[Any]:
        shown = {u for uids in self._leaves.values() for u in uids}
        return [self._series[u] for u in shown if self._checked.get(u)]

    def selected_files(self) -> List[str]:
        return sorted(f for s in self.selected_series() for f in s.files)

    def selection_summary(self) -> Tuple[int, int, int]:
        """(files, bytes, studies) of what would be copied."""
        series = self.selected_series()
        studies = {item for item, uids in self._leaves.items() if self.tree.parent(item)
                   and not self.tree.parent(self.tree.parent(item))
                   and any(self._checked.get(u) for u in uids)}
        return (sum(len(s.files) for s in series), sum(int(s.bytes or 0) for s in series),
                len(studies))
