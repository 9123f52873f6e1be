"""Per-user preferences: saved, restored, and reset with a notice when damaged."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from wizard import settings_store
from wizard.settings_store import Prefs


def test_round_trip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert settings_store.load(path) == (Prefs(), None)
    prefs = replace(Prefs(), batch_size=7, retries=0, associations=4, calling_aet="CLINIC1",
                    host="pacs.local", port=11112, called_aet="NEWPACS", decompress=False)
    settings_store.save(prefs, path)
    assert settings_store.load(path) == (prefs, None)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", [
    "{not json", "[1, 2]", json.dumps({"batch_size": "lots"}), json.dumps({"decompress": 1}),
    json.dumps({"batch_size": 0}), json.dumps({"calling_aet": "X" * 17}),
    json.dumps({"associations": 99}), json.dumps({"work_dir": "relative/path"}),
])
def test_damaged_file_gives_defaults_and_a_notice(tmp_path: Path, content: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content, encoding="utf-8")
    prefs, notice = settings_store.load(path)
    assert prefs == Prefs()
    assert notice and "defaults" in notice and str(path) in notice


def test_older_file_keeps_defaults_for_new_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"retries": 5, "unknown_key": True}), encoding="utf-8")
    prefs, notice = settings_store.load(path)
    assert notice is None and prefs.retries == 5 and prefs.batch_size == Prefs().batch_size


def test_prefs_become_engine_settings() -> None:
    settings = replace(Prefs(), batch_size=9, retries=1, max_pdu=65536).to_settings()
    assert (settings.batch_size, settings.retries, settings.max_pdu) == (9, 1, 65536)


def test_app_starts_with_defaults_and_says_so(make_app: Any, app_dirs: Path) -> None:
    (app_dirs / "wizard-settings.json").write_text("{broken", encoding="utf-8")
    app = make_app()
    assert "could not be read" in app.message.cget("text")
    assert app.controller.state.prefs == Prefs()


def test_advanced_dialog_validates_saves_and_is_restored(make_app: Any, app_dirs: Path) -> None:
    app = make_app()
    dialog = app.open_advanced()
    dialog.vars["batch_size"].set("900")
    dialog.vars["retries"].set("three")
    dialog.save()
    assert dialog.winfo_exists()  # refused: stays open with reasons
    assert "500" in dialog.form.errors["batch_size"].cget("text")
    assert "whole number" in dialog.form.errors["retries"].cget("text")
    dialog.vars["batch_size"].set("250")
    dialog.vars["retries"].set("4")
    dialog.vars["associations"].set("3")
    dialog.decompress.set(False)
    dialog.save()
    app.update()
    saved = json.loads((app_dirs / "wizard-settings.json").read_text(encoding="utf-8"))
    assert (saved["batch_size"], saved["retries"], saved["associations"]) == (250, 4, 3)
    assert saved["decompress"] is False
    again = make_app()
    assert again.controller.state.prefs.batch_size == 250
    dialog = again.open_advanced()
    dialog.restore_defaults()
    assert dialog.vars["batch_size"].get() == str(Prefs().batch_size)
    dialog.cancel()
    assert again.controller.state.prefs.batch_size == 250


def test_rate_cap_and_window_are_checked_and_kept(tmp_path: Path) -> None:
    from wizard.settings_store import Prefs, check, load, save

    assert check(Prefs(max_mbps="abc"))["max_mbps"].startswith("Use a number")
    assert "max_mbps" in check(Prefs(max_mbps="0"))
    assert "24-hour" in check(Prefs(window="7pm-6am"))["window"]
    good = Prefs(max_mbps="2,5", window="19:00-06:30")
    assert not check(good) and good.rate_cap() == 2.5 and good.time_window() == "19:00-06:30"
    assert Prefs().rate_cap() is None and Prefs().time_window() is None
    path = tmp_path / "s.json"
    save(good, path)
    assert load(path) == (good, None)
