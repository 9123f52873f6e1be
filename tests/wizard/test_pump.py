"""The event pump: bounded batches, Progress coalescing, contained handler errors."""
from __future__ import annotations

import queue
import sys
from typing import Any, List

from engine.events import EngineEvent, LogLine, Progress
from wizard import pump as pump_mod
from wizard.pump import EventPump, _coalesce

from tests.wizard.conftest import wait_until


def test_coalesce_keeps_newest_progress_per_job_and_order_of_the_rest() -> None:
    batch: List[EngineEvent] = [Progress(1, 1, 10), LogLine(1, "info", "a"), Progress(2, 5, 9),
                                Progress(1, 2, 10), LogLine(2, "info", "b"), Progress(1, 3, 10)]
    kept = _coalesce(batch)
    assert kept == [LogLine(1, "info", "a"), Progress(2, 5, 9), LogLine(2, "info", "b"),
                    Progress(1, 3, 10)]


def test_batches_are_bounded_and_everything_arrives(root: Any) -> None:
    events: "queue.Queue[EngineEvent]" = queue.Queue()
    seen: List[EngineEvent] = []
    batches: List[int] = []
    p = EventPump(root, events, seen.append, lambda *e: None,
                  after_batch=lambda: batches.append(len(seen)))
    for i in range(523):
        events.put(LogLine(7, "info", str(i)))
    assert p.poll_now() == pump_mod.BATCH
    p.start()
    wait_until(lambda: len(seen) == 523, root, timeout=5, what="drain")
    p.stop()
    assert [e.text for e in seen] == [str(i) for i in range(523)]  # type: ignore[attr-defined]
    steps = [b - a for a, b in zip([0] + batches, batches)]
    assert max(steps) <= pump_mod.BATCH


def test_a_failing_handler_is_reported_and_polling_goes_on(root: Any) -> None:
    events: "queue.Queue[EngineEvent]" = queue.Queue()
    reported: List[Any] = []
    handled: List[str] = []

    def dispatch(event: EngineEvent) -> None:
        if event.text == "boom":  # type: ignore[attr-defined]
            raise RuntimeError("handler broke")
        handled.append(event.text)  # type: ignore[attr-defined]

    p = EventPump(root, events, dispatch, lambda *info: reported.append(info))
    p.start()
    for text in ("one", "boom", "two"):
        events.put(LogLine(1, "info", text))
    wait_until(lambda: handled == ["one", "two"], root, timeout=5, what="dispatch")
    events.put(LogLine(1, "info", "three"))
    wait_until(lambda: handled[-1:] == ["three"], root, timeout=5, what="next tick")
    p.stop()
    assert len(reported) == 1 and reported[0][0] is RuntimeError
    assert not p.running


def test_stop_cancels_the_pending_poll(root: Any) -> None:
    events: "queue.Queue[EngineEvent]" = queue.Queue()
    seen: List[EngineEvent] = []
    p = EventPump(root, events, seen.append, lambda *e: print(e, file=sys.stderr))
    p.start()
    p.stop()
    events.put(LogLine(1, "info", "late"))
    root.after(150, lambda: None)
    for _ in range(20):
        root.update()
    assert seen == []
