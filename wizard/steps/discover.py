"""Step 1: optionally search the network for DICOM systems; picking one fills step 2."""
from __future__ import annotations

import socket
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Dict, Optional

from engine.events import EngineEvent, JobFailed, JobFinished, NodeFound, Progress

from .. import fmt, services, theme
from ..widgets import Form, ScrolledTree, WrapLabel, pack_button
from .base import CANCELLING, DONE, IDLE, WORKING, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..controller import WizardState

# Widths in ems; every heading must stay readable at 1024x768 (see test_app.py).
COLUMNS = (("host", "Computer", 8), ("port", "Port", 3.5), ("dicom", "DICOM?", 7),
           ("aet", "Accepted AE title", 9), ("ms", "Reply", 3.5), ("detail", "Notes", 12))


def guess_subnet() -> str:
    """This computer's /24 network, e.g. ``192.168.1.0/24`` (only a suggestion to edit).

    Read from the local host name's addresses: nothing is sent on the network.
    """
    address = "127.0.0.1"
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        found = [info[4][0] for info in infos if not info[4][0].startswith("127.")]
        if found:
            address = found[0]
    except OSError:
        pass
    return ".".join(address.split(".")[:3]) + ".0/24"


class DiscoverStep(Step):
    title = "Find the PACS"
    heading = "Find the new PACS (optional)"
    intro = ("If you already know the PACS address, press Skip. Otherwise search this network for "
             "computers that answer DICOM, then pick one. Only search networks your IT "
             "department allows you to search.")

    def build(self, body: ttk.Frame) -> None:
        self.subnet = tk.StringVar(self, guess_subnet())
        self.extra = tk.StringVar(self, "")
        self.ports = tk.StringVar(self, ", ".join(str(p) for p in services.default_ports()))
        self.threads = tk.IntVar(self, 32)
        self.form = Form(body)
        self.form.pack(fill="x")
        self.subnet_entry = self.form.add("subnet", "Network to search",
                                          ttk.Entry(self.form, textvariable=self.subnet, width=22),
                                          "like 192.168.1.0/24")
        self.form.add("extra", "Other computers", ttk.Entry(self.form, textvariable=self.extra,
                                                            width=30),
                      "names or addresses, with commas")
        self.form.add("ports", "Ports", ttk.Entry(self.form, textvariable=self.ports, width=22))
        self.form.add("threads", "Checks at once", ttk.Spinbox(
            self.form, from_=1, to=128, textvariable=self.threads, width=5))
        self._build_actions(body)
        self.results = ScrolledTree(body, COLUMNS, height=7)
        self.results.pack(fill="both", expand=True, pady=(theme.ems(self, 0.4), 0))
        self.results.tree.bind("<Double-1>", lambda _e: self.use_selected())
        self.results.tree.bind("<Return>", lambda _e: self.use_selected())
        self.results.tree.bind("<<TreeviewSelect>>", lambda _e: self._update_use_button())
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(theme.ems(self, 0.4), 0))
        self.use_button = pack_button(row, "Use this PACS", self.use_selected, "Accent.TButton")
        ttk.Label(row, text="Double-click a row or press Enter to use it.",
                  style="Hint.TLabel").pack(side="left")
        self._nodes: Dict[str, NodeFound] = {}
        self._job = None  # type: Optional[object]
        self._update_use_button()

    def _build_actions(self, body: ttk.Frame) -> None:
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(theme.ems(self, 0.3), 0))
        self.search_button = pack_button(row, "Search the network", self.start_search)
        self.stop_button = pack_button(row, "Stop", self.stop_search)
        self.progress = ttk.Progressbar(row, mode="determinate", length=theme.ems(self, 14))
        self.progress.pack(side="left", padx=theme.ems(self, 0.5))
        self.status = WrapLabel(row, text="", style="Hint.TLabel")
        self.status.pack(side="left", fill="x", expand=True)
        self.stop_button.state(["disabled"])

    # -- step contract ----------------------------------------------------------------------
    @property
    def next_label(self) -> str:
        return "Skip" if self.controller.state.chosen_node is None else "Next"

    @property
    def busy(self) -> bool:
        return False  # a search may be abandoned at any time: leaving the page stops it

    def first_focus(self) -> Optional[tk.Widget]:
        return self.search_button

    def shutdown(self) -> None:
        self.stop_search()

    # -- searching ------------------------------------------------------------------------
    def start_search(self) -> None:
        try:
            threads = max(1, min(128, int(self.threads.get())))
        except (ValueError, tk.TclError):
            self.form.set_error("threads", "Type a whole number, for example 32.")
            return
        self.form.set_error("threads", None)
        self.results.clear()
        self._nodes.clear()
        self.progress.configure(value=0, maximum=1)
        self.status.configure(text="Searching…", style="Hint.TLabel")
        work = services.discovery_work(self.subnet.get(), self.extra.get(), self.ports.get(),
                                       threads, self.controller.state.settings)
        self._job = self.controller.start_job("discovery", work, self)
        self.search_button.state(["disabled"])
        self.stop_button.state(["!disabled"])
        self.set_work_state(WORKING)

    def stop_search(self) -> None:
        if self._job is not None and self.work_state == WORKING:
            self._job.cancel()  # type: ignore[attr-defined]
            self.status.configure(text="Stopping…")
            self.set_work_state(CANCELLING)

    def handle_event(self, event: EngineEvent) -> None:
        if isinstance(event, NodeFound):
            self._add_node(event)
        elif isinstance(event, Progress):
            total = event.total or max(event.done, 1)
            self.progress.configure(maximum=total, value=event.done)
            self.status.configure(text="Checked %s of %s · %s" % (
                "{:,}".format(event.done), "{:,}".format(total) if event.total else "?",
                fmt.count(len(self._nodes), "answer")))
        elif isinstance(event, (JobFinished, JobFailed)):
            self._finished(event)

    def _add_node(self, node: NodeFound) -> None:
        key = "%s:%d" % (node.host, node.port)
        if key in self._nodes:
            return
        self._nodes[key] = node
        answers = "Yes" if node.dicom else "Port open only"
        values = (node.host, node.port, answers, node.accepted_aet or "—",
                  "%d ms" % node.elapsed_ms if node.elapsed_ms else "", node.detail)
        self.results.tree.insert("", "end", iid=key, values=values,
                                 tags=("ok",) if node.dicom else ("muted",))

    def _finished(self, event: EngineEvent) -> None:
        self._job = None
        self.progress.configure(value=self.progress.cget("maximum"))
        self.search_button.state(["!disabled"])
        self.stop_button.state(["disabled"])
        self.set_work_state(DONE if isinstance(event, JobFinished) else IDLE)
        if isinstance(event, JobFailed):
            self.status.configure(text="The search stopped: %s" % event.message,
                                  style="Error.TLabel")
            return
        dicom = sum(1 for n in self._nodes.values() if n.dicom)
        prefix = "Search stopped. " if getattr(event, "cancelled", False) else "Search finished. "
        self.status.configure(style="Hint.TLabel", text=prefix + (
            "%s answered DICOM. Pick one below." % fmt.count(dicom, "computer") if dicom else
            "No computer answered DICOM. Check the network and ports, or press Skip."))
        children = self.results.tree.get_children()
        if children:
            self.results.tree.selection_set(children[0])
            self.results.tree.focus(children[0])

    # -- choosing -------------------------------------------------------------------------
    def _update_use_button(self) -> None:
        node = self.selected_node()
        self.use_button.state(["!disabled"] if node is not None else ["disabled"])

    def selected_node(self) -> Optional[NodeFound]:
        selection = self.results.tree.selection()
        return self._nodes.get(selection[0]) if selection else None

    def use_selected(self) -> None:
        node = self.selected_node()
        if node is None:
            return
        self.controller.state.chosen_node = node
        self.controller.go_next()

    def on_leave(self, state: "WizardState") -> None:
        self.stop_search()
