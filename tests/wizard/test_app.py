"""The window itself: size, keyboard use, navigation rules, errors, closing, resuming."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List

import pytest

from engine.config import Destination
from engine.manifest import ManifestStore
from tests.wizard.conftest import ScriptedDialogs, wait_until
from wizard.__main__ import main as wizard_main
from wizard.controller import STEP_ORDER


def test_every_step_fits_1024x768(make_app: Any) -> None:
    app = make_app()
    # As on a 1024x768 screen: 768 minus a Windows taskbar and title bar leaves about 700
    # pixels. Wrapping labels follow the window's width, so the window must be that size for
    # the request to mean "what the content needs".
    app.geometry("1024x700")
    app.update()
    for index in range(len(STEP_ORDER)):
        app.controller.show(index)
        app.update()
        assert app.winfo_reqwidth() <= 1024 and app.winfo_reqheight() <= 700, (
            STEP_ORDER[index].title, app.winfo_reqwidth(), app.winfo_reqheight())


def test_every_step_fits_at_150_percent(make_app: Any) -> None:
    app = make_app(scaling=2.0)  # 96 dpi x 1.5 = 144 dpi = 2 pixels per point
    for index in range(len(STEP_ORDER)):
        app.controller.show(index)
        app.update_idletasks()
        assert app.winfo_reqwidth() <= 1536 and app.winfo_reqheight() <= 1050


def test_sidebar_marks_progress_without_relying_on_colour(make_app: Any) -> None:
    app = make_app()
    c = app.controller
    assert app.next_button.cget("text") == "Skip"
    assert c.go_next()
    styles = app.sidebar.label_styles()
    assert styles[:2] == ["SidebarDone.TLabel", "SidebarCurrent.TLabel"]
    assert app.sidebar._labels[0].cget("text").startswith("✓")
    assert c.go_back() and c.index == 0


def test_next_is_refused_with_a_reason_until_fields_are_valid(make_app: Any) -> None:
    app = make_app()
    c = app.controller
    c.go_next()
    conn = c.current
    conn.vars["host"].set("")
    conn.vars["called"].set("A\\B")
    assert not c.go_next() and c.current is conn
    assert "correct" in app.message.cget("text")
    assert "backslash" in conn.form.errors["called"].cget("text")
    conn.vars["host"].set("pacs.example")
    conn.vars["port"].set("104")
    conn.vars["called"].set("NEWPACS")
    assert c.go_next()
    assert not c.go_next() and "folder" in app.message.cget("text")


def test_failed_echo_warns_but_an_expert_may_continue(make_app: Any, dialogs: ScriptedDialogs,
                                                      free_port: Any) -> None:
    app = make_app()
    c = app.controller
    c.go_next()
    conn = c.current
    for key, value in (("host", "127.0.0.1"), ("port", str(free_port())), ("called", "NOBODY")):
        conn.vars[key].set(value)
    conn.test_connection()
    wait_until(lambda: conn.banner.kind == "Bad", app, what="failed echo")
    assert "refused" in conn.banner.text or "did not" in conn.banner.text
    dialogs.yes_no.append(False)
    assert not c.go_next() and c.current is conn
    dialogs.yes_no.append(True)
    assert c.go_next()
    assert c.state.echo_ok is False


def test_practice_receiver_fills_the_fields_and_answers(make_app: Any) -> None:
    app = make_app()
    c = app.controller
    c.go_next()
    conn = c.current
    conn.start_practice()
    wait_until(lambda: conn.receiver is not None, app, what="receiver")
    assert conn.vars["host"].get() == "127.0.0.1"
    assert conn.vars["called"].get() == "PRACTICE"
    conn.test_connection()
    wait_until(lambda: conn.banner.kind == "Good", app, what="echo to the practice receiver")
    receiver = conn.receiver
    conn.stop_practice()
    assert conn.receiver is None and receiver._server is None


def test_keyboard_alt_letters_and_tab_order(make_app: Any) -> None:
    app = make_app()
    c = app.controller
    app.focus_force()
    c.current.first_focus().focus_set()
    app.update()
    focused = app.focus_get()
    focused.event_generate("<Alt-KeyPress-x>")  # no button has X underlined: nothing happens
    app.update()
    assert c.index == 0
    focused.event_generate("<Alt-KeyPress-s>")  # the underlined S of "Skip"
    app.update()
    assert c.index == 1
    # Tab walks through this page and the button bar, never into hidden pages.
    widget = app.focus_get()
    seen: List[Any] = []
    for _ in range(40):
        widget = widget.tk_focusNext()
        seen.append(widget)
    hidden = [w for w in seen if any(str(w).startswith(str(s)) for s in c.steps
                                     if s is not c.current)]
    assert not hidden, hidden
    focused = app.focus_get()
    focused.event_generate("<Alt-KeyPress-b>")
    app.update()
    assert c.index == 0


def test_callback_error_is_readable_and_logged(make_app: Any, dialogs: ScriptedDialogs,
                                               tmp_path: Path, caplog: Any,
                                               fail_on_tk_callback_error: List[str]) -> None:
    app = make_app(log_path=tmp_path / "wizard.log")

    def broken() -> None:
        raise KeyError("series")

    with caplog.at_level(logging.ERROR):
        app.after(0, broken)
        wait_until(lambda: dialogs.errors, app, what="error dialog")
    text = app.message.cget("text")
    assert "Something went wrong" in text and "wizard.log" in text
    assert "Traceback" not in text and "Traceback" not in dialogs.errors[0][1]
    assert any(r.exc_info for r in caplog.records)  # the traceback goes to the log only
    assert len(fail_on_tk_callback_error) == 1
    fail_on_tk_callback_error.clear()  # this error was the point of the test


def test_resume_is_offered_at_start(make_app: Any, dialogs: ScriptedDialogs, tmp_path: Path,
                                    app_dirs: Path) -> None:
    from wizard import settings_store
    from wizard.settings_store import Prefs

    source = tmp_path / "archive"
    source.mkdir()
    work = tmp_path / "work"
    dest = Destination("127.0.0.1", 1, "OLDPACS")
    store = ManifestStore(str(work))
    run = store.start_run(str(source), dest.key, "all")
    store.finish_run(run, "cancelled", {"sent": 12})
    store.close()
    settings_store.save(Prefs(host="127.0.0.1", port=1, called_aet="OLDPACS",
                              source=str(source), work_dir=str(work)),
                        app_dirs / "wizard-settings.json")
    dialogs.yes_no.append(True)
    app = make_app(resume_at_start=True)
    wait_until(lambda: app.controller.index == 3, app, what="jump to the copy page")
    assert "did not finish" in dialogs.asked[0][1] and "12 files" in dialogs.asked[0][1]
    assert app.controller.state.destination == dest
    wait_until(lambda: not app.controller.current.busy, app, timeout=30, what="copy attempt")


def test_self_test_flag_without_the_module(monkeypatch: Any, capsys: Any) -> None:
    import importlib

    real = importlib.import_module

    def no_selftest(name: str, *args: Any) -> Any:
        if name == "wizard.selftest":
            raise ImportError("none", name="wizard.selftest")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_selftest)
    assert wizard_main(["--self-test"]) == 2
    assert "not part of this build" in capsys.readouterr().err


@pytest.mark.parametrize("step_index", range(len(STEP_ORDER)))
def test_each_step_has_a_title_and_intro(step_index: int) -> None:
    step = STEP_ORDER[step_index]
    assert step.title and (step.intro or step.heading)


def _refuse_on_connect(app: Any) -> Any:
    """Step 2 with every PACS field wrong, Next pressed: red lines and the footer complaint."""
    c = app.controller
    c.go_next()
    conn = c.current
    for key, value in (("host", ""), ("port", "abc"), ("called", "")):
        conn.vars[key].set(value)
    assert not c.go_next()
    assert "correct" in app.message.cget("text")
    assert all(conn.form.error_text(k) for k in ("host", "port", "called"))
    return conn


def test_practice_fill_clears_field_errors_and_the_footer(make_app: Any) -> None:
    app = make_app()
    conn = _refuse_on_connect(app)
    conn.test_connection()  # refused too: the banner repeats the complaint
    assert conn.banner.kind == "Bad"
    conn.start_practice()
    wait_until(lambda: conn.receiver is not None, app, what="receiver")
    app.update()
    assert not any(conn.form.error_text(k) for k in conn.form.errors), {
        k: conn.form.error_text(k) for k in conn.form.errors}
    assert not any(label.winfo_ismapped() for label in conn.form.errors.values())
    assert app.message.cget("text") == ""
    conn.test_connection()
    wait_until(lambda: conn.banner.kind == "Good", app, what="echo to the practice receiver")
    assert app.message.cget("text") == ""
    conn.stop_practice()


def test_editing_a_field_revalidates_only_what_was_flagged(make_app: Any) -> None:
    app = make_app()
    conn = _refuse_on_connect(app)
    conn.vars["host"].set("pacs.example")
    assert conn.form.error_text("host") == ""
    assert "number" in conn.form.error_text("port")  # still wrong: still red
    assert "correct" in app.message.cget("text")     # and the footer still says so
    conn.vars["port"].set("99999")                   # still wrong, for another reason
    assert "65535" in conn.form.error_text("port")
    conn.vars["port"].set("104")
    conn.vars["called"].set("NEWPACS")
    assert not any(conn.form.error_text(k) for k in conn.form.errors)
    assert app.message.cget("text") == ""
    # A field that was never flagged is not flagged while typing either.
    conn.vars["calling"].set("")
    assert conn.form.error_text("calling") == ""


def test_a_pacs_picked_in_step_1_clears_old_field_errors(make_app: Any) -> None:
    from engine.events import NodeFound

    app = make_app()
    c = app.controller
    conn = _refuse_on_connect(app)
    assert c.go_back()
    c.state.chosen_node = NodeFound(job_id=0, host="10.1.2.3", port=11112, dicom=True,
                                    accepted_aet="NEWPACS")
    assert c.go_next() and c.current is conn
    assert conn.vars["host"].get() == "10.1.2.3"
    assert not any(conn.form.error_text(k) for k in conn.form.errors)
    assert app.message.cget("text") == ""


def test_footer_complaint_goes_once_the_user_fixes_it(make_app: Any, tmp_path: Path) -> None:
    app = make_app()
    c = app.controller
    c.go_next()
    for key, value in (("host", "pacs.example"), ("port", "104"), ("called", "NEWPACS")):
        c.current.vars[key].set(value)
    assert c.go_next()
    choose = c.current
    assert not c.go_next() and "Choose the folder" in app.message.cget("text")
    (tmp_path / "images").mkdir()
    choose.folder.set(str(tmp_path / "images"))
    choose.folder_entry.event_generate("<KeyRelease>", keysym="s")  # as if typed
    wait_until(lambda: "Choose the folder" not in app.message.cget("text"), app, timeout=5,
               what="the footer to drop the folder complaint")
    assert app.message.cget("text") == (choose.validate() or "")  # only what is still true


def test_every_column_heading_is_readable_at_1024x768(make_app: Any) -> None:
    from tkinter import ttk

    from wizard import theme

    # 96 dpi, as on a 100% Windows screen. (Tk keeps "tk scaling" per display, so without
    # this an earlier test's 150% app would leave its scaling behind.)
    app = make_app(scaling=96 / 72)
    app.geometry("1024x700")
    app.update()
    style = ttk.Style(app)
    font = theme.named_font(app, str(style.lookup("Treeview.Heading", "font")))
    pad = theme.ems(app, 0.2)

    def trees(widget: Any) -> List[Any]:
        found = []
        for child in widget.winfo_children():
            if isinstance(child, ttk.Treeview):
                found.append(child)
            found.extend(trees(child))
        return found

    cut = []
    for index in range(len(STEP_ORDER)):
        app.controller.show(index)
        app.update()
        for tree in trees(app.controller.current):
            ids = list(tree["columns"]) + (["#0"] if "tree" in str(tree.cget("show")) else [])
            for cid in ids:
                text = str(tree.heading(cid, "text"))
                need = font.measure(text) + 2 * pad + 4  # text, padding, borders
                if need > int(tree.column(cid, "width")):
                    cut.append((STEP_ORDER[index].title, text, tree.column(cid, "width"), need))
    assert not cut, cut
