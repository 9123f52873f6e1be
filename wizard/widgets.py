"""Small reusable widgets: the step sidebar, a scrolled tree, result banners, form rows."""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import theme

BANNER_KINDS = ("Good", "Bad", "Warn", "Info", "Busy")


class StepSidebar(ttk.Frame):
    """Numbered step names; the current one is highlighted, earlier ones marked done."""

    def __init__(self, master: tk.Misc, app_title: str, titles: Sequence[str]) -> None:
        super().__init__(master, style="Sidebar.TFrame", padding=theme.ems(master, 0.5))
        ttk.Label(self, text=app_title.replace(" ", "\n", 1), style="SidebarTitle.TLabel",
                  justify="left").pack(anchor="w", pady=(0, theme.ems(master, 1)))
        self._titles = list(titles)
        self._labels: List[ttk.Label] = []
        for number, title in enumerate(titles, 1):
            label = ttk.Label(self, text="%d  %s" % (number, title), style="Sidebar.TLabel",
                              padding=(theme.ems(master, 0.4), theme.ems(master, 0.35)))
            label.pack(fill="x", anchor="w")
            self._labels.append(label)

    def set_current(self, index: int) -> None:
        # A tick as well as a colour: the state must not depend on seeing colours.
        for i, label in enumerate(self._labels):
            number = "✓" if i < index else str(i + 1)
            style = ("SidebarCurrent" if i == index else
                     "SidebarDone" if i < index else "Sidebar") + ".TLabel"
            label.configure(style=style, text="%s  %s" % (number, self._titles[i]))

    def label_styles(self) -> List[str]:
        return [str(label.cget("style")) for label in self._labels]


class ScrolledTree(ttk.Frame):
    """A Treeview with scrollbars; ``columns`` is a list of (id, heading, width_in_ems)."""

    def __init__(self, master: tk.Misc, columns: Sequence[Tuple[str, str, float]],
                 tree_heading: Optional[Tuple[str, float]] = None, height: int = 8,
                 selectmode: Any = "browse") -> None:
        super().__init__(master)
        show: Any = "tree headings" if tree_heading else "headings"
        self.tree = ttk.Treeview(self, columns=[c[0] for c in columns], show=show,
                                 height=height, selectmode=selectmode)
        if tree_heading:
            self.tree.heading("#0", text=tree_heading[0], anchor="w")
            self.tree.column("#0", width=theme.ems(self, tree_heading[1]), stretch=True)
        for cid, heading, width in columns:
            self.tree.heading(cid, text=heading, anchor="w")
            self.tree.column(cid, width=theme.ems(self, width), minwidth=theme.ems(self, 2),
                             stretch=True, anchor="w")
        yscroll = ttk.Scrollbar(self, orient="vertical", command=self.tree.yview)
        xscroll = ttk.Scrollbar(self, orient="horizontal", command=self.tree.xview)
        self.tree.configure(yscrollcommand=yscroll.set, xscrollcommand=xscroll.set)
        self.tree.grid(row=0, column=0, sticky="nsew")
        yscroll.grid(row=0, column=1, sticky="ns")
        xscroll.grid(row=1, column=0, sticky="ew")
        self.rowconfigure(0, weight=1)
        self.columnconfigure(0, weight=1)
        theme.tag_rows(self.tree)

    def clear(self) -> None:
        children = self.tree.get_children()
        if children:
            self.tree.delete(*children)


class WrapLabel(ttk.Label):
    """A label whose text wraps at whatever width the layout gives it (pack it with fill="x").

    A fixed wraplength would either waste space or push the window wider than the screen.
    """

    def __init__(self, master: tk.Misc, **kwargs: object) -> None:
        kwargs.setdefault("justify", "left")
        super().__init__(master, wraplength=theme.ems(master, 20), **kwargs)  # type: ignore
        self.bind("<Configure>", self._rewrap, add="+")

    def _rewrap(self, event: "tk.Event[tk.Misc]") -> None:
        pad = theme.ems(self, 1.2)
        width = max(event.width - pad, theme.ems(self, 10))
        if abs(int(self.cget("wraplength")) - width) > 2:
            self.configure(wraplength=width)


class Banner(WrapLabel):
    """A coloured result line: ``show("Good", "It works.")``; ``hide()`` leaves no gap."""

    def __init__(self, master: tk.Misc) -> None:
        super().__init__(master, style="InfoBanner.TLabel", padding=theme.ems(master, 0.5))
        self.kind = ""

    def show(self, kind: str, text: str) -> None:
        if kind not in BANNER_KINDS:
            raise ValueError("unknown banner kind %r" % kind)
        self.kind = kind
        self.configure(style=kind + "Banner.TLabel", text=text)

    def hide(self) -> None:
        self.kind = ""
        self.configure(style="TLabel", text="")

    @property
    def text(self) -> str:
        return str(self.cget("text"))


class Form(ttk.Frame):
    """A two-column form: label, input, and an error line under each input."""

    def __init__(self, master: tk.Misc) -> None:
        super().__init__(master)
        self.columnconfigure(2, weight=1)  # spare width goes after the hints, not between
        self._row = 0
        self.errors: Dict[str, ttk.Label] = {}

    def add(self, key: str, label: str, widget: tk.Widget, hint: str = "") -> tk.Widget:
        pad = theme.ems(self, 0.3)
        ttk.Label(self, text=label).grid(row=self._row, column=0, sticky="w", padx=(0, pad * 3),
                                         pady=(pad, 0))
        widget.grid(row=self._row, column=1, sticky="w", pady=(pad, 0))
        if hint:
            ttk.Label(self, text=hint, style="Hint.TLabel").grid(row=self._row, column=2,
                                                                  sticky="w", padx=pad * 2)
        error = ttk.Label(self, text="", style="Error.TLabel")
        error.grid(row=self._row + 1, column=1, columnspan=2, sticky="w")
        error.grid_remove()  # takes no room until there is something to say
        self.errors[key] = error
        self._row += 2
        return widget

    def error_text(self, key: str) -> str:
        """The error shown under ``key`` ("" when none is shown)."""
        return str(self.errors[key].cget("text"))

    def set_error(self, key: str, text: Optional[str]) -> None:
        label = self.errors[key]
        label.configure(text=text or "")
        if text:
            label.grid()
        else:
            label.grid_remove()


def pack_button(row: ttk.Frame, text: str, command: object, style: str = "TButton",
                underline: int = -1) -> ttk.Button:
    button = ttk.Button(row, text=text, command=command, style=style,  # type: ignore[arg-type]
                        underline=underline)
    button.pack(side="left", padx=(0, theme.ems(row, 0.5)))
    return button
