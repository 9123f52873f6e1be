"""The main window: sidebar, the step pages, and the Back / Next / Cancel bar.

It owns the event queue, the pump and the controller, and turns any error raised in a Tk
callback into one readable sentence plus a log entry (never a traceback window).
"""
from __future__ import annotations

import logging
import queue
import sys
import time
import tkinter as tk
from pathlib import Path
from tkinter import ttk
from types import TracebackType
from typing import List, Optional, Type

from engine.errors import UserFacingError
from engine.events import EngineEvent

from . import assets, theme
from .advanced import AdvancedDialog
from .controller import STEP_ORDER, WizardController
from .dialogs import Dialogs
from .pump import EventPump
from .settings_store import load as load_prefs
from .widgets import StepSidebar, WrapLabel

LOG = logging.getLogger(__name__)

APP_TITLE = "DICOM PACS Migrator"
ERROR_DIALOG_GAP_S = 5.0  # one error window per few seconds; the bar shows every error


class WizardApp(tk.Tk):
    """Don't call from a non-UI thread."""

    def __init__(self, *, prefs_path: Optional[Path] = None, dialogs: Optional[Dialogs] = None,
                 log_path: Optional[Path] = None, scaling: Optional[float] = None,
                 resume_at_start: bool = True) -> None:
        super().__init__(className="DicomPacsMigrator")
        if scaling:
            self.tk.call("tk", "scaling", scaling)
        self.title(APP_TITLE)
        theme.apply_theme(self)
        assets.app_icon(self)
        self.log_path = log_path
        self.error_messages: List[str] = []
        self._last_error_dialog = 0.0
        self.events: "queue.Queue[EngineEvent]" = queue.Queue()
        prefs, notice = load_prefs(prefs_path)
        self.dialogs = dialogs or Dialogs(self)
        self._build()
        self.controller = WizardController(self, self.events, self.dialogs, prefs, prefs_path)
        self.controller.build(self.content)
        self.pump = EventPump(self, self.events, self.controller.dispatch,
                              self.report_callback_exception, self.controller.after_batch)
        self.pump.start()
        self.protocol("WM_DELETE_WINDOW", self.controller.request_close)
        self.bind_all("<Alt-KeyPress>", self._alt_key)
        # Typing, ticking or clicking may fix what made Next refuse: check again once the
        # widget has updated its variable, so the footer never blames a problem that is gone.
        for sequence in ("<KeyRelease>", "<ButtonRelease-1>"):
            self.bind_all(sequence, self._user_changed_something, add="+")
        self._fit_window()
        if notice:
            self.set_message("notice", notice)
        if resume_at_start:
            self.after(300, self.controller.offer_resume_at_start)

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.columnconfigure(1, weight=1)
        self.rowconfigure(0, weight=1)
        self.sidebar = StepSidebar(self, APP_TITLE, [cls.title for cls in STEP_ORDER])
        self.sidebar.grid(row=0, column=0, rowspan=2, sticky="nsw")
        self.content = ttk.Frame(self)
        self.content.grid(row=0, column=1, sticky="nsew")
        self.content.rowconfigure(0, weight=1)
        self.content.columnconfigure(0, weight=1)
        bar = self.bar = ttk.Frame(self, style="Bar.TFrame",
                                   padding=(theme.ems(self, 1), theme.ems(self, 0.5)))
        bar.grid(row=1, column=1, sticky="ew")
        pad = theme.ems(self, 0.5)
        self.advanced_button = ttk.Button(bar, text="Advanced settings…", underline=0,
                                          command=self.open_advanced)
        self.advanced_button.pack(side="left")
        self.cancel_button = ttk.Button(bar, text="Cancel", command=self._cancel_pressed)
        self.cancel_button.pack(side="right", padx=(pad, 0))
        self.next_button = ttk.Button(bar, text="Next", underline=0, style="Accent.TButton",
                                      command=lambda: self.controller.go_next())
        self.next_button.pack(side="right", padx=(pad, 0))
        self.back_button = ttk.Button(bar, text="Back", underline=0,
                                      command=lambda: self.controller.go_back())
        self.back_button.pack(side="right", padx=(pad, 0))
        self.message = WrapLabel(bar, text="", style="Bar.TLabel")
        self.message.pack(side="left", fill="x", expand=True, padx=pad * 2)

    def _fit_window(self) -> None:
        # Fill a 1024x768 screen (minus taskbar and title bar); never exceed the screen.
        width = min(self.winfo_screenwidth(), theme.ems(self, 76))
        height = min(self.winfo_screenheight() - theme.ems(self, 5), theme.ems(self, 56))
        self.geometry("%dx%d" % (width, height))
        self.minsize(min(width, theme.ems(self, 70)), min(height, theme.ems(self, 46)))

    # -- what the controller calls ------------------------------------------------------------
    def set_nav(self, back: bool, next_: bool, next_label: str) -> None:
        self.back_button.state(["!disabled"] if back else ["disabled"])
        self.next_button.state(["!disabled"] if next_ else ["disabled"])
        self.next_button.configure(text=next_label)

    def set_message(self, kind: str, text: str) -> None:
        """``kind`` is "error", "notice" or "" (plain)."""
        style = {"error": "BarError.TLabel", "notice": "BarNotice.TLabel"}.get(kind, "Bar.TLabel")
        self.message.configure(text=text, style=style)

    def open_advanced(self) -> AdvancedDialog:
        return AdvancedDialog(self, self.controller.state.prefs, self.dialogs,
                              self.controller.apply_prefs)

    def close_window(self) -> None:
        self.pump.stop()
        self.destroy()

    def _user_changed_something(self, _event: object = None) -> None:
        self.after_idle(self.controller.recheck)

    def _cancel_pressed(self) -> None:
        self.controller.request_close()

    def _alt_key(self, event: "tk.Event[tk.Misc]") -> Optional[str]:
        """Alt + the underlined letter presses that button, as on Windows."""
        key = str(event.keysym).lower()
        top = event.widget.winfo_toplevel() if isinstance(event.widget, tk.Misc) else self
        roots = [top] if top is not self else [self.controller.current, self.bar]
        for button in (b for root in roots for b in _buttons_in(root)):
            underline = int(button.cget("underline"))
            text = str(button.cget("text"))
            if 0 <= underline < len(text) and text[underline].lower() == key \
                    and button.instate(["!disabled"]) and button.winfo_viewable():
                button.invoke()
                return "break"
        return None

    # -- errors -------------------------------------------------------------------------------
    def report_callback_exception(self, exc: Type[BaseException], val: BaseException,
                                  tb: Optional[TracebackType]) -> None:
        LOG.error("Error in a window callback", exc_info=(exc, val, tb))
        if isinstance(val, UserFacingError):
            text = str(val)
        else:
            text = "Something went wrong inside the program (%s: %s)." % (exc.__name__, val)
        where = (" Details are in the log file %s — please send it to IT." % self.log_path
                 if self.log_path else " Please tell IT what you were doing.")
        self.error_messages.append(text)
        try:
            self.set_message("error", text + where)
        except tk.TclError:
            print(text + where, file=sys.stderr)  # the window is already gone
            return
        now = time.monotonic()
        if now - self._last_error_dialog > ERROR_DIALOG_GAP_S:
            self._last_error_dialog = now
            self.after_idle(lambda: self.dialogs.error("Something went wrong", text, where.strip()))


def _buttons_in(widget: tk.Misc) -> List[ttk.Button]:
    found: List[ttk.Button] = []
    for child in widget.winfo_children():
        if isinstance(child, ttk.Button):
            found.append(child)
        elif not isinstance(child, tk.Toplevel):
            found.extend(_buttons_in(child))
    return found
