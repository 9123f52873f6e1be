"""The command line loads only the module of the command it runs (start-up time), yet every
command stays reachable and ``--help`` still lists them all."""
from __future__ import annotations

import subprocess
import sys

from engine.cli import COMMAND_HOMES, COMMAND_MODULES, build_parser


def test_every_command_lives_where_the_map_says():
    full = build_parser(["--help"])
    listed = set(full._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert listed == set(COMMAND_HOMES)
    assert set(COMMAND_HOMES.values()) == set(COMMAND_MODULES)
    for name in COMMAND_HOMES:
        alone = build_parser([name])
        assert set(alone._subparsers._group_actions[0].choices) == {name}  # type: ignore


def test_migrate_does_not_load_the_other_commands():
    code = ("import sys; from engine.cli import build_parser; build_parser(['migrate', 'x']); "
            "print(sorted(m for m in ('engine.discovery', 'engine.receiver', 'engine.verify', "
            "'engine.probe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_a_mistyped_command_lists_the_real_ones():
    proc = subprocess.run([sys.executable, "-m", "engine", "mgrate", "x"], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "invalid choice: 'mgrate'" in proc.stderr and "'migrate'" in proc.stderr


def test_help_before_a_command_still_lists_them_all():
    for argv in (["--help", "migrate"], ["-v", "-h", "echo"]):
        parser = build_parser(argv)
        assert set(parser._subparsers._group_actions[0].choices) == set(COMMAND_HOMES), argv
    assert set(build_parser(["-v", "echo", "--help"])._subparsers._group_actions[0].choices) \
        == {"echo"}
