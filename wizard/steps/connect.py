"""Step 2: where to send (host, port, AE titles), a connection test, and a practice receiver."""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Any, Dict, Optional

from engine import dirs
from engine.config import Destination, check_ae_title, check_port
from engine.errors import ConfigError
from engine.events import EngineEvent, JobFailed, JobFinished

from .. import services, theme
from ..widgets import Banner, Form, WrapLabel, pack_button
from .base import DONE, IDLE, WORKING, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..controller import WizardState

PRACTICE_AET = "PRACTICE"
FIX_FIELDS = "Please correct the highlighted fields first."


class ConnectStep(Step):
    title = "Connect"
    heading = "Connect to the new PACS"
    intro = ("Type the details IT gave you for the new PACS, then press Test connection. "
             "Nothing is copied yet.")

    def build(self, body: ttk.Frame) -> None:
        self.vars: Dict[str, tk.StringVar] = {
            name: tk.StringVar(self, "") for name in ("host", "port", "called", "calling")}
        self.form = Form(body)
        self.form.pack(fill="x")
        self.host_entry = self.form.add("host", "PACS address", ttk.Entry(
            self.form, textvariable=self.vars["host"], width=30), "name or IP address")
        self.form.add("port", "Port", ttk.Entry(self.form, textvariable=self.vars["port"],
                                                width=8), "often 104 or 11112")
        self.form.add("called", "PACS AE title", ttk.Entry(
            self.form, textvariable=self.vars["called"], width=18), "the name the PACS answers to")
        self.form.add("calling", "Our AE title", ttk.Entry(
            self.form, textvariable=self.vars["calling"], width=18),
            "the PACS must know this name")
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(theme.ems(self, 0.6), theme.ems(self, 0.4)))
        self.test_button = pack_button(row, "Test connection", self.test_connection,
                                       "Accent.TButton", underline=0)
        self.banner = Banner(body)
        self.banner.pack(fill="x")
        self._build_practice(body)
        for var in self.vars.values():
            var.trace_add("write", lambda *_: self._fields_changed())
        self._echo: Optional[Any] = None       # EchoResult of the last test
        self._echo_key = ""                    # which field values that test was for
        self._job: Optional[Any] = None
        self.receiver: Optional[Any] = None

    def _build_practice(self, body: ttk.Frame) -> None:
        box = ttk.LabelFrame(body, text="No PACS yet, or just trying things out?",
                             padding=theme.ems(self, 0.6))
        box.pack(fill="x", pady=(theme.ems(self, 1), 0))
        WrapLabel(box, text=(
            "Start a test receiver on this computer and send to it instead. It behaves like a "
            "small PACS, so you can practise every step without touching the real one."),
            ).pack(fill="x")
        row = ttk.Frame(box)
        row.pack(fill="x", pady=(theme.ems(self, 0.4), 0))
        self.practice_button = pack_button(row, "Practice with a test receiver on this computer",
                                           self.start_practice, underline=0)
        self.stop_practice_button = pack_button(row, "Stop test receiver", self.stop_practice)
        self.stop_practice_button.state(["disabled"])

    # -- step contract ----------------------------------------------------------------------
    def first_focus(self) -> Optional[tk.Widget]:
        return self.host_entry

    def on_enter(self, state: "WizardState") -> None:
        node = state.chosen_node
        if node is not None:
            self.vars["host"].set(node.host)
            self.vars["port"].set(str(node.port))
            if node.accepted_aet:
                self.vars["called"].set(node.accepted_aet)
            state.chosen_node = None  # fill once; later edits by the user win
        elif not self.vars["host"].get() and state.prefs.host:
            self.vars["host"].set(state.prefs.host)
            self.vars["port"].set(str(state.prefs.port))
            self.vars["called"].set(state.prefs.called_aet)
        if not self.vars["calling"].get():
            self.vars["calling"].set(state.prefs.calling_aet)

    def on_prefs_changed(self, prefs: Any) -> None:
        self.vars["calling"].set(prefs.calling_aet)

    def field_problems(self) -> Dict[str, str]:
        v = {k: var.get().strip() for k, var in self.vars.items()}
        problems = {}
        if not v["host"]:
            problems["host"] = "Type the PACS address (ask IT if you do not know it)."
        if not v["port"].isdigit():
            problems["port"] = "The port must be a number, for example 104."
        elif check_port(int(v["port"])):
            problems["port"] = check_port(int(v["port"])) or ""
        for key in ("called", "calling"):
            reason = check_ae_title(v[key])
            if reason:
                problems[key] = reason
        return problems

    def destination(self) -> Destination:
        v = {k: var.get().strip() for k, var in self.vars.items()}
        return Destination(v["host"], int(v["port"]), v["called"])

    def validate(self) -> Optional[str]:
        problems = self.field_problems()
        for key in self.form.errors:
            self.form.set_error(key, problems.get(key))
        if problems:
            return FIX_FIELDS
        try:
            self.destination()
        except ConfigError as exc:
            return str(exc)
        return None

    def confirm_leave(self) -> bool:
        if self._echo is None or self._echo_key != self._key() or self._echo.ok:
            return True
        return self.controller.dialogs.ask_yes_no(
            "Continue without a working connection?",
            "The connection test failed.",
            "Copying will fail too unless the problem is fixed. Continue only if IT told you "
            "the PACS will be reachable later.")

    def on_leave(self, state: "WizardState") -> None:
        dest = self.destination()
        state.destination = dest
        state.echo_ok = self._echo.ok if self._echo is not None else None
        calling = self.vars["calling"].get().strip()
        self.controller.update_prefs(calling_aet=calling, **(
            {} if self.receiver is not None else
            {"host": dest.host, "port": dest.port, "called_aet": dest.called_aet}))

    def shutdown(self) -> None:
        self.stop_practice()

    # -- connection test --------------------------------------------------------------------
    def _key(self) -> str:
        return "|".join(var.get().strip() for var in self.vars.values())

    def _fields_changed(self) -> None:
        """Any field was written, by the user or by the program (practice receiver, a PACS
        picked in step 1, saved settings): errors already shown are checked again, so a fixed
        field loses its red line at once. New errors wait for Test connection or Next."""
        problems = self.field_problems()
        for key in self.form.errors:
            if self.form.error_text(key):
                self.form.set_error(key, problems.get(key))
        if not problems and self.banner.kind == "Bad" and self.banner.text == FIX_FIELDS:
            self.banner.hide()
        if self._echo is not None and self._echo_key != self._key():
            self.banner.show("Info", "The details changed. Press Test connection again.")
        self.controller.recheck()

    def test_connection(self) -> None:
        if self.busy:
            return
        reason = self.validate()
        if reason:
            self.banner.show("Bad", reason)
            return
        self.controller.recheck()  # the fields are fine now: drop an old complaint
        self.controller.update_prefs(calling_aet=self.vars["calling"].get().strip())
        work = services.echo_work(self.destination(), self.controller.state.settings)
        self._echo_key = self._key()
        self._job = self.controller.start_job("echo", work, self)
        self.banner.show("Busy", "Testing the connection to %s…" % self.destination())
        self.test_button.state(["disabled"])
        self.set_work_state(WORKING)

    def handle_event(self, event: EngineEvent) -> None:
        if not isinstance(event, (JobFinished, JobFailed)):
            return
        kind = getattr(self._job, "kind", "")
        self._job = None
        self.test_button.state(["!disabled"])
        self.practice_button.state(["!disabled"] if self.receiver is None else ["disabled"])
        self.set_work_state(DONE if isinstance(event, JobFinished) else IDLE)
        if kind == "receiver":
            self._receiver_started(event)
        else:
            self._echo_done(event)

    def _echo_done(self, event: EngineEvent) -> None:
        if isinstance(event, JobFailed):
            self._echo = None
            self.banner.show("Bad", "The test could not run: %s" % event.message)
            return
        self._echo = event.result  # type: ignore[attr-defined]
        self.controller.recheck()
        if self._echo.ok:
            self.banner.show("Good", "Connection works: the PACS answered in %d ms. Press Next."
                             % round(self._echo.elapsed_ms or 0))
        else:
            self.banner.show("Bad", "Connection failed: %s\nCheck the address, port and AE "
                             "titles with IT. The PACS must allow the AE title %s."
                             % (self._echo.reason or "no answer", self.vars["calling"].get()))

    # -- practice receiver ------------------------------------------------------------------
    def start_practice(self) -> None:
        if self.busy or self.receiver is not None:
            return
        out_dir = str(dirs.data_dir() / "practice-receiver")
        work = services.receiver_work(out_dir)
        self._job = self.controller.start_job("receiver", work, self)
        self.banner.show("Busy", "Starting the test receiver…")
        self.practice_button.state(["disabled"])
        self.set_work_state(WORKING)

    def _receiver_started(self, event: EngineEvent) -> None:
        if isinstance(event, JobFailed):
            self.banner.show("Bad", "The test receiver could not start: %s" % event.message)
            return
        self.receiver = event.result  # type: ignore[attr-defined]
        self.controller.state.practice_receiver = self.receiver
        aet = getattr(self.receiver, "aet", PRACTICE_AET)
        self.vars["host"].set("127.0.0.1")
        self.vars["port"].set(str(self.receiver.port))
        self.vars["called"].set(aet)
        self.stop_practice_button.state(["!disabled"])
        self.banner.show("Good", "A test receiver is running on this computer (port %d, AE title "
                         "%s). The fields are filled in: press Test connection, then Next."
                         % (self.receiver.port, aet))

    def stop_practice(self) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        self.controller.state.practice_receiver = None
        receiver.stop()  # shuts the server socket; returns quickly
        self.stop_practice_button.state(["disabled"])
        self.practice_button.state(["!disabled"])
        self.banner.show("Info", "The test receiver was stopped.")
