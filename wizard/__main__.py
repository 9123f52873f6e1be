"""Entry point of the wizard (also the PyInstaller entry point): ``python -m wizard``."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import logging
import sys
from pathlib import Path
from typing import List, Optional

from engine import dirs

LOG_KEEP = 20  # per-run log files kept in the log folder


def setup_logging(verbose: bool = False) -> Path:
    """Log this run to its own file in the per-user log folder; return the file's path."""
    log_dir = dirs.log_dir()
    old = sorted(log_dir.glob("wizard-*.log"))
    for stale in old[:max(0, len(old) - LOG_KEEP + 1)]:
        with contextlib.suppress(OSError):  # held open by another running copy: next time
            stale.unlink()
    path = log_dir / ("wizard-%s.log" % dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    handler = logging.FileHandler(str(path), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s "
                                           "%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose else logging.WARNING)
    return path


def _dpi_aware() -> None:
    """Ask Windows for real pixels so text is sharp at 125-150% scaling (before Tk starts)."""
    if sys.platform != "win32":
        return
    import ctypes

    try:
        ctypes.windll.shcore.SetProcessDpiAwareness(1)  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # no shcore before Windows 8.1 (Server 2008 R2)
        with contextlib.suppress(AttributeError, OSError):
            ctypes.windll.user32.SetProcessDPIAware()  # type: ignore[attr-defined]


def _self_test() -> int:
    try:
        selftest = importlib.import_module("wizard.selftest")
    except ImportError as exc:
        if exc.name != "wizard.selftest":
            raise
        print("The self-test is not part of this build yet.", file=sys.stderr)
        return 2
    return int(selftest.run())  # type: ignore[attr-defined]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="dicom-wizard",
                                     description="Guided copy of DICOM files into a new PACS.")
    parser.add_argument("--self-test", action="store_true",
                        help="check the program can start (for the Windows build), then exit")
    parser.add_argument("--verbose", action="store_true", help="write debug details to the log")
    args = parser.parse_args(argv)
    if args.self_test:
        return _self_test()
    log_path = setup_logging(args.verbose)
    _dpi_aware()
    from .app import WizardApp  # Tk is imported only once we really open a window

    app = WizardApp(log_path=log_path)
    app.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
