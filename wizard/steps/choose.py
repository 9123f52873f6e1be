"""Step 3: which folder, everything or a scanned selection, and the pre-flight check."""
from __future__ import annotations

import os
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Any, Dict, Optional

from engine.config import Destination
from engine.events import EngineEvent, JobFailed, JobFinished, Progress

from .. import fmt, services, theme
from ..selection_tree import Filters, SelectionTree
from ..widgets import Banner, ScrolledTree, WrapLabel, pack_button
from .base import DONE, IDLE, WORKING, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..controller import WizardState

EVERYTHING, SCAN = "everything", "scan"
PROBE_COLUMNS = (("sop", "Kind of image", 12), ("ts", "Stored as", 10), ("files", "Files", 4),
                 ("action", "What happens", 10), ("why", "Why", 13))
PROBLEM_COLUMNS = (("path", "File", 24), ("reason", "Why it cannot be copied", 24))
ACTION_TAGS = {"as is": "ok", "decompress": "warn", "refused": "bad"}
ACTION_WORDS = {"as is": "sent as is", "decompress": "decompressed first",
                "refused": "refused by the PACS"}


def describe_unfinished(summary: Any) -> str:
    """One sentence about an interrupted run, whatever shape the engine's summary has."""
    counts = summary.get("counts") if isinstance(summary, dict) else getattr(summary, "counts",
                                                                               None)
    if isinstance(counts, dict) and counts:
        done = counts.get("sent", 0) + counts.get("sent_with_warning", 0)
        return "%s were already copied." % fmt.count(done, "file")
    text = getattr(summary, "text", None) or getattr(summary, "summary", None)
    return str(text) if text else ""


class ChooseStep(Step):
    title = "Choose what to copy"
    intro = ("Pick the folder that holds the images. Copy all of it, or scan it first to choose "
             "patients, studies or series. Your original files are only read, never changed.")

    def build(self, body: ttk.Frame) -> None:
        self.folder = tk.StringVar(self, "")
        self.mode = tk.StringVar(self, EVERYTHING)
        self._scan: Any = None
        self._probe: Any = None
        self._jobs: Dict[int, str] = {}  # job id -> "scan", "probe" or "resume"
        self._resume_target: Any = None  # (source, destination, asked at start-up)
        self._filter_after: Optional[str] = None
        self._resume_after: Optional[str] = None
        self._build_source(body)
        self.notebook = ttk.Notebook(body)
        self.notebook.pack(fill="both", expand=True, pady=(theme.ems(self, 0.4), 0))
        self._build_scan_tab()
        self._build_probe_tab()
        self.problems = ScrolledTree(self.notebook, PROBLEM_COLUMNS, height=6)
        self.notebook.add(self.problems, text="Unreadable files")
        self.folder.trace_add("write", lambda *_: self._folder_changed())
        self.mode.trace_add("write", lambda *_: self._mode_changed())
        self._mode_changed()

    def _build_source(self, body: ttk.Frame) -> None:
        row = ttk.Frame(body)
        row.pack(fill="x")
        ttk.Label(row, text="Folder").pack(side="left", padx=(0, theme.ems(self, 0.6)))
        self.folder_entry = ttk.Entry(row, textvariable=self.folder)
        self.folder_entry.pack(side="left", fill="x", expand=True)
        ttk.Button(row, text="Browse…", underline=0, command=self.browse).pack(
            side="left", padx=(theme.ems(self, 0.5), 0))
        for value, text in ((EVERYTHING, "Copy everything in this folder (starts at once, "
                                         "no scan needed)"),
                            (SCAN, "Scan first, then choose patients, studies or series")):
            ttk.Radiobutton(body, text=text, value=value, variable=self.mode).pack(
                anchor="w", pady=(theme.ems(self, 0.2), 0))
        self.resume_row = ttk.Frame(body)
        self.resume_banner = Banner(self.resume_row)
        self.resume_banner.pack(side="left", fill="x", expand=True)
        self.resume_button = ttk.Button(self.resume_row, text="Continue the unfinished copy",
                                        style="Accent.TButton", command=self.resume)
        self.resume_button.pack(side="left", padx=(theme.ems(self, 0.5), 0))

    def _build_scan_tab(self) -> None:
        tab = ttk.Frame(self.notebook, padding=theme.ems(self, 0.4))
        self.notebook.add(tab, text="Patients and studies")
        row = ttk.Frame(tab)
        row.pack(fill="x")
        self.scan_button = pack_button(row, "Scan the folder", self.start_scan)
        self.scan_progress = ttk.Progressbar(row, mode="determinate", length=theme.ems(self, 12))
        self.scan_progress.pack(side="left", padx=(0, theme.ems(self, 0.5)))
        self.scan_status = WrapLabel(row, text="", style="Hint.TLabel")
        self.scan_status.pack(side="left", fill="x", expand=True)
        self._build_filters(tab)
        self.tree = SelectionTree(tab, self._selection_changed)
        self.tree.pack(fill="both", expand=True, pady=(theme.ems(self, 0.3), 0))
        row = ttk.Frame(tab)
        row.pack(fill="x", pady=(theme.ems(self, 0.3), 0))
        pack_button(row, "Select all shown", lambda: self.tree.set_all_shown(True))
        pack_button(row, "Select none", lambda: self.tree.set_all_shown(False))
        self.selection_label = ttk.Label(row, text="", style="Bold.TLabel")
        self.selection_label.pack(side="left")

    def _build_filters(self, tab: ttk.Frame) -> None:
        row = ttk.Frame(tab)
        row.pack(fill="x", pady=(theme.ems(self, 0.3), 0))
        self.filter_vars = {k: tk.StringVar(self, "") for k in ("text", "modality", "from", "to")}
        self.filter_vars["modality"].set("All")
        pad = theme.ems(self, 0.3)
        for label, key, width in (("Name or ID", "text", 12), ("Type", "modality", 5),
                                  ("Date from", "from", 10), ("to", "to", 10)):
            ttk.Label(row, text=label).pack(side="left", padx=(pad * 2 if key != "text" else 0,
                                                               pad))
            if key == "modality":
                self.modality_box = ttk.Combobox(row, textvariable=self.filter_vars[key],
                                                 width=width, state="readonly", values=("All",))
                self.modality_box.pack(side="left")
            else:
                ttk.Entry(row, textvariable=self.filter_vars[key], width=width).pack(side="left")
            self.filter_vars[key].trace_add("write", lambda *_: self._schedule_filter())
        self.filter_error = ttk.Label(tab, text="", style="Error.TLabel")  # packed when needed

    def _build_probe_tab(self) -> None:
        tab = ttk.Frame(self.notebook, padding=theme.ems(self, 0.4))
        self.notebook.add(tab, text="Check with the PACS")
        row = ttk.Frame(tab)
        row.pack(fill="x")
        self.probe_button = pack_button(row, "Check with the PACS", self.start_probe)
        self.probe_status = WrapLabel(row, text="Finds out which files the PACS takes as they "
                                      "are, which must be decompressed, and which it refuses.",
                                      style="Hint.TLabel")
        self.probe_status.pack(side="left", fill="x", expand=True)
        self.probe_banner = Banner(tab)
        self.probe_banner.pack(fill="x", pady=(theme.ems(self, 0.3), 0))
        self.probe_table = ScrolledTree(tab, PROBE_COLUMNS, height=6)
        self.probe_table.pack(fill="both", expand=True, pady=(theme.ems(self, 0.3), 0))

    # -- step contract ----------------------------------------------------------------------
    def first_focus(self) -> Optional[tk.Widget]:
        return self.folder_entry

    def on_enter(self, state: "WizardState") -> None:
        if not self.folder.get() and state.prefs.source:
            self.folder.set(state.prefs.source)
        else:
            self._check_resume()

    def validate(self) -> Optional[str]:
        folder = self.folder.get().strip()
        if not folder or not os.path.isdir(folder):
            return "Choose the folder that holds the images (use Browse…)."
        work = os.path.realpath(self.controller.state.work_dir)
        real = os.path.realpath(folder)  # links must not hide the work folder in the source
        if os.path.commonpath([work, real]) == real:
            return ("The work folder (Advanced settings) is inside this folder, but the "
                    "source is never written to. Choose another work folder.")
        if self.mode.get() == SCAN:
            if self._scan is None:
                return "Press Scan the folder first, or choose Copy everything."
            if not self.tree.selected_files():
                return "Nothing is ticked. Tick at least one patient, study or series."
        return None

    def on_leave(self, state: "WizardState") -> None:
        state.source = os.path.abspath(self.folder.get().strip())
        state.selection = self.tree.selected_files() if self.mode.get() == SCAN else None
        state.scan = self._scan
        state.probe = self._probe
        self.controller.update_prefs(source=state.source)

    # -- folder and mode --------------------------------------------------------------------
    def browse(self) -> None:
        chosen = self.controller.dialogs.ask_directory("Folder with the images",
                                                       self.folder.get())
        if chosen:
            self.folder.set(chosen)

    def _folder_changed(self) -> None:
        self._scan = None
        self._probe = None
        self.tree.load(None)
        self.problems.clear()
        self.probe_table.clear()
        self.probe_banner.hide()
        self.scan_status.configure(text="")
        # Typing a path changes it once per key: look for an unfinished copy when typing stops.
        if self._resume_after is not None:
            self.after_cancel(self._resume_after)
        self._resume_after = self.after(400, self._check_resume)
        self.controller.recheck()  # e.g. a folder picked with Browse… answers "choose a folder"

    def _mode_changed(self) -> None:
        scanning = self.mode.get() == SCAN
        self.scan_button.state(["!disabled"] if scanning else ["disabled"])
        if not scanning:
            self.scan_status.configure(text="Not needed: everything in the folder is copied, "
                                            "and files are read as they are sent.")
        elif self._scan is None:
            self.scan_status.configure(text="Press Scan the folder to list what it holds.")

    # -- resume -----------------------------------------------------------------------------
    def _check_resume(self) -> None:
        self._resume_after = None
        self.resume_row.pack_forget()
        dest = self.controller.state.destination
        folder = self.folder.get().strip()
        if dest is None or not folder or not os.path.isdir(folder):
            return
        self.check_resume(os.path.abspath(folder), dest)

    def check_resume(self, source: str, dest: Destination, at_start: bool = False) -> int:
        """Look for an interrupted copy of ``source`` to ``dest`` in a worker; return the job id.

        At start-up a found copy is offered in a question; later, in a banner with a button.
        """
        work = services.resume_check_work(self.controller.state.work_dir, source, dest.key)
        job = self.controller.start_job("resume-check", work, self)
        self._jobs[job.job_id] = "resume"
        self._resume_target = (source, dest, at_start)
        return job.job_id

    def _resume_found(self, summary: Any) -> None:
        source, dest, at_start = self._resume_target
        if summary is None:
            self.resume_row.pack_forget()
            return
        if at_start:
            if self.controller.dialogs.ask_yes_no(
                    "Continue the unfinished copy?",
                    "Copying %s to %s did not finish last time. %s" % (
                        source, dest, describe_unfinished(summary)),
                    "Yes continues where it stopped (copied files are not sent again). "
                    "No starts the wizard from the beginning."):
                self.controller.resume_copy(source, dest)
            return
        self.resume_banner.show("Warn", "An unfinished copy of this folder to this PACS was "
                                "found. %s" % describe_unfinished(summary))
        self.resume_row.pack(fill="x", pady=(theme.ems(self, 0.3), 0), before=self.notebook)

    def resume(self) -> None:
        self.mode.set(EVERYTHING)
        self.controller.state.start_copy_now = True
        if not self.controller.go_next():
            self.controller.state.start_copy_now = False

    # -- scanning ---------------------------------------------------------------------------
    def start_scan(self) -> None:
        folder = self.folder.get().strip()
        if not os.path.isdir(folder):
            self.scan_status.configure(text="Choose an existing folder first.")
            return
        job = self.controller.start_job("scan", services.scan_work(os.path.abspath(folder)), self)
        self._jobs[job.job_id] = "scan"
        self.scan_button.state(["disabled"])
        self.scan_progress.configure(mode="indeterminate")
        self.scan_progress.start(80)
        self.scan_status.configure(text="Scanning… (reading file headers only)")
        self.set_work_state(WORKING)

    def start_probe(self) -> None:
        dest = self.controller.state.destination
        folder = self.folder.get().strip()
        if dest is None or not os.path.isdir(folder):
            self.probe_banner.show("Bad", "Choose a folder first (and a PACS in step 2).")
            return
        target: Any = self.tree.selected_files() if self._scan is not None else folder
        work = services.probe_work(target, dest, self.controller.state.settings)
        job = self.controller.start_job("probe", work, self)
        self._jobs[job.job_id] = "probe"
        self.probe_button.state(["disabled"])
        self.probe_banner.show("Busy", "Asking the PACS what it accepts…")
        self.set_work_state(WORKING)

    def handle_event(self, event: EngineEvent) -> None:
        kind = self._jobs.get(event.job_id, "")
        if isinstance(event, Progress) and kind == "scan":
            self._scan_progress(event)
        elif isinstance(event, (JobFinished, JobFailed)):
            self._jobs.pop(event.job_id, None)
            if kind == "resume":
                self._resume_found(getattr(event, "result", None))
                return
            if not any(k in ("scan", "probe") for k in self._jobs.values()):
                self.set_work_state(DONE if isinstance(event, JobFinished) else IDLE)
            if kind == "scan":
                self._scan_finished(event)
            elif kind == "probe":
                self._probe_finished(event)

    def _scan_progress(self, event: Progress) -> None:
        if event.total and str(self.scan_progress.cget("mode")) != "determinate":
            self.scan_progress.stop()
            self.scan_progress.configure(mode="determinate")
        if event.total:
            self.scan_progress.configure(maximum=event.total, value=event.done)
        self.scan_status.configure(text="Scanning… %s read · %s" % (
            fmt.count(event.done, "file"), os.path.basename(event.current) or event.current))

    def _scan_finished(self, event: EngineEvent) -> None:
        self.scan_progress.stop()
        self.scan_progress.configure(mode="determinate", maximum=1,
                                     value=1 if isinstance(event, JobFinished) else 0)
        self.scan_button.state(["!disabled"] if self.mode.get() == SCAN else ["disabled"])
        if isinstance(event, JobFailed):
            self.scan_status.configure(text="The scan stopped: %s" % event.message)
            return
        scan = event.result  # type: ignore[attr-defined]
        self._scan = scan
        self.tree.load(scan)
        self.modality_box.configure(values=["All"] + self.tree.modalities())
        self._show_problems(scan.problems)
        self.scan_status.configure(text="Found %s in %s (%s)%s." % (
            fmt.count(scan.total_files, "file"), fmt.count(len(scan.patients), "patient"),
            fmt.size(scan.total_bytes),
            ", %s cannot be read" % fmt.count(len(scan.problems), "file")
            if scan.problems else ""))
        if self.controller.state.destination is not None and self.tree.selected_files():
            self.start_probe()  # the pre-flight check follows the scan on its own

    def _show_problems(self, problems: Any) -> None:
        self.problems.clear()
        source = self._scan.source if self._scan is not None else ""
        for path, reason in problems:
            shown = os.path.relpath(path, source) if source and path.startswith(source) else path
            self.problems.tree.insert("", "end", values=(shown, reason), tags=("bad",))
        self.notebook.tab(self.problems, text="Unreadable files (%d)" % len(problems))

    def _probe_finished(self, event: EngineEvent) -> None:
        self.probe_button.state(["!disabled"])
        self.probe_table.clear()
        if isinstance(event, JobFailed):
            self.probe_banner.show("Bad", "The check could not run: %s" % event.message)
            return
        self._probe = event.result  # type: ignore[attr-defined]
        totals: Dict[str, int] = {}
        for sop, ts, files, action, why in self._probe.groups:
            count = files if isinstance(files, int) else len(files)
            totals[action] = totals.get(action, 0) + count
            self.probe_table.tree.insert("", "end", values=(
                sop, ts, "{:,}".format(count), ACTION_WORDS.get(action, action), why),
                tags=(ACTION_TAGS.get(action, "info"),))
        parts = ["%s %s" % (fmt.count(totals[a], "file"), ACTION_WORDS[a])
                 for a in ("as is", "decompress", "refused") if totals.get(a)]
        kind = "Bad" if totals.get("refused") else "Warn" if totals.get("decompress") else "Good"
        self.probe_banner.show(kind, "; ".join(parts) + "." if parts else "Nothing to check.")

    # -- filters and selection --------------------------------------------------------------
    def _schedule_filter(self) -> None:
        if self._filter_after is not None:
            self.after_cancel(self._filter_after)
        self._filter_after = self.after(250, self.apply_filters)

    def apply_filters(self) -> None:
        self._filter_after = None
        v = {k: var.get() for k, var in self.filter_vars.items()}
        try:
            filters = Filters(v["text"], "" if v["modality"] in ("", "All") else v["modality"],
                              fmt.parse_date(v["from"]) or "", fmt.parse_date(v["to"]) or "")
        except ValueError as exc:
            self.filter_error.configure(text=str(exc))
            self.filter_error.pack(anchor="w", before=self.tree)
            return
        self.filter_error.configure(text="")
        self.filter_error.pack_forget()
        self.tree.set_filters(filters)

    def _selection_changed(self) -> None:
        if self._scan is None:
            self.selection_label.configure(text="")
            return
        files, size, studies = self.tree.selection_summary()
        self.selection_label.configure(text="Selected: %s, %s, %s" % (
            fmt.count(studies, "study", "studies"), fmt.count(files, "file"), fmt.size(size)))
