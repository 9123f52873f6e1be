"""``dicom-migrate``: the command line for IT staff and scripts.

Each sub-command lives in the module that does the work; that module exposes
``register(subparsers)``, which adds its parser with ``set_defaults(func=run)`` where
``run(args) -> int`` returns the exit code (see ``cli_common``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .cli_common import EXIT_USAGE, setup_logging
from .errors import ConfigError, DestinationUnreachable, UserFacingError, describe_os_error
from .cli_common import EXIT_UNREACHABLE

# Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "engine.echo",
    "engine.migrate_cli",
    "engine.probe",
    "engine.verify",
    "engine.discovery",
    "engine.audit",
    "engine.receiver",
)


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The full parser; given the command line, only the named command's module is loaded
    (the others pull in libraries that cost a tenth of a second of start-up)."""
    parser = argparse.ArgumentParser(
        prog="dicom-migrate",
        description="Copy a folder of DICOM files into a PACS over C-STORE, resumably, "
                    "with a CSV audit and C-FIND verification. Source files are never changed.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(argv):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:  # a real import problem inside an existing module
                raise
            continue
        module.register(sub)  # type: ignore[attr-defined]
    return parser


COMMAND_HOMES = {"echo": "engine.echo", "migrate": "engine.migrate_cli", "probe": "engine.probe",
                 "verify": "engine.verify", "discover": "engine.discovery",
                 "export-csv": "engine.audit", "receive": "engine.receiver"}


def _modules_for(argv: Optional[List[str]]) -> List[str]:
    for arg in (argv if argv is not None else sys.argv[1:]):
        if arg in ("-h", "--help"):
            break  # the main help, which lists every command
        if not arg.startswith("-"):
            if arg in COMMAND_HOMES:
                return [COMMAND_HOMES[arg]]
            break
    return list(COMMAND_MODULES)  # help, no command, or a mistyped one: list them all


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(argv if argv is not None else sys.argv[1:])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print("Error: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except DestinationUnreachable as exc:
        print("Error: %s" % exc, file=sys.stderr)
        return EXIT_UNREACHABLE
    except UserFacingError as exc:
        print("Error: %s" % exc, file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. an output folder that does not exist or cannot be written
        print("Error: %s" % describe_os_error(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nStopped by the user.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
