"""The wizard's brain: which step is shown, the shared state, and the jobs in flight.

Steps never reference each other; they read and write ``WizardState`` and start jobs through
the controller, which routes every engine event back to the step that started the job.
All methods: don't call from a non-UI thread.
"""
from __future__ import annotations

import logging
import os
import queue
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

from engine.config import Destination, Settings
from engine.errors import ConfigError
from engine.events import EngineEvent, JobFailed, JobFinished
from engine.jobs import JobHandle, start_job

from . import services, settings_store
from .dialogs import Dialogs
from .settings_store import Prefs
from .steps.base import Step
from .steps.choose import ChooseStep
from .steps.connect import ConnectStep
from .steps.copy import CopyStep
from .steps.discover import DiscoverStep
from .steps.verify import VerifyStep

if TYPE_CHECKING:  # pragma: no cover
    from .app import WizardApp

LOG = logging.getLogger(__name__)

STEP_ORDER = (DiscoverStep, ConnectStep, ChooseStep, CopyStep, VerifyStep)
CLOSE_JOIN_S = 2.0  # how long closing waits for cancelled jobs in total
BUSY_REASON = "Please wait until the current task ends, or stop it."


@dataclass
class WizardState:
    """What the steps hand each other. Plain values and engine results only."""

    prefs: Prefs
    destination: Optional[Destination] = None
    echo_ok: Optional[bool] = None
    source: str = ""
    selection: Optional[List[str]] = None  # None: copy everything in ``source`` (streaming)
    scan: Any = None          # engine ScanResult
    probe: Any = None         # engine ProbeResult
    migration: Any = None     # engine MigrationResult of the last copy run
    chosen_node: Any = None   # NodeFound picked in step 1
    practice_receiver: Any = None  # engine Receiver while practising
    start_copy_now: bool = False   # set by "resume": step 4 starts at once

    @property
    def settings(self) -> Settings:
        return self.prefs.to_settings()

    @property
    def work_dir(self) -> str:
        return self.prefs.resolved_work_dir()


class WizardController:
    def __init__(self, app: "WizardApp", events: "queue.Queue[EngineEvent]", dialogs: Dialogs,
                 prefs: Prefs, prefs_path: Any = None) -> None:
        self.app = app
        self.events = events
        self.dialogs = dialogs
        self.state = WizardState(prefs=prefs)
        self._prefs_path = prefs_path
        self.steps: List[Step] = []
        self.index = 0
        self._jobs: Dict[int, JobHandle] = {}
        self._owners: Dict[int, Step] = {}
        self._refusal = ""  # why Next was refused, while the footer still says so
        self.closed = False

    def build(self, container: Any) -> None:
        for cls in STEP_ORDER:
            self.steps.append(cls(container, self))
        self.show(0)

    # -- navigation -----------------------------------------------------------------------
    @property
    def current(self) -> Step:
        return self.steps[self.index]

    def step(self, cls: Type[Step]) -> Step:
        return next(s for s in self.steps if isinstance(s, cls))

    def show(self, index: int) -> None:
        # grid_remove rather than tkraise: a page hidden behind another would stay in the
        # Tab order, and keyboard users would tab into invisible fields.
        self.steps[self.index].grid_remove()
        self.index = index
        step = self.steps[index]
        self._refusal = ""
        self.app.set_message("", "")
        step.on_enter(self.state)
        step.grid(row=0, column=0, sticky="nsew")
        self.app.sidebar.set_current(index)
        self.refresh_buttons()
        target = step.first_focus()
        if target is not None:
            target.focus_set()

    def go_next(self) -> bool:
        """Validate, confirm and leave the current step; return True when the page changed."""
        step = self.current
        if step.busy:
            self._refuse(BUSY_REASON)
            return False
        reason = step.validate()
        if reason:
            self._refuse(reason)
            return False
        self._refusal = ""
        if not step.confirm_leave():
            return False
        step.on_leave(self.state)
        self.save_prefs()
        if self.index == len(self.steps) - 1:
            self.request_close()
            return True
        self.show(self.index + 1)
        return True

    def _refuse(self, reason: str) -> None:
        self._refusal = reason
        self.app.set_message("error", reason)

    def recheck(self) -> None:
        """Something on the page changed: if the footer still says why Next was refused, check
        again, and clear the complaint once it no longer applies (or say what is left)."""
        if not self._refusal or self.closed:
            return
        if str(self.app.message.cget("text")) != self._refusal:
            self._refusal = ""  # another message replaced it: leave that one alone
            return
        step = self.current
        if step.busy:
            return  # still the same reason (or about to be)
        reason = step.validate()
        if not reason:
            self._refusal = ""
            self.app.set_message("", "")
        elif reason != self._refusal:
            self._refuse(reason)

    def go_back(self) -> bool:
        if self.index == 0 or not self.current.can_go_back:
            return False
        self.show(self.index - 1)
        return True

    def go_to(self, cls: Type[Step]) -> None:
        """Jump to a step without validation (used by resume and by picking a found PACS)."""
        self.show(self.steps.index(self.step(cls)))

    def refresh_buttons(self) -> None:
        if not self.steps:
            return
        step = self.current
        last = self.index == len(self.steps) - 1
        self.app.set_nav(back=self.index > 0 and step.can_go_back, next_=not step.busy,
                         next_label="Finish" if last else step.next_label)

    # -- jobs -----------------------------------------------------------------------------
    def start_job(self, kind: str, work: services.Work, owner: Step) -> JobHandle:
        handle = start_job(kind, work, self.events.put)
        self._jobs[handle.job_id] = handle
        self._owners[handle.job_id] = owner
        LOG.info("Started job %d (%s) for %s", handle.job_id, kind, owner.title)
        return handle

    def dispatch(self, event: EngineEvent) -> None:
        """Called by the pump for every event; hands it to the step that started the job."""
        owner = self._owners.get(event.job_id)
        if isinstance(event, (JobFinished, JobFailed)):
            self._jobs.pop(event.job_id, None)
            self._owners.pop(event.job_id, None)
            if isinstance(event, JobFailed):
                LOG.error("Job %d failed: %s\n%s", event.job_id, event.message, event.traceback)
        if owner is None:
            LOG.debug("Event for a job nobody owns any more: %r", event)
            return
        owner.handle_event(event)

    def after_batch(self) -> None:
        """Called by the pump after each batch: steps flush buffered table rows once."""
        for step in self.steps:
            flush = getattr(step, "flush", None)
            if flush is not None:
                flush()
        self.recheck()  # a finished job may have removed the reason Next was refused

    def running_jobs(self) -> List[JobHandle]:
        return [job for job in self._jobs.values() if job.is_alive()]

    # -- preferences ----------------------------------------------------------------------
    def update_prefs(self, **changes: Any) -> None:
        self.state.prefs = replace(self.state.prefs, **changes)
        self.save_prefs()

    def apply_prefs(self, prefs: Prefs) -> None:
        """The Advanced settings dialog saved new values."""
        self.state.prefs = prefs
        self.save_prefs()
        for step in self.steps:
            hook = getattr(step, "on_prefs_changed", None)
            if hook is not None:
                hook(prefs)

    def save_prefs(self) -> None:
        try:
            settings_store.save(self.state.prefs, self._prefs_path)
        except OSError as exc:
            LOG.warning("Could not save settings: %s", exc, exc_info=True)
            self.app.set_message("notice", "Your settings could not be saved (%s)." % exc)

    # -- resuming ---------------------------------------------------------------------------
    def offer_resume_at_start(self) -> None:
        """If the last session's folder and PACS have an unfinished copy, offer to continue."""
        p = self.state.prefs
        if not (p.source and p.host and p.called_aet) or not os.path.isdir(p.source):
            return
        try:
            dest = Destination(p.host, p.port, p.called_aet)
        except ConfigError:
            return
        self.step(ChooseStep).check_resume(p.source, dest, at_start=True)  # type: ignore

    def resume_copy(self, source: str, dest: Destination) -> None:
        """Go straight to step 4 and continue copying ``source`` to ``dest``."""
        self.state.destination = dest
        self.state.source = source
        self.state.selection = None
        self.state.start_copy_now = True
        self.go_to(CopyStep)

    # -- closing --------------------------------------------------------------------------
    def request_close(self) -> bool:
        """Ask before stopping running work; then cancel, join briefly and close the window."""
        running = self.running_jobs()
        if running and not self.dialogs.ask_yes_no(
                "Stop and close?",
                "Work is still running (%s)." % ", ".join(sorted({j.kind for j in running})),
                "If you close now it is stopped. Files already copied stay copied, and you can "
                "continue the copy later from where it stopped."):
            return False
        self.shutdown()
        self.app.close_window()
        return True

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for job in list(self._jobs.values()):
            job.cancel()
        for job in list(self._jobs.values()):
            job.join(CLOSE_JOIN_S / max(1, len(self._jobs)))
        for step in self.steps:
            step.shutdown()
        self.save_prefs()
