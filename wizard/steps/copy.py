"""Step 4: the copy itself, with live progress, results, pause/stop, retry and the CSV audit."""
from __future__ import annotations

import collections
import datetime as dt
import os
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Any, Counter, Optional, Tuple

from engine.events import (EngineEvent, FileDone, JobFailed, JobFinished, LogLine, Outcome,
                           Progress)

from .. import fmt, services, theme
from ..results_table import CappedTable
from ..widgets import Banner, ScrolledTree, WrapLabel, pack_button
from .base import CANCELLING, DONE, IDLE, WORKING, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..controller import WizardState

RESULT_COLUMNS = (("path", "File", 13), ("patient", "Patient", 8), ("status", "Result", 7),
                  ("message", "Message", 12), ("uid", "SOP Instance UID", 11))
REASON_COLUMNS = (("reason", "Reason", 40), ("count", "Files", 6))
OUTCOME_TAGS = {Outcome.SENT: "ok", Outcome.WARNING: "warn", Outcome.SKIPPED: "muted",
                Outcome.FAILED: "bad"}
OUTCOME_WORDS = {Outcome.SENT: "Copied", Outcome.WARNING: "Copied (warning)",
                 Outcome.SKIPPED: "Skipped", Outcome.FAILED: "Failed"}
BADGE = "✓  Copy-only: your original files are never changed"


class CopyStep(Step):
    title = "Copy"
    heading = "Copy the images"
    intro = ("Press Start copying. You can pause, stop and continue later: files already copied "
             "are not sent twice.")

    def build(self, body: ttk.Frame) -> None:
        self._job: Any = None
        self._job_kind = ""
        self._paused = False
        self._reasons: Counter[str] = collections.Counter()
        self._run_key = ""
        self._ended = ""  # how the last run ended: "", "complete" or "interrupted"
        ttk.Label(body, text=BADGE, style="Badge.TLabel",
                  padding=(theme.ems(self, 0.6), theme.ems(self, 0.25))).pack(anchor="w")
        self.route = WrapLabel(body, text="")
        self.route.pack(fill="x", pady=(theme.ems(self, 0.4), 0))
        self._build_buttons(body)
        self.progress = ttk.Progressbar(body, mode="determinate")
        self.progress.pack(fill="x", pady=(theme.ems(self, 0.4), 0))
        self.stats = ttk.Label(body, text="", style="Big.TLabel")
        self.stats.pack(anchor="w")
        self.current = ttk.Label(body, text="", style="Hint.TLabel")
        self.current.pack(anchor="w")
        self.banner = Banner(body)
        self.banner.pack(fill="x", pady=(theme.ems(self, 0.2), 0))
        self._build_results(body)
        self._set_buttons()

    def _build_buttons(self, body: ttk.Frame) -> None:
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(theme.ems(self, 0.5), 0))
        self.start_button = pack_button(row, "Start copying", self.start, "Accent.TButton", 0)
        self.pause_button = pack_button(row, "Pause", self.toggle_pause, underline=0)
        self.stop_button = pack_button(row, "Stop copying", self.stop, underline=1)
        self.retry_button = pack_button(row, "Retry failed", self.retry_failed, underline=0)
        self.export_button = pack_button(row, "Export CSV audit…", self.export_csv, underline=0)

    def _build_results(self, body: ttk.Frame) -> None:
        self.notebook = ttk.Notebook(body)
        self.notebook.pack(fill="both", expand=True, pady=(theme.ems(self, 0.3), 0))
        files_tab = ttk.Frame(self.notebook)
        self.table = CappedTable(files_tab, RESULT_COLUMNS, height=6)
        self.table.pack(fill="both", expand=True)
        self.table_note = ttk.Label(files_tab, text="", style="Hint.TLabel")
        self.table_note.pack(anchor="w")
        self.notebook.add(files_tab, text="Files")
        self.reasons = ScrolledTree(self.notebook, REASON_COLUMNS, height=6)
        self.notebook.add(self.reasons, text="Problems by reason")
        # Long messages do not fit a column: the selected row is spelled out in full here.
        self.detail = WrapLabel(body, text="Select a row to read its full message.",
                                style="Hint.TLabel")
        self.detail.pack(fill="x")
        self.table.tree.bind("<<TreeviewSelect>>", lambda _e: self._show_detail(self.table))
        self.reasons.tree.bind("<<TreeviewSelect>>", lambda _e: self._show_detail(self.reasons))

    def _show_detail(self, table: ScrolledTree) -> None:
        selected = table.tree.selection()
        if not selected:
            return
        values = [str(v) for v in table.tree.item(selected[0], "values")]
        if table is self.reasons:
            text = "%s files: %s" % (values[1], values[0])
        else:
            text = "%s — %s%s" % (values[0], values[2], ": " + values[3] if values[3] else "")
        self.detail.configure(text=text)

    # -- step contract ----------------------------------------------------------------------
    def first_focus(self) -> Optional[tk.Widget]:
        return self.start_button

    def on_enter(self, state: "WizardState") -> None:
        what = ("everything in %s" % state.source if state.selection is None else
                "%s selected in %s" % (fmt.count(len(state.selection), "file"), state.source))
        self.route.configure(text="From: %s\nTo: %s" % (what, state.destination))
        key = "%s|%s|%s" % (state.source, state.destination,
                            None if state.selection is None else len(state.selection))
        if key != self._run_key and not self.busy:
            self._run_key = key
            self._reset_view()
            self._ended = ""
            state.migration = None
        self._set_buttons()
        if state.start_copy_now:
            state.start_copy_now = False
            self.start()

    def validate(self) -> Optional[str]:
        if self.controller.state.migration is None:
            return "Press Start copying first. Verification checks what was copied."
        return None

    def shutdown(self) -> None:
        self._job = None

    # -- actions ----------------------------------------------------------------------------
    def start(self) -> None:
        self._run(retry_failed=False)

    def retry_failed(self) -> None:
        self._run(retry_failed=True)

    def _run(self, retry_failed: bool) -> None:
        state = self.controller.state
        if self.busy or state.destination is None:
            return
        prefs = state.prefs
        work = services.migration_work(
            state.source, state.destination, state.settings, work_dir=state.work_dir,
            retry_failed=retry_failed, only_paths=None if retry_failed else state.selection,
            associations=prefs.associations, max_mbps=prefs.rate_cap(),
            window=prefs.time_window())
        self._reset_view()
        self._job_kind = "retry" if retry_failed else "copy"
        self._ended = ""
        self._job = self.controller.start_job(self._job_kind, work, self)
        self._paused = False
        self.banner.show("Busy", "Retrying the files that failed…" if retry_failed else
                         "Copying… You can keep working on this computer meanwhile.")
        self.set_work_state(WORKING)
        self._set_buttons()
        self.pause_button.focus_set()  # the focused Start button is disabled now

    def toggle_pause(self) -> None:
        if self._job is None or self.work_state != WORKING:
            return
        self._paused = not self._paused
        if self._paused:
            self._job.pause()
            self.banner.show("Warn", "Paused. Press Resume to go on.")
        else:
            self._job.resume()
            self.banner.show("Busy", "Copying…")
        self._set_buttons()

    def stop(self) -> None:
        if self._job is None or self.work_state != WORKING:
            return
        self._job.cancel()
        self._paused = False
        self.banner.show("Warn", "Stopping after the file in flight…")
        self.set_work_state(CANCELLING)
        self._set_buttons()

    def export_csv(self) -> None:
        state = self.controller.state
        name = "copy-audit-%s.csv" % dt.datetime.now().strftime("%Y%m%d-%H%M")
        path = self.controller.dialogs.ask_save_file(
            "Save the CSV audit", name, [("CSV file", "*.csv")], ".csv")
        if not path:
            return
        work = services.export_csv_work(state.work_dir, path,
                                        state.destination.key if state.destination else None)
        self.controller.start_job("export", work, self)
        self.export_button.state(["disabled"])

    # -- events -----------------------------------------------------------------------------
    def handle_event(self, event: EngineEvent) -> None:
        if self._job is not None and event.job_id == self._job.job_id:
            if isinstance(event, FileDone):
                self._file_done(event)
            elif isinstance(event, Progress):
                self._progress(event)
            elif isinstance(event, LogLine) and event.level != "info":
                self.current.configure(text=event.text)
            elif isinstance(event, (JobFinished, JobFailed)):
                self._finished(event)
        elif isinstance(event, (JobFinished, JobFailed)):
            self._export_finished(event)

    def _file_done(self, event: FileDone) -> None:
        source = self.controller.state.source
        shown = os.path.relpath(event.path, source) if source and event.path.startswith(
            source) else event.path
        problem = event.outcome in (Outcome.FAILED, Outcome.SKIPPED)
        if problem:
            self._reasons[event.reason] += 1
        self.table.add((shown, str(event.patient).replace("^", " "),
                        OUTCOME_WORDS.get(event.outcome, str(event.outcome)), event.reason,
                        event.sop_instance_uid), OUTCOME_TAGS.get(event.outcome, "info"), problem)

    def _progress(self, event: Progress) -> None:
        total = event.total
        self.progress.configure(maximum=max(total or 0, event.done, 1), value=event.done,
                                mode="determinate")
        parts = ["{:,} of {} files".format(event.done, "{:,}".format(total) if total
                                           else "? (still counting)")]
        parts.append("%.1f files/s" % event.files_per_s)
        parts.append("%.1f MB/s" % event.mb_per_s)
        eta = fmt.duration(event.eta_s) if not total or event.done < total else ""
        if eta:
            parts.append(eta + " left")
        self.stats.configure(text="  ·  ".join(parts))
        if event.current:
            self.current.configure(text="Now in: %s" % event.current)

    def flush(self) -> None:
        """Called by the pump after each batch of events."""
        self.table.flush()
        self.table_note.configure(text=self.table.note())
        if self._reasons:
            self._show_reasons(self._reasons.most_common())

    def _show_reasons(self, reasons: Any) -> None:
        self.reasons.clear()
        total = 0
        for reason, count in reasons:
            total += count
            self.reasons.tree.insert("", "end", values=(reason, "{:,}".format(count)),
                                     tags=("bad",))
        self.notebook.tab(self.reasons, text="Problems by reason (%s)" % "{:,}".format(total))

    def _finished(self, event: EngineEvent) -> None:
        self._job = None
        self.flush()
        self.set_work_state(DONE if isinstance(event, JobFinished) else IDLE)
        if isinstance(event, JobFailed):
            self._ended = "interrupted"
            self.banner.show("Bad", "The copy stopped: %s" % event.message)
            self._set_buttons()
            return
        result = event.result  # type: ignore[attr-defined]
        self.controller.state.migration = result
        self._ended = ("interrupted" if event.cancelled  # type: ignore[attr-defined]
                       or getattr(result, "stopped", "") else "complete")
        self._show_reasons(result.failure_summary)
        kind, text = self._verdict(event, result)
        if result.integrity_line:
            text += "\n" + result.integrity_line  # the originals were re-checked: say so
        self.banner.show(kind, text)
        self.current.configure(text="")
        self._set_buttons()
        # Focus the natural next action: continue, retry the failures, or go on to step 5.
        if self._ended == "interrupted":
            self.start_button.focus_set()
        elif self.retry_button.instate(["!disabled"]):
            self.retry_button.focus_set()
        else:
            self.controller.app.next_button.focus_set()

    def _verdict(self, event: Any, result: Any) -> Tuple[str, str]:
        counts = result.counts or event.counts or {}
        copied = counts.get("sent", 0) + counts.get("sent_with_warning", 0)
        bad = counts.get("failed", 0)
        skipped = counts.get("skipped", 0)
        text = "%s copied" % fmt.count(copied, "file")
        if counts.get("sent_with_warning"):
            text += " (%d with a warning)" % counts["sent_with_warning"]
        if skipped:
            text += ", %s skipped (not DICOM or unreadable)" % fmt.count(skipped, "file")
        if bad:
            text += ", %s failed: see Problems by reason, then press Retry failed" % fmt.count(
                bad, "file")
        stopped = getattr(result, "stopped", "")
        if event.cancelled or stopped == "cancelled":
            return "Warn", "Stopped by you. " + text + ". Press Continue copying to go on."
        if stopped:
            return "Bad", "The PACS could not be reached: %s. %s." % (stopped, text)
        return ("Good" if not bad else "Warn"), text + ". Press Next to check the result."

    def _export_finished(self, event: EngineEvent) -> None:
        self.export_button.state(["!disabled"])
        if isinstance(event, JobFailed):
            self.banner.show("Bad", "The CSV audit could not be saved: %s" % event.message)
        else:
            self.banner.show("Good", "CSV audit saved: %s" % event.summary)  # type: ignore

    def _reset_view(self) -> None:
        self.table.reset()
        self.table_note.configure(text="")
        self._reasons.clear()
        self.reasons.clear()
        self.notebook.tab(self.reasons, text="Problems by reason")
        self.progress.configure(value=0)
        self.stats.configure(text="")
        self.current.configure(text="")
        self.detail.configure(text="Select a row to read its full message.")
        self.banner.hide()

    def _set_buttons(self) -> None:
        working = self.work_state == WORKING
        has_run = self.controller.state.migration is not None
        failed = has_run and bool(getattr(self.controller.state.migration, "counts", {}).get(
            "failed"))
        for button, enabled in ((self.start_button, not self.busy),
                                (self.pause_button, working), (self.stop_button, working),
                                (self.retry_button, not self.busy and failed),
                                (self.export_button, not self.busy and has_run)):
            button.state(["!disabled"] if enabled else ["disabled"])
        self.pause_button.configure(text="Resume" if self._paused else "Pause")
        # After a complete run the start button is only for files added or changed since, and
        # the highlight moves to what comes next: Retry failed when something failed, else the
        # Next button in the bar. After a Stop (or a lost PACS), continuing is the next step.
        if self.busy:
            return  # both are disabled meanwhile: keep their looks until the run ends
        complete = has_run and self._ended == "complete"
        if complete:
            text = "Copy new or changed files"
        elif has_run or self._ended == "interrupted":
            text = "Continue copying"
        else:
            text = "Start copying"
        self.start_button.configure(text=text,
                                    style="TButton" if complete else "Accent.TButton")
        self.retry_button.configure(style="Accent.TButton" if complete and failed else "TButton")
