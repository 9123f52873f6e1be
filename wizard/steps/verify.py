"""Step 5: ask the PACS what it holds and compare with what was copied, study by study."""
from __future__ import annotations

import csv
import datetime as dt
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Dict, List, Optional

from engine.events import EngineEvent, JobFailed, JobFinished, Progress, StudyVerified
from engine.jobs import Control

from .. import fmt, services, theme
from ..widgets import Banner, ScrolledTree, WrapLabel, pack_button
from .base import DONE, IDLE, WORKING, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..controller import WizardState

COLUMNS = (("verdict", "Result", 8), ("patient", "Patient", 11), ("expected", "Copied", 5),
           ("found", "In PACS", 5), ("missing", "Missing", 5), ("study", "Study UID", 16))
VERDICT_WORDS = {"MATCH": "✓ MATCH", "MISMATCH": "✗ MISMATCH", "MISSING": "✗ MISSING"}
REPORT_FIELDS = ("verdict", "patient", "study_instance_uid", "expected", "found",
                 "missing_sop_instance_uids")


def report_work(rows: List[StudyVerified], path: str, destination: str) -> services.Work:
    """Write the verification report (one line per study) in a worker thread."""
    def work(control: Control) -> JobFinished:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(["# Verification of %s on %s" % (
                destination, dt.datetime.now().isoformat(timespec="seconds"))])
            out.writerow(REPORT_FIELDS)
            for r in rows:
                out.writerow([r.verdict, r.patient, r.study_instance_uid, r.expected, r.found,
                              " ".join(r.missing)])
        return JobFinished(control.job_id, "%d studies written to %s" % (len(rows), path),
                           result=len(rows))
    return work


class VerifyStep(Step):
    title = "Check the result"
    intro = ("Ask the new PACS which images it now holds and compare, study by study, with what "
             "was copied. Export the report for IT when you are done.")

    def build(self, body: ttk.Frame) -> None:
        self._rows: Dict[str, StudyVerified] = {}
        self._jobs: Dict[int, str] = {}  # job id -> "verify", "resend" or "report"
        row = ttk.Frame(body)
        row.pack(fill="x")
        self.check_button = pack_button(row, "Check the result", self.start_verify,
                                        "Accent.TButton", 0)
        self.progress = ttk.Progressbar(row, mode="determinate", length=theme.ems(self, 14))
        self.progress.pack(side="left", padx=(0, theme.ems(self, 0.5)))
        self.status = WrapLabel(row, text="", style="Hint.TLabel")
        self.status.pack(side="left", fill="x", expand=True)
        self.banner = Banner(body)
        self.banner.pack(fill="x", pady=(theme.ems(self, 0.4), 0))
        self.table = ScrolledTree(body, COLUMNS, height=10)
        self.table.pack(fill="both", expand=True, pady=(theme.ems(self, 0.4), 0))
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(theme.ems(self, 0.4), 0))
        self.resend_button = pack_button(row, "Send missing again", self.resend_missing,
                                         underline=0)
        self.report_button = pack_button(row, "Export verification report…", self.export_report,
                                         underline=0)
        self._set_buttons()

    # -- step contract ----------------------------------------------------------------------
    def first_focus(self) -> Optional[tk.Widget]:
        return self.check_button

    def on_enter(self, state: "WizardState") -> None:
        self._set_buttons()
        if not self._rows and not self.busy:
            self.status.configure(text="Press Check the result. It only reads from the PACS.")

    # -- actions ----------------------------------------------------------------------------
    def _start(self, kind: str, work: services.Work) -> None:
        job = self.controller.start_job(kind, work, self)
        self._jobs[job.job_id] = kind
        if kind != "report":
            self.set_work_state(WORKING)
        self._set_buttons()

    def start_verify(self) -> None:
        state = self.controller.state
        if self.busy or state.destination is None:
            return
        self._rows.clear()
        self.table.clear()
        self.progress.configure(value=0, maximum=1)
        self.banner.show("Busy", "Asking the PACS what it holds…")
        self._start("verify", services.verify_work(state.work_dir, state.destination,
                                                   state.settings))

    def resend_missing(self) -> None:
        state = self.controller.state
        if self.busy or state.destination is None:
            return
        self.banner.show("Busy", "Sending the missing images again…")
        self._start("resend", services.resend_work(state.work_dir, state.destination,
                                                   state.settings, state.source,
                                                   state.prefs.associations))

    def export_report(self) -> None:
        path = self.controller.dialogs.ask_save_file(
            "Save the verification report",
            "verification-%s.csv" % dt.datetime.now().strftime("%Y%m%d-%H%M"),
            [("CSV file", "*.csv")], ".csv")
        if path:
            self._start("report", report_work(list(self._rows.values()), path,
                                              str(self.controller.state.destination)))

    # -- events -----------------------------------------------------------------------------
    def handle_event(self, event: EngineEvent) -> None:
        kind = self._jobs.get(event.job_id, "")
        if isinstance(event, StudyVerified):
            self._add_row(event)
        elif isinstance(event, Progress):
            self.progress.configure(maximum=max(event.total or 0, event.done, 1),
                                    value=event.done)
            what = "studies" if kind == "verify" else "files"
            self.status.configure(text="{:,} of {} {}".format(
                event.done, "{:,}".format(event.total) if event.total else "?", what))
        elif isinstance(event, (JobFinished, JobFailed)):
            self._jobs.pop(event.job_id, None)
            if kind != "report":
                self.set_work_state(DONE if isinstance(event, JobFinished) else IDLE)
            {"verify": self._verify_done, "resend": self._resend_done,
             "report": self._report_done}.get(kind, lambda e: None)(event)
            self._set_buttons()

    def _add_row(self, row: StudyVerified) -> None:
        self._rows[row.study_instance_uid] = row
        values = (VERDICT_WORDS.get(row.verdict, row.verdict), str(row.patient).replace("^", " "),
                  row.expected, row.found, len(row.missing), row.study_instance_uid)
        tag = "ok" if row.verdict == "MATCH" else "bad"
        if self.table.tree.exists(row.study_instance_uid):
            self.table.tree.item(row.study_instance_uid, values=values, tags=(tag,))
        else:
            self.table.tree.insert("", "end", iid=row.study_instance_uid, values=values,
                                   tags=(tag,))

    def _verify_done(self, event: EngineEvent) -> None:
        if isinstance(event, JobFailed):
            self.banner.show("Bad", "The check could not run: %s" % event.message)
            return
        result = getattr(event, "result", None)
        for row in getattr(result, "studies", None) or []:
            self._add_row(row)  # in case the events were coalesced or not sent
        bad = [r for r in self._rows.values() if r.verdict != "MATCH"]
        total = len(self._rows)
        self.status.configure(text="Checked %s." % fmt.count(total, "study", "studies"))
        if not total:
            self.banner.show("Warn", "Nothing to check: no copied images were found in the "
                             "records for this PACS.")
        elif bad:
            missing = sum(len(r.missing) for r in bad)
            self.banner.show("Bad", "%s of %s do not match (%s missing). Press Send missing "
                             "again, then check again." % (
                                 len(bad), fmt.count(total, "study", "studies"),
                                 fmt.count(missing, "image")))
        else:
            self.banner.show("Good", "All %s match: every copied image is in the PACS."
                             % fmt.count(total, "study", "studies"))

    def _resend_done(self, event: EngineEvent) -> None:
        if isinstance(event, JobFailed):
            self.banner.show("Bad", "Sending again failed: %s" % event.message)
            return
        self.banner.show("Info", "%s Checking again…" % getattr(event, "summary", ""))
        self.start_verify()

    def _report_done(self, event: EngineEvent) -> None:
        if isinstance(event, JobFailed):
            self.banner.show("Bad", "The report could not be saved: %s" % event.message)
        else:
            self.banner.show("Good", "Report saved: %s" % getattr(event, "summary", ""))

    def _set_buttons(self) -> None:
        mismatches = any(r.verdict != "MATCH" for r in self._rows.values())
        for button, enabled in ((self.check_button, not self.busy),
                                (self.resend_button, not self.busy and mismatches),
                                (self.report_button, not self.busy and bool(self._rows))):
            button.state(["!disabled"] if enabled else ["disabled"])
