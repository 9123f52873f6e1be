"""The copy page with 100,000 files: the window stays responsive and shows a capped table."""
from __future__ import annotations

import _tkinter
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import pytest

from engine.config import Destination
from engine.events import FileDone, JobFinished, Outcome, Progress
from engine.jobs import Control
from wizard import services
from wizard.results_table import CappedTable

N_FILES = 100000
FAIL_EVERY = 250  # 400 failures


@dataclass
class FakeMigrationResult:
    """Shape of engine.migrate.MigrationResult (only what the page reads)."""

    counts: Dict[str, int]
    failure_summary: List[Tuple[str, int]] = field(default_factory=list)
    integrity_line: str = "Source check: all files unchanged."
    stopped: str = ""


def flood_work(*_args: Any, **_kwargs: Any) -> Any:
    """TEST DOUBLE for the migration: emits 100,000 results as fast as a thread can."""
    def work(control: Control) -> JobFinished:
        for i in range(N_FILES):
            failed = i % FAIL_EVERY == 0
            control.emit(FileDone(control.job_id, "/src/P%03d/S/%06d.dcm" % (i % 500, i),
                                  Outcome.FAILED if failed else Outcome.SENT,
                                  "refused by the PACS" if failed else "", "1.2.3.%d" % i,
                                  "DOE^JOHN"))
            if i % 100 == 0:
                control.emit(Progress(control.job_id, i, N_FILES, i * 1000, 900.0, 0.9, 30.0,
                                      "/src/P%03d" % (i % 500)))
        fails = N_FILES // FAIL_EVERY
        counts = {"sent": N_FILES - fails, "failed": fails}
        return JobFinished(control.job_id, "done", counts,
                           result=FakeMigrationResult(counts, [("refused by the PACS", fails)]))
    return work


@pytest.mark.slow
def test_100k_results_keep_the_window_responsive(make_app: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "migration_work", flood_work)
    app = make_app()
    c = app.controller
    c.state.destination = Destination("127.0.0.1", 104, "PACS")
    c.state.source = "/src"
    c.go_to(type(c.steps[3]))
    copy = c.current
    beats: List[float] = []

    def heartbeat() -> None:  # a timer, like a click or a redraw would be, must keep firing
        beats.append(time.monotonic())
        if copy.busy:
            app.after(20, heartbeat)

    copy.start()
    app.after(20, heartbeat)
    worst = 0.0
    started = time.monotonic()
    while copy.busy:  # what mainloop does: one event or idle round at a time
        tick = time.monotonic()
        if not app.tk.dooneevent(_tkinter.ALL_EVENTS | _tkinter.DONT_WAIT):
            time.sleep(0.001)
        worst = max(worst, time.monotonic() - tick)
        assert time.monotonic() - started < 120, "the page did not keep up"
    elapsed = time.monotonic() - started
    rows = len(copy.table.tree.get_children())
    fails = N_FILES // FAIL_EVERY
    assert copy.table.total == N_FILES
    assert rows == 1000 + fails  # newest 1,000 plus every failure
    assert "newest 1,000 of 100,000" in copy.table_note.cget("text")
    assert copy.notebook.tab(copy.reasons, "text") == "Problems by reason (400)"
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    # Generous bounds (the machine may be busy): they catch a frozen page, where an uncapped
    # table would block for many seconds, not a slow one.
    assert worst < 1.0, "one event took %.2f s" % worst
    assert len(beats) > 10 and max(gaps) < 2.0, "timers starved: %.2f s gap" % max(gaps)
    print("100k results in %.1f s; longest event %.0f ms; longest timer gap %.0f ms"
          % (elapsed, worst * 1000, max(gaps) * 1000))


def test_capped_table_keeps_failures_up_to_their_cap(root: Any) -> None:
    table = CappedTable(root, (("a", "A", 5),), keep_recent=10, keep_failures=3)
    for i in range(50):
        table.add((i,), "bad" if i % 5 == 0 else "ok", failure=i % 5 == 0)
        if i % 7 == 0:
            table.flush()
    table.flush()
    values = [table.tree.item(i, "values")[0] for i in table.tree.get_children()]
    assert values[:3] == ["0", "5", "10"]  # the first three failures stay
    assert values[3:] == [str(i) for i in range(50) if i % 5][-10:]
    assert table.total == 50 and table.failures_total == 10 and table.shown == 13
    table.reset()
    assert table.tree.get_children() == () and table.note() == ""
    table.destroy()
