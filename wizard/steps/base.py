"""The contract every wizard step follows (built once, then shown and hidden).

A step reports whether it may be left with ``validate()`` (a reason, or None), may ask the user
to confirm with ``confirm_leave()``, copies what it collected into the shared state in
``on_leave()``, and receives the events of the jobs it started in ``handle_event()``.
All methods: don't call from a non-UI thread.
"""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Optional

from engine.events import EngineEvent

from .. import theme
from ..widgets import WrapLabel

if TYPE_CHECKING:  # pragma: no cover
    from ..controller import WizardController, WizardState

# The local life cycle of a step's background work (as in Thonny's WorkDialog).
IDLE, WORKING, CANCELLING, DONE = "idle", "working", "cancelling", "done"


class Step(ttk.Frame):
    title = ""      # short name in the sidebar
    heading = ""    # the big line at the top of the page
    intro = ""      # one or two sentences: what to do on this page

    def __init__(self, master: tk.Misc, controller: "WizardController") -> None:
        super().__init__(master, padding=(theme.ems(master, 1.2), theme.ems(master, 0.8)))
        self.controller = controller
        self.work_state = IDLE
        ttk.Label(self, text=self.heading or self.title, style="Title.TLabel").pack(anchor="w")
        self.intro_label = WrapLabel(self, text=self.intro, style="Hint.TLabel")
        self.intro_label.pack(fill="x", pady=(theme.ems(self, 0.2), theme.ems(self, 0.6)))
        self.body = ttk.Frame(self)
        self.body.pack(fill="both", expand=True)
        self.build(self.body)

    # -- to override --------------------------------------------------------------------
    def build(self, body: ttk.Frame) -> None:
        """Create the widgets (called once)."""

    def on_enter(self, state: "WizardState") -> None:
        """The step is about to be shown."""

    def validate(self) -> Optional[str]:
        """Why the user cannot go on yet, in words they can act on; None when they can."""
        return None

    def confirm_leave(self) -> bool:
        """Last chance to warn (the user may still choose to continue)."""
        return True

    def on_leave(self, state: "WizardState") -> None:
        """Copy what this step collected into ``state``."""

    def handle_event(self, event: EngineEvent) -> None:
        """An event of a job this step started."""

    def shutdown(self) -> None:
        """The window is closing: release what the step holds (jobs are cancelled already)."""

    # -- shared behaviour -----------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.work_state in (WORKING, CANCELLING)

    @property
    def can_go_back(self) -> bool:
        return not self.busy

    @property
    def next_label(self) -> str:
        return "Next"

    def set_work_state(self, value: str) -> None:
        self.work_state = value
        self.controller.refresh_buttons()

    def first_focus(self) -> Optional[tk.Widget]:
        """The widget that gets the keyboard focus when the step is shown."""
        return None
