"""The Advanced settings dialog: network tuning, the work folder and our AE title.

Modal for the user (grab), but it does not spin its own event loop, so tests can fill it in and
press its buttons like any other widget.
"""
from __future__ import annotations

import contextlib
import tkinter as tk
from dataclasses import replace
from tkinter import ttk
from typing import Any, Callable, Dict, Optional

from . import settings_store, theme
from .dialogs import Dialogs
from .settings_store import Prefs
from .widgets import Form, pack_button

FIELDS = (
    # key, label, hint
    ("batch_size", "Files per connection", "1 to 500"),
    ("retries", "Retries per file", "0 to 10, for temporary PACS problems"),
    ("max_pdu", "Largest message we accept", "bytes; 0 = no limit"),
    ("associations", "Parallel connections", "1 to 16; more can be faster, ask IT"),
    ("max_mbps", "Speed limit (MB/s)", "empty = no limit; protects a busy PACS"),
    ("window", "Send only between", "like 19:00-06:30; empty = any time"),
    ("calling_aet", "Our AE title", "the PACS must know this name"),
    ("work_dir", "Work folder", "copy records and logs; empty = default"),
)
INT_FIELDS = ("batch_size", "retries", "max_pdu", "associations")


class AdvancedDialog(tk.Toplevel):
    def __init__(self, master: tk.Misc, prefs: Prefs, dialogs: Dialogs,
                 on_save: Callable[[Prefs], None]) -> None:
        super().__init__(master)
        self.title("Advanced settings")
        self.transient(master.winfo_toplevel())
        self.configure(padx=theme.ems(self, 1.2), pady=theme.ems(self, 1))
        theme.style_dialog(self)
        self._prefs = prefs
        self._dialogs = dialogs
        self._on_save = on_save
        self.vars: Dict[str, tk.StringVar] = {}
        self.decompress = tk.BooleanVar(self, prefs.decompress)
        ttk.Label(self, text="Advanced settings", style="Title.TLabel").pack(anchor="w")
        ttk.Label(self, text="Change these only if IT asks you to. They are saved for next time.",
                  style="Hint.TLabel").pack(anchor="w", pady=(0, theme.ems(self, 0.5)))
        self.form = Form(self)
        self.form.pack(fill="x")
        for key, label, hint in FIELDS:
            self.vars[key] = tk.StringVar(self, str(getattr(prefs, key)))
            if key in INT_FIELDS and key != "max_pdu":
                low, high = {"batch_size": (1, 500), "retries": (0, 10),
                             "associations": (1, 16)}[key]
                widget: tk.Widget = ttk.Spinbox(self.form, from_=low, to=high, width=8,
                                                textvariable=self.vars[key])
            else:
                widget = ttk.Entry(self.form, textvariable=self.vars[key],
                                   width=34 if key == "work_dir" else 16)
            self.form.add(key, label, widget, hint)
        ttk.Checkbutton(self, variable=self.decompress, text=(
            "Decompress images the PACS refuses in their compressed form (recommended)")).pack(
            anchor="w", pady=(theme.ems(self, 0.4), 0))
        self._buttons()
        self.bind("<Escape>", lambda _e: self.cancel())
        self.bind("<Return>", lambda _e: self.save())
        self.protocol("WM_DELETE_WINDOW", self.cancel)
        self._centre_over(master.winfo_toplevel())
        self.after_idle(self._grab)

    def _centre_over(self, parent: tk.Misc) -> None:
        self.update_idletasks()
        x = parent.winfo_rootx() + max(0, (parent.winfo_width() - self.winfo_reqwidth()) // 2)
        y = parent.winfo_rooty() + max(0, (parent.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry("+%d+%d" % (x, y))

    def _grab(self) -> None:
        # Keep the user here until Save or Cancel; if the window manager has not mapped the
        # window yet the grab fails, and the dialog still works without it.
        with contextlib.suppress(tk.TclError):
            self.grab_set()
        self.focus_set()

    def _buttons(self) -> None:
        row = ttk.Frame(self)
        row.pack(fill="x", pady=(theme.ems(self, 0.8), 0))
        pack_button(row, "Browse for work folder…", self.browse, underline=0)
        self.message = ttk.Label(row, text="", style="Error.TLabel")
        self.message.pack(side="left")
        for text, command, style in (("Cancel", self.cancel, "TButton"),
                                     ("Save", self.save, "Accent.TButton"),
                                     ("Restore defaults", self.restore_defaults, "TButton")):
            ttk.Button(row, text=text, command=command, style=style).pack(
                side="right", padx=(theme.ems(self, 0.5), 0))

    def browse(self) -> None:
        chosen = self._dialogs.ask_directory("Work folder", self.vars["work_dir"].get())
        if chosen:
            self.vars["work_dir"].set(chosen)

    def restore_defaults(self) -> None:
        defaults = Prefs()
        for key in self.vars:
            self.vars[key].set(str(getattr(defaults, key)))
        self.decompress.set(defaults.decompress)

    def collect(self) -> Optional[Prefs]:
        """The edited preferences, or None after showing why they are not valid."""
        values: Dict[str, Any] = {"decompress": bool(self.decompress.get())}
        problems: Dict[str, str] = {}
        for key in self.vars:
            text = self.vars[key].get().strip()
            if key in INT_FIELDS:
                if not text.lstrip("-").isdigit():
                    problems[key] = "Type a whole number."
                    continue
                values[key] = int(text)
            else:
                values[key] = text
        prefs = replace(self._prefs, **values)
        for key, reason in settings_store.check(prefs).items():
            problems.setdefault(key, reason)
        for key in self.vars:
            self.form.set_error(key, problems.get(key))
        self.message.configure(text="Please correct the fields in red." if problems else "")
        return None if problems else prefs

    def save(self) -> None:
        prefs = self.collect()
        if prefs is not None:
            self._on_save(prefs)
            self.close()

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        self.grab_release()
        self.destroy()
        # Drop the Tk variables now, on the Tk thread: left to the cycle collector they may be
        # freed on a worker thread, where Tk refuses the call.
        self.vars.clear()
        del self.decompress
