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
    """The files of one directory (sorted by name), entries that could not be read
    (``problems``: they fail) and entries that are deliberately not sent (``skipped``: links,
    devices), each as (path, reason)."""

    directory: str
    files: Tuple[FileEntry, ...]
    problems: Tuple[Tuple[str, str], ...] = ()
    skipped: Tuple[Tuple[str, str], ...] = ()


BAD_NAME_MARK = " [name is not valid UTF-8]"  # no real file name can collide with the escape


def printable(path: str) -> str:
    """``path`` as text that can be stored and shown: bytes that are not valid UTF-8 (kept by
    Python as lone surrogates) become \\xNN escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_BAD_NAME = ("The {what} name contains bytes that are not valid text (not UTF-8), so it cannot "
             "be recorded safely{rest}: rename it (for example with convmv) and run again.")
SYMLINK_REASON = ("Symbolic link: not followed (links can loop or lead outside the source "
                  "folder). Copy the file it points to by including its real folder.")
SPECIAL_REASON = "Not a regular file (a device, pipe or socket): nothing to send."


def _scan_dir(directory: str) -> Tuple[List[FileEntry], List[str], List[Tuple[str, str]],
                                       List[Tuple[str, str]]]:
    files: List[FileEntry] = []
    subdirs: List[str] = []
    problems: List[Tuple[str, str]] = []
    skipped: List[Tuple[str, str]] = []
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.append((directory, "This folder could not be read: %s" % (exc.strerror or exc)))
        return files, subdirs, problems, skipped
    for entry in entries:
        shown = printable(entry.path)
        try:
            if entry.is_symlink():
                skipped.append((shown, SYMLINK_REASON))
            elif entry.is_dir(follow_symlinks=False):
                if shown != entry.path:
                    problems.append((shown + BAD_NAME_MARK, _BAD_NAME.format(
                        what="folder", rest=" and the files in it were not read")))
                else:
                    subdirs.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                if shown != entry.path:
                    problems.append((shown + BAD_NAME_MARK,
                                     _BAD_NAME.format(what="file", rest="")))
                    continue
                st = entry.stat(follow_symlinks=False)
                files.append(FileEntry(entry.path, st.st_size, st.st_mtime_ns))
            else:
                skipped.append((shown, SPECIAL_REASON))
        except OSError as exc:
            problems.append((shown, "This file could not be read: %s" % (exc.strerror or exc)))
    return files, subdirs, problems, skipped


def walk_source(root: str) -> Iterator[DirBatch]:
    """Yield one DirBatch per directory, depth first, in a stable (sorted) order."""
    root = os.path.abspath(root)
    stack = [root]
    while stack:
        directory = stack.pop()
        files, subdirs, problems, skipped = _scan_dir(directory)
        # Reverse so the pop order is alphabetical.
        stack.extend(reversed(subdirs))
        if files or problems or skipped:
            yield DirBatch(directory, tuple(files), tuple(problems), tuple(skipped))


def iter_files(root: str) -> Iterator[FileEntry]:
    for batch in walk_source(root):
        yield from batch.files
