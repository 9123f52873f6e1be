"""Parallel associations, back-off on a busy PACS, the time window and the rate cap."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from engine.events import LogLine
from engine.pacing import Clock, TimeWindow
from tests.corpus import make_dicom
from tests.engine.helpers import migrate, records
from tests.peers import free_port

pytestmark = pytest.mark.network


class FakeClock(Clock):
    """Time that only moves when someone sleeps: hours of schedule in milliseconds."""

    def __init__(self, start: dt.datetime) -> None:
        self._lock = threading.Lock()
        self._t = 0.0
        self.start = start
        self.slept = 0.0

    def now(self) -> dt.datetime:
        with self._lock:
            return self.start + dt.timedelta(seconds=self._t)

    def monotonic(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds, cancelled) -> None:
        with self._lock:
            self._t += seconds
            self.slept += seconds
        time.sleep(0.001)


class CountingSCP:
    def __init__(self, answer=lambda n: 0x0000, delay=0.0):
        self.answer, self.delay = answer, delay
        self.lock = threading.Lock()
        self.open_now = self.max_open = self.calls = 0
        self.received = []
        ae = AE(ae_title="COUNT")
        ae.supported_contexts = StoragePresentationContexts
        self.port = free_port()
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_ESTABLISHED, self._opened),
                    (evt.EVT_RELEASED, self._closed), (evt.EVT_ABORTED, self._closed)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=handlers)

    def _opened(self, event):
        with self.lock:
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)

    def _closed(self, event):
        with self.lock:
            self.open_now -= 1

    def _store(self, event):
        time.sleep(self.delay)
        with self.lock:
            self.calls += 1
            status = self.answer(self.calls)
            if status == 0:
                self.received.append(str(event.request.AffectedSOPInstanceUID))
        return status


@pytest.fixture
def scp_factory():
    made = []

    def make(**kw):
        made.append(CountingSCP(**kw))
        return made[-1]
    yield make
    for s in made:
        s.server.shutdown()


def _tree(tmp_path, n, studies=8):
    src = tmp_path / "src"
    study_uids = ["1.2.826.0.1.3680043.8.498.55.%d" % i for i in range(studies)]
    for i in range(n):
        make_dicom(src / ("d%d" % (i % 5)) / ("f%03d.dcm" % i),
                   StudyInstanceUID=study_uids[i % studies])
    return src


def test_four_associations_really_run_at_once(tmp_path, scp_factory):
    scp = scp_factory(delay=0.02)
    src = _tree(tmp_path, 120)
    result, _, terminal = migrate(src, scp.port, "COUNT", tmp_path / "w", associations=4,
                                  batch_size=10)
    assert terminal.exit_code == 0
    assert scp.max_open == 4
    assert len(scp.received) == 120 and len(set(scp.received)) == 120  # exactly once each


def test_busy_destination_backs_off_and_recovers(tmp_path, scp_factory):
    scp = scp_factory(answer=lambda n: 0xA700 if 5 <= n <= 12 else 0x0000)
    src = _tree(tmp_path, 150)
    clock = FakeClock(dt.datetime(2026, 1, 5, 22, 0))
    result, events, terminal = migrate(src, scp.port, "COUNT", tmp_path / "w", associations=4,
                                       batch_size=10, retries=10, clock=clock)
    texts = [e.text for e in events if isinstance(e, LogLine)]
    assert any("using 2 connection(s) instead of 4" in t for t in texts), texts
    assert any("keeping up again" in t for t in texts), texts
    assert terminal.exit_code == 0 and result.counts.get("sent") == 150
    assert len(set(scp.received)) == 150 and len(scp.received) == 150  # nothing lost or doubled


def test_time_window_waits_with_a_controllable_clock(tmp_path, scp_factory):
    scp = scp_factory()
    src = _tree(tmp_path, 6)
    clock = FakeClock(dt.datetime(2026, 1, 5, 12, 0))  # 12:00, window opens at 12:30
    result, events, terminal = migrate(src, scp.port, "COUNT", tmp_path / "w",
                                       window="12:30-13:00", clock=clock)
    assert terminal.exit_code == 0 and len(scp.received) == 6
    assert 1790 <= clock.slept <= 1830
    notices = [e.text for e in events if isinstance(e, LogLine) and e.level == "notice"]
    waiting = [i for i, t in enumerate(notices) if "waiting until 12:30" in t]
    opened = [i for i, t in enumerate(notices) if "window 12:30-13:00 is open" in t]
    assert waiting and opened and waiting[0] < opened[0], notices


def test_window_crossing_midnight():
    w = TimeWindow("19:00-06:30")
    at = dt.datetime(2026, 1, 5, 3, 0)
    assert w.is_open(at) and w.is_open(at.replace(hour=23))
    assert not w.is_open(at.replace(hour=12))
    assert w.seconds_until_open(at.replace(hour=18, minute=0)) == 3600
    assert TimeWindow("08:00-17:00").seconds_until_open(dt.datetime(2026, 1, 5, 18, 0)) == 14 * 3600


def test_rate_cap_with_a_controllable_clock(tmp_path, scp_factory):
    scp = scp_factory()
    src = _tree(tmp_path, 40)
    total = sum(p.stat().st_size for p in src.rglob("*.dcm"))
    clock = FakeClock(dt.datetime(2026, 1, 5, 12, 0))
    rate = 0.005  # MB/s, so 40 small files take minutes of (fake) time
    result, _, terminal = migrate(src, scp.port, "COUNT", tmp_path / "w", max_mbps=rate,
                                  clock=clock)
    assert terminal.exit_code == 0
    expected = (total - rate * 1e6) / (rate * 1e6)  # minus the one-second burst
    assert expected * 0.95 <= clock.slept <= expected * 1.1


def test_pause_resume_and_cancel(tmp_path, scp_factory):
    scp = scp_factory(delay=0.01)
    src = _tree(tmp_path, 200)
    from engine.config import Destination, Settings
    from engine.jobs import start_job
    from engine.migrate import run_migration
    events = []
    handle = start_job("migrate", lambda c: run_migration(
        str(src), Destination("127.0.0.1", scp.port, "COUNT"), Settings(batch_size=10), c,
        work_dir=str(tmp_path / "w"), associations=4), events.append)
    while scp.calls < 30:
        time.sleep(0.01)
    handle.pause()
    time.sleep(0.3)  # let the files in flight finish
    paused_at = scp.calls
    time.sleep(1.0)
    assert scp.calls == paused_at  # nothing leaves while paused
    handle.resume()
    while scp.calls < paused_at + 30:
        time.sleep(0.01)
    t0 = time.monotonic()
    handle.cancel()
    handle.join(10)
    assert not handle.is_alive() and time.monotonic() - t0 < 2
    rows = records(tmp_path / "w")
    assert len(set(scp.received)) == len(scp.received)  # nothing sent twice
    assert {r.sop_instance_uid for r in rows if r.status == "sent"} == set(scp.received)


def test_slow_answers_back_off_only_when_sustained():
    """One slow answer (a big file, a disk flush) must not bench connections; a run of them must,
    and healthy answers bring the connections back."""
    from engine.pacing import Governor

    said = []
    clock = FakeClock(dt.datetime(2026, 1, 1, 12, 0))
    gov = Governor(4, said.append, clock, recover_after=5)
    for _ in range(25):
        gov.record(0.01, busy=False)
    gov.record(2.0, busy=False)  # a single outlier
    gov.record(0.01, busy=False)
    assert gov.allowed == 4 and not said
    for _ in range(3):
        gov.record(2.0, busy=False)
    assert gov.allowed == 2
    assert "answering slowly" in said[-1] and "2 connection(s) instead of 4" in said[-1]
    clock.sleep(6, lambda: False)
    for _ in range(10):
        gov.record(0.01, busy=False)
    assert gov.allowed == 4
    assert "keeping up again" in said[-1]


# -- where the senders run ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fork", "spawn", "threads"])
def test_every_sender_mode_sends_each_file_exactly_once(tmp_path, scp_factory, monkeypatch,
                                                        mode):
    """Child processes are the default (fork here, spawn on Windows); threads are the fallback
    where no child process can be started."""
    from engine.jobs import SENDERS_ENV
    monkeypatch.setenv(SENDERS_ENV, mode)
    scp = scp_factory(delay=0.005)
    src = _tree(tmp_path, 60)
    result, _, terminal = migrate(src, scp.port, "COUNT", tmp_path / "w", associations=2,
                                  batch_size=10)
    assert terminal.exit_code == 0, terminal.summary
    assert result.senders == ("threads" if mode == "threads" else "processes")
    assert scp.max_open == 2
    assert sorted(scp.received) == sorted(set(scp.received)) and len(scp.received) == 60
    assert {r.status for r in records(tmp_path / "w")} == {"sent"}


@pytest.mark.parametrize("mode", ["fork", "threads"])
def test_stop_while_waiting_for_the_window_sends_nothing(tmp_path, scp_factory, monkeypatch,
                                                         mode):
    """A Stop pressed while a child waits for the window must reach the child before the
    parent lets it go on (it once sent one file after Stop)."""
    from engine.config import Destination, Settings
    from engine.jobs import SENDERS_ENV, run_job
    from engine.migrate import run_migration
    from engine import procsend
    monkeypatch.setenv(SENDERS_ENV, mode)
    handle = procsend.ProcessSender._handle

    def slow_parent(self, message):
        handle(self, message)
        if message[0] == "permit":
            time.sleep(0.5)  # the parent loses the CPU right after letting the child go on
    monkeypatch.setattr(procsend.ProcessSender, "_handle", slow_parent)
    scp = scp_factory()
    src = _tree(tmp_path, 4)
    controls = []

    def stop_when_waiting(event):
        if isinstance(event, LogLine) and "waiting until 12:30" in event.text:
            controls[0].cancel()

    def work(control):
        controls.append(control)
        return run_migration(str(src), Destination("127.0.0.1", scp.port, "COUNT"), Settings(),
                             control, work_dir=str(tmp_path / "w"), associations=1,
                             window="12:30-13:00", clock=FakeClock(dt.datetime(2026, 1, 5, 12)))
    terminal = run_job("migrate", work, stop_when_waiting)
    assert terminal.result.senders == ("threads" if mode == "threads" else "processes")
    assert scp.received == [] and scp.calls == 0
    assert not [r for r in records(tmp_path / "w") if r.status == "sent"]


def test_a_killed_sender_process_stops_the_run_with_a_reason_and_a_rerun_completes(
        tmp_path, scp_factory):
    import multiprocessing
    import os
    import signal

    from engine.config import Destination, Settings
    from engine.jobs import start_job
    from engine.migrate import run_migration

    scp = scp_factory(delay=0.02)
    src = _tree(tmp_path, 100)
    events = []

    def work(control):
        return run_migration(str(src), Destination("127.0.0.1", scp.port, "COUNT"),
                             Settings(batch_size=5, backoff_base_s=0.05), control,
                             work_dir=str(tmp_path / "w"), associations=2)

    handle = start_job("migrate", work, events.append)
    deadline = time.monotonic() + 30
    while scp.calls < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    children = [p for p in multiprocessing.active_children() if p.name.startswith("sender-")]
    assert len(children) == 2
    os.kill(children[0].pid, signal.SIGKILL)
    handle.join(30)
    assert not handle.is_alive()
    terminal = events[-1]
    assert terminal.exit_code == 3
    assert "ended unexpectedly" in terminal.result.stopped
    assert "sent on the next run" in terminal.result.stopped
    first = len(scp.received)
    assert first < 100

    result, _, again = migrate(src, scp.port, "COUNT", tmp_path / "w", associations=2,
                               batch_size=5)
    assert again.exit_code == 0, again.summary
    assert set(scp.received) == {r.sop_instance_uid for r in records(tmp_path / "w")}
    assert {r.status for r in records(tmp_path / "w")} == {"sent"}
    assert len(set(scp.received)) == 100
    # Sent twice at most: what the killed child had in flight, and answers that had arrived
    # at the other child but were not yet recorded when the run stopped.
    assert len(scp.received) - 100 <= 2 * 2


def test_a_sender_process_killed_while_idle_stops_the_run(tmp_path, scp_factory, monkeypatch):
    """Killed between batches, a child is found dead when it is handed the next batch: the run
    stops with the reason (it used to lose that batch and report success)."""
    import multiprocessing
    import os
    import signal

    from engine import migrate as migrate_module

    scp = scp_factory(delay=0.01)
    src = _tree(tmp_path, 100)
    real_read = migrate_module.read_header
    calls = [0]

    def read_then_kill(path, *args):
        calls[0] += 1
        if calls[0] == 40:  # both children idle: everything submitted so far has arrived
            seen, settled = -1, time.monotonic()
            while time.monotonic() - settled < 0.5:
                if scp.calls != seen:
                    seen, settled = scp.calls, time.monotonic()
                time.sleep(0.02)
            child = [p for p in multiprocessing.active_children()
                     if p.name.startswith("sender-")][0]
            os.kill(child.pid, signal.SIGKILL)
            child.join(5)
        return real_read(path, *args)

    monkeypatch.setattr(migrate_module, "read_header", read_then_kill)
    result, _, terminal = migrate(src, scp.port, "COUNT", tmp_path / "w", associations=2,
                                  batch_size=5)
    assert terminal.exit_code == 3, terminal.summary
    assert "ended unexpectedly" in result.stopped and "killed" in result.stopped
    assert result.associations >= 2  # the killed child's association is counted too
    assert len(scp.received) < 100
    monkeypatch.setattr(migrate_module, "read_header", real_read)
    _, _, again = migrate(src, scp.port, "COUNT", tmp_path / "w", associations=2, batch_size=5)
    assert again.exit_code == 0, again.summary
    assert len(set(scp.received)) == 100
    assert {r.status for r in records(tmp_path / "w")} == {"sent"}


class StuckClock(Clock):
    """Always 12:00: a window that opens at 12:30 never does; sleeps are real."""

    def now(self) -> dt.datetime:
        return dt.datetime(2026, 1, 5, 12)


@pytest.mark.parametrize("associations", [1, 2])
def test_a_sender_process_killed_while_waiting_for_the_window_stops_the_run(
        tmp_path, scp_factory, associations):
    """The parent answers a child's 'may I send' only when the window opens; a child killed
    meanwhile must stop the run at once, not hours later at opening time."""
    import multiprocessing
    import os
    import signal

    from engine.config import Destination, Settings
    from engine.jobs import start_job
    from engine.migrate import run_migration

    scp = scp_factory()
    src = _tree(tmp_path, 10)
    events = []
    waiting = threading.Event()

    def sink(event):
        events.append(event)
        if isinstance(event, LogLine) and "waiting until 12:30" in event.text:
            waiting.set()

    def work(control):
        return run_migration(str(src), Destination("127.0.0.1", scp.port, "COUNT"),
                             Settings(batch_size=2), control, work_dir=str(tmp_path / "w"),
                             associations=associations, window="12:30-13:00",
                             clock=StuckClock())

    handle = start_job("migrate", work, sink)
    assert waiting.wait(30)
    time.sleep(0.5)  # every child is asking by now
    child = [p for p in multiprocessing.active_children() if p.name.startswith("sender-")][0]
    os.kill(child.pid, signal.SIGKILL)
    handle.join(30)
    assert not handle.is_alive(), "the run went on waiting for the window"
    assert events[-1].exit_code == 3 and "ended unexpectedly" in events[-1].result.stopped
    assert scp.calls == 0
