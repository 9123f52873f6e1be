"""Stream the files of a source tree, one directory at a time, without listing it all first.

Memory is bounded by the largest single directory, not by the size of the store.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Tuple


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class DirBatch:
    """The files of one directory (sorted by name), and directories that could not be read."""

    directory: str
    files: Tuple[FileEntry, ...]
    problems: Tuple[Tuple[str, str], ...] = ()


def _scan_dir(directory: str) -> Tuple[List[FileEntry], List[str], List[Tuple[str, str]]]:
    files: List[FileEntry] = []
    subdirs: List[str] = []
    problems: List[Tuple[str, str]] = []
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.append((directory, "This folder could not be read: %s" % (exc.strerror or exc)))
        return files, subdirs, problems
    for entry in entries:
        try:
            # Symlinked folders are not followed: they can loop or leave the source tree.
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.is_file():
                st = entry.stat()
                files.append(FileEntry(entry.path, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            problems.append((entry.path, "This file could not be read: %s" % (exc.strerror or exc)))
    return files, subdirs, problems


def walk_source(root: str) -> Iterator[DirBatch]:
    """Yield one DirBatch per directory, depth first, in a stable (sorted) order."""
    root = os.path.abspath(root)
    stack = [root]
    while stack:
        directory = stack.pop()
        files, subdirs, problems = _scan_dir(directory)
        # Reverse so the pop order is alphabetical.
        stack.extend(reversed(subdirs))
        if files or problems:
            yield DirBatch(directory, tuple(files), tuple(problems))


def iter_files(root: str) -> Iterator[FileEntry]:
    for batch in walk_source(root):
        yield from batch.files
