"""Modal questions and file pickers, behind one small class so tests can script the answers.

All methods: don't call from a non-UI thread.
"""
from __future__ import annotations

import tkinter as tk
from tkinter import filedialog, messagebox
from typing import Sequence, Tuple


class Dialogs:
    def __init__(self, parent: tk.Misc) -> None:
        self.parent = parent

    def ask_yes_no(self, title: str, message: str, detail: str = "") -> bool:
        return bool(messagebox.askyesno(title, message, detail=detail, parent=self.parent))

    def error(self, title: str, message: str, detail: str = "") -> None:
        messagebox.showerror(title, message, detail=detail, parent=self.parent)

    def ask_directory(self, title: str, initial: str = "") -> str:
        return filedialog.askdirectory(title=title, initialdir=initial or None,
                                       mustexist=True, parent=self.parent) or ""

    def ask_save_file(self, title: str, initial_name: str,
                      filetypes: Sequence[Tuple[str, str]], default_ext: str) -> str:
        return filedialog.asksaveasfilename(title=title, initialfile=initial_name,
                                            filetypes=list(filetypes), defaultextension=default_ext,
                                            parent=self.parent) or ""
