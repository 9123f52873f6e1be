"""Files shipped next to the code: icons and images.

When frozen by PyInstaller the files live under ``sys._MEIPASS/assets``; from source they live in
the repository's ``assets/`` folder.
"""
from __future__ import annotations

import logging
import sys
import tkinter as tk
from pathlib import Path
from typing import Dict, Tuple

LOG = logging.getLogger(__name__)

ICON_PNG_SIZES = (16, 32, 48, 64, 256)
ICON_ICO = "app.ico"

_images: Dict[Tuple[str, str], tk.PhotoImage] = {}


def assets_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "assets"
    return Path(__file__).resolve().parent.parent / "assets"


def asset_path(name: str) -> Path:
    return assets_dir() / name


def icon_png_name(size: int) -> str:
    return "app-%d.png" % size


def image(name: str, master: tk.Misc) -> tk.PhotoImage:
    """A cached PhotoImage of ``assets/name`` (Tk forgets images nobody references)."""
    key = (name, str(id(master.tk)))  # one cache per Tk interpreter
    if key not in _images:
        _images[key] = tk.PhotoImage(master=master, file=str(asset_path(name)))
    return _images[key]


def app_icon(root: tk.Tk) -> bool:
    """Set the window and taskbar icon; return False (and log) when the files are missing."""
    try:
        photos = [image(icon_png_name(size), root) for size in (256, 64, 32, 16)]
        root.iconphoto(True, *photos)
        if sys.platform == "win32":
            root.iconbitmap(default=str(asset_path(ICON_ICO)))  # the taskbar prefers the .ico
    except (tk.TclError, OSError):
        LOG.warning("Application icon not found in %s", assets_dir(), exc_info=True)
        return False
    return True


def missing_assets() -> list:
    """Names of icon files that should exist but do not (used by ``--self-test``)."""
    names = [icon_png_name(size) for size in ICON_PNG_SIZES] + [ICON_ICO]
    return [name for name in names if not asset_path(name).is_file()]
