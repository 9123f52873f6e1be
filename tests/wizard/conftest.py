"""Fixtures for driving the real wizard under a (virtual) display.

- an Xvfb server is started for the session when ``DISPLAY`` is unset (skipped cleanly when
  Xvfb is not installed);
- ``root``: one plain Tk root for widget-level tests;
- ``make_app``: a real ``WizardApp`` with its settings in a temp folder and scripted dialogs;
- every test fails if any Tk callback (or pump dispatch) raised.
"""
from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Iterator, List, Optional, Tuple

import pytest



def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture(scope="session", autouse=True)
def display() -> Iterator[str]:
    """A display for Tk: the existing one, or a private Xvfb for this test session."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if not xvfb:
        pytest.skip("no DISPLAY and Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()  # Xvfb writes the display number once it is ready
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    os.environ["DISPLAY"] = ":" + number
    try:
        yield os.environ["DISPLAY"]
    finally:
        del os.environ["DISPLAY"]
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def root(display: str) -> Iterator[Any]:
    import tkinter as tk

    try:
        tk_root = tk.Tk()
    except tk.TclError as exc:
        pytest.skip("Tk cannot open a window: %s" % exc)
    tk_root.withdraw()
    from wizard import theme

    theme.apply_theme(tk_root)
    yield tk_root
    tk_root.destroy()


@pytest.fixture(autouse=True)
def fail_on_tk_callback_error(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[str]]:
    """Record every exception that reaches Tk's report_callback_exception; fail the test."""
    import tkinter as tk
    import traceback

    from wizard.app import WizardApp

    errors: List[str] = []
    original = WizardApp.report_callback_exception

    def record_plain(self: Any, exc: Any, val: Any, tb: Any) -> None:
        errors.append("".join(traceback.format_exception(exc, val, tb)))

    def record_app(self: Any, exc: Any, val: Any, tb: Any) -> None:
        errors.append("".join(traceback.format_exception(exc, val, tb)))
        original(self, exc, val, tb)  # still exercise the app's own handler

    monkeypatch.setattr(tk.Tk, "report_callback_exception", record_plain)
    monkeypatch.setattr(WizardApp, "report_callback_exception", record_app)
    yield errors
    if errors:
        pytest.fail("Tk callback error(s):\n" + "\n".join(errors))


def pump(widget: Any, seconds: float = 0.0) -> None:
    end = time.monotonic() + seconds
    while True:
        widget.update()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def wait_until(predicate: Callable[[], Any], widget: Any, timeout: float = 20.0,
               what: str = "") -> Any:
    """Run the Tk loop until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        widget.update()
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail("timed out after %.0f s waiting for %s" % (timeout, what or predicate))


class ScriptedDialogs:
    """Stands in for message boxes and file pickers: answers are queued by the test, and every
    question is recorded. An unexpected question raises (and so fails the test)."""

    def __init__(self) -> None:
        self.yes_no: Deque[bool] = deque()
        self.paths: Deque[str] = deque()
        self.asked: List[Tuple[str, str]] = []
        self.errors: List[Tuple[str, str]] = []

    def ask_yes_no(self, title: str, message: str, detail: str = "") -> bool:
        self.asked.append((title, message))
        if not self.yes_no:
            raise AssertionError("unexpected question: %s / %s" % (title, message))
        return self.yes_no.popleft()

    def error(self, title: str, message: str, detail: str = "") -> None:
        self.errors.append((title, message))

    def ask_directory(self, title: str, initial: str = "") -> str:
        self.asked.append((title, initial))
        return self.paths.popleft() if self.paths else ""

    def ask_save_file(self, title: str, initial_name: str, filetypes: Any,
                      default_ext: str) -> str:
        self.asked.append((title, initial_name))
        return self.paths.popleft() if self.paths else ""


@pytest.fixture
def dialogs() -> ScriptedDialogs:
    return ScriptedDialogs()


@pytest.fixture
def make_app(display: str, app_dirs: Path, dialogs: ScriptedDialogs
             ) -> Iterator[Callable[..., Any]]:
    """``make_app(**kwargs) -> WizardApp`` shown on the display; closed after the test."""
    import tkinter as tk

    from wizard.app import WizardApp

    apps: List[Any] = []

    def factory(**kwargs: Any) -> Any:
        kwargs.setdefault("prefs_path", app_dirs / "wizard-settings.json")
        kwargs.setdefault("dialogs", dialogs)
        kwargs.setdefault("resume_at_start", False)
        app = WizardApp(**kwargs)
        apps.append(app)
        app.update()
        return app

    yield factory
    for app in apps:
        app.controller.shutdown()
        app.pump.stop()
        with contextlib.suppress(tk.TclError):  # the test closed it already
            app.destroy()
    apps.clear()
    gc.collect()  # free Tk objects here, not later on some worker thread


def running_jobs(app: Any) -> List[Any]:
    return app.controller.running_jobs()


def find_button(widget: Any, text: str) -> Optional[Any]:
    from tkinter import ttk

    for child in widget.winfo_children():
        if isinstance(child, ttk.Button) and str(child.cget("text")) == text:
            return child
        found = find_button(child, text)
        if found is not None:
            return found
    return None
