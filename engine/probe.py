"""Pre-flight check: what the destination will do with each kind of file, before any is sent.

Reads headers only, groups the files by (SOP class, transfer syntax), asks the destination in
association negotiation (contexts are proposed exactly as the sender proposes them; the
association is released without sending anything) and predicts per group what a migration
will do. The prediction is the pure function ``decide()``, which mirrors the sender's choice
(``Sender._send_one`` / ``_fallback_syntax``) and the refusals of ``transcode_file``, with the
same messages the manifest would record.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import (AbstractSet, Any, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Set, Tuple, Union)

from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom import build_context

from . import compat
from .association import open_association, sop_class_name, transfer_syntax_name
from .cli_common import (add_destination_args, destination_from_args, positive_number,
                         settings_from_args)
from .config import Destination, Settings
from .errors import ConfigError, DestinationUnreachable
from .events import JobFinished, Progress
from .headers import DEFLATED_TS, EXPLICIT_BE, HeaderProblem, read_header
from .jobs import Control
from .negotiation import EXPLICIT_LE, IMPLICIT_LE, MAX_CONTEXTS, plan_contexts
from .transcode import _label as short_syntax_label
from .walk import walk_source

AS_IS, DECOMPRESS, REFUSED, FAIL = "as is", "decompress", "refused", "fail"
ACTIONS = (AS_IS, DECOMPRESS, REFUSED, FAIL)
VERIFICATION = "1.2.840.10008.1.1"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
_UNCOMPRESSED = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED_TS)
PROGRESS_EVERY_S = 0.25
EXAMPLES_PER_REASON = 3


# --- the decision (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What the sender does with one file once it knows what the destination accepts."""

    action: str  # AS_IS | DECOMPRESS | REFUSED | FAIL
    target_syntax: str  # the syntax the file is sent in; "" when it cannot be sent
    explanation: str  # "what will happen", for the probe table
    reason: str = ""  # for REFUSED / FAIL: the message the manifest records for such a file


def is_encapsulated(ts: str) -> bool:
    """True for syntaxes whose pixel data is compressed (JPEG, JPEG 2000, RLE...)."""
    if ts in _UNCOMPRESSED:
        return False
    try:
        return bool(UID(ts).is_compressed)
    except ValueError:  # private, or unknown to this pydicom (HTJ2K on 2.4): compressed
        return True


def fallback_syntax(file_ts: str, accepted: AbstractSet[str]) -> str:
    """The uncompressed syntax a file is re-encoded to; "" when none was accepted."""
    if file_ts in accepted and file_ts in (EXPLICIT_LE, IMPLICIT_LE):
        return file_ts  # same syntax, but the file needs re-encoding
    for ts in (EXPLICIT_LE, IMPLICIT_LE):
        if ts in accepted:
            return ts
    return ""


def decide(sop_class: str, file_ts: str, streamable: bool, accepted: AbstractSet[str], *,
           decompress: bool = True, can_decode: bool = True,
           has_pixels: bool = True) -> Decision:
    """What happens to a file of ``sop_class`` stored in ``file_ts``.

    ``accepted``: the transfer syntaxes the destination accepted for ``sop_class`` (empty: the
    class is refused). ``streamable``: InstanceHeader.streamable. ``decompress``: Settings.
    ``can_decode``: a decoder for ``file_ts`` is installed. ``has_pixels``: the file holds
    pixel data (an SR labelled JPEG has nothing to decompress).
    """
    if not accepted:
        return Decision(REFUSED, "", _refused_text(sop_class), refused_reason(sop_class))
    if file_ts in accepted and streamable:
        return Decision(AS_IS, file_ts, "sent as is")
    target = fallback_syntax(file_ts, accepted)
    if not target:
        return Decision(FAIL, "", "will fail: the destination accepts %s but not in %s, and "
                        "no uncompressed form either" % (sop_class_name(sop_class),
                                                         transfer_syntax_name(file_ts)),
                        no_fallback_reason(sop_class, file_ts))
    if has_pixels and is_encapsulated(file_ts):
        what = "will fail: the destination refuses the compressed form (%s) and " \
            % short_syntax_label(file_ts)
        if not decompress:
            return Decision(FAIL, "", what + "decompression is turned off",
                            decompress_off_reason(file_ts))
        if not can_decode:
            return Decision(FAIL, "", what + "this computer cannot decompress it ("
                            + _install_hint(file_ts) + ")", missing_decoder_reason(file_ts))
    return Decision(DECOMPRESS, target, _conversion_text(file_ts, target, has_pixels))


def _refused_text(sop_class: str) -> str:
    return ("refused: the destination does not accept %s — ask the PACS administrator to "
            "enable it" % sop_class_name(sop_class))


def _conversion_text(file_ts: str, target: str, has_pixels: bool) -> str:
    name = transfer_syntax_name(target)
    if is_encapsulated(file_ts):
        if not has_pixels:
            return "sent as %s (these objects hold no image to decompress)" % name
        return "sent after decompression to %s" % name
    if file_ts == DEFLATED_TS:
        return "sent after decompression (unzipping) to %s" % name
    if file_ts == EXPLICIT_BE:
        return "sent after conversion from big endian to %s" % name
    if file_ts == target:
        return "sent re-encoded as %s (the file's header does not match its contents)" % name
    return "sent after conversion to %s" % name


# The sender's and transcode_file's messages, word for word (tests compare them).
def refused_reason(sop_class: str) -> str:
    return ("The destination does not accept %s — ask the PACS administrator to enable it."
            % sop_class_name(sop_class))


def no_fallback_reason(sop_class: str, file_ts: str) -> str:
    return ("The destination accepts %s but not in %s, and no uncompressed form was accepted "
            "either." % (sop_class_name(sop_class), transfer_syntax_name(file_ts)))


def decompress_off_reason(file_ts: str) -> str:
    return ("The destination refused this image's compression (%s) and decompression is "
            "turned off, so the image cannot be sent." % short_syntax_label(file_ts))


def missing_decoder_reason(file_ts: str) -> str:
    label = short_syntax_label(file_ts)
    if compat.decoder_package(file_ts):
        return "Cannot decompress %s images: the decoder is not installed (%s)" % (
            label, _install_hint(file_ts))
    return ("Cannot decompress %s images: this version of the program has no decoder for "
            "that compression." % label)


def _install_hint(file_ts: str) -> str:
    package = compat.decoder_package(file_ts)
    if package:
        return "install the Python package %s" % package
    return "no decoder exists for it in this version of the program"


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeGroup:
    """Files of one SOP class in one transfer syntax, and what will happen to them."""

    sop_class: str
    sop_class_name: str
    transfer_syntax: str
    transfer_syntax_name: str  # short, as PACS documentation names it: "JPEG 2000 Lossless"
    files: int
    action: str  # AS_IS | DECOMPRESS | REFUSED | FAIL
    target_syntax: str
    explanation: str
    reason: str = ""  # for REFUSED / FAIL: the message a migration records per file

    def __iter__(self) -> Iterator[Any]:
        # The wizard's table unpacks (kind, stored as, files, action, why).
        return iter((self.sop_class_name, self.transfer_syntax_name, self.files, self.action,
                     self.explanation))

    @property
    def decompressed(self) -> bool:
        """Sent after real decompression (not only a byte-order or header conversion)."""
        return self.action == DECOMPRESS and (is_encapsulated(self.transfer_syntax)
                                              or self.transfer_syntax == DEFLATED_TS)


@dataclass
class ProbeResult:
    groups: List[ProbeGroup] = field(default_factory=list)
    problems: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    destination: str = ""
    decompress: bool = True
    associations: int = 0

    def count(self, *actions: str) -> int:
        return sum(g.files for g in self.groups if g.action in actions)

    @property
    def exit_code(self) -> int:
        """0 when every file can be sent, else 1 (3, unreachable, is raised instead)."""
        return 1 if self.count(REFUSED, FAIL) or self.problems else 0


# Group key: (SOP class, transfer syntax, streamable, has pixel data).
GroupKey = Tuple[str, str, bool, bool]


# --- the job -----------------------------------------------------------------------------------
def probe(source_or_paths: Union[str, "os.PathLike[str]", Iterable[str]], dest: Destination,
          settings: Settings, control: Control) -> JobFinished:
    """Read the headers of a folder (or of the given files) and ask ``dest`` about them.

    Returns a JobFinished whose ``result`` is a ProbeResult. Raises DestinationUnreachable when
    the destination cannot be reached or rejects the association, ConfigError for a missing
    folder. No file is sent.
    """
    if isinstance(source_or_paths, os.PathLike):
        source_or_paths = os.fspath(source_or_paths)
    if isinstance(source_or_paths, str) and not os.path.isdir(source_or_paths):
        raise ConfigError("The source folder %s does not exist or is not a folder."
                          % source_or_paths)
    reader = _HeaderReader(settings, control)
    reader.read(source_or_paths)
    if control.cancelled:
        return _cancelled(control, reader.problems)
    return _conclude(reader.keys, reader.problems, dest, settings, control)


def probe_pairs(pairs: Mapping[Tuple[str, str], int], dest: Destination, settings: Settings,
                control: Control) -> JobFinished:
    """Like probe(), from {(SOP class, transfer syntax): file count} (ScanResult syntaxes).

    Headers are not read again, so every file is assumed streamable and holding pixel data.
    """
    keys: Dict[GroupKey, int] = {}
    for (sop_class, ts), count in pairs.items():
        key = (sop_class, ts, True, True)
        keys[key] = keys.get(key, 0) + int(count)
    return _conclude(keys, [], dest, settings, control)


def _cancelled(control: Control, problems: List[Tuple[str, str]]) -> JobFinished:
    return JobFinished(control.job_id, "Check cancelled.", cancelled=True,
                       exit_code=1, result=ProbeResult(problems=problems))


def _conclude(keys: Dict[GroupKey, int], problems: List[Tuple[str, str]], dest: Destination,
              settings: Settings, control: Control) -> JobFinished:
    accepted: Dict[str, Set[str]] = {}
    associations = 0
    if keys:
        accepted, associations = ask_destination(
            [(k[0], k[1]) for k in keys], dest, settings, control)
    where = "%s at %s:%d" % (dest.called_aet.strip(), dest.host.strip(), dest.port)
    result = ProbeResult(build_groups(keys, accepted, settings.decompress), problems,
                         where, settings.decompress, associations)
    counts = {action: result.count(action) for action in ACTIONS}
    counts["problems"] = len(problems)
    return JobFinished(control.job_id, summary_line(result), counts,
                       exit_code=result.exit_code, result=result)


class _HeaderReader:
    """Reads headers (never pixels) and counts files per GroupKey."""

    def __init__(self, settings: Settings, control: Control) -> None:
        self.settings = settings
        self.control = control
        self.keys: Dict[GroupKey, int] = {}
        self.problems: List[Tuple[str, str]] = []
        self._decodable: Dict[str, bool] = {}
        self._done = 0
        self._last = 0.0

    def read(self, source_or_paths: Union[str, Iterable[str]]) -> None:
        for path, size, mtime_ns in self._entries(source_or_paths):
            if self.control.cancelled:
                return
            self.control.wait_if_paused()
            self._add(path, read_header(path, size, mtime_ns))
            self._done += 1
            self._progress(os.path.dirname(path))
        self._progress("", force=True)

    def _entries(self, source_or_paths: Union[str, Iterable[str]]
                 ) -> Iterator[Tuple[str, Optional[int], Optional[int]]]:
        if isinstance(source_or_paths, str):
            for batch in walk_source(source_or_paths):
                self.problems.extend(batch.problems + batch.skipped)
                for entry in batch.files:
                    yield entry.path, entry.size, entry.mtime_ns
            return
        for path in source_or_paths:
            try:
                st = os.stat(path)
            except OSError as exc:
                self.problems.append((path, "The file can no longer be found or read (%s)."
                                      % (exc.strerror or exc)))
                continue
            yield path, st.st_size, st.st_mtime_ns

    def _add(self, path: str, header: Any) -> None:
        if isinstance(header, HeaderProblem):
            self.problems.append((path, header.reason))
            return
        ts = header.transfer_syntax
        pixels = True
        # A second, full read only where the answer changes the outcome or its wording.
        if is_encapsulated(ts) and (not self.settings.decompress or not self.decodable(ts)
                                    or "Image" not in sop_class_name(header.sop_class_uid)):
            pixels = has_pixel_data(path)
        key = (header.sop_class_uid, ts, bool(header.streamable), pixels)
        self.keys[key] = self.keys.get(key, 0) + 1

    def decodable(self, ts: str) -> bool:
        if ts not in self._decodable:
            self._decodable[ts] = decoder_installed(ts)
        return self._decodable[ts]

    def _progress(self, current: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            self.control.emit(Progress(self.control.job_id, self._done, None, current=current))


def decoder_installed(ts: str) -> bool:
    """compat.decoder_available, with odd UIDs counted as "no decoder" instead of raising."""
    try:
        return compat.decoder_available(ts)
    except Exception:  # a malformed or private UID: nothing can decode it
        return False


def has_pixel_data(path: str) -> bool:
    """Whether the file holds pixel data (SR, KOS, PR... do not), by a full read."""
    try:
        ds = dcmread(path, force=True)
    except Exception:  # the sender reports the damage; assume an image meanwhile
        return True
    return any(tag in ds for tag in _PIXEL_TAGS)


# --- asking the destination -------------------------------------------------------------------
def ask_destination(pairs: Sequence[Tuple[str, str]], dest: Destination, settings: Settings,
                    control: Control) -> Tuple[Dict[str, Set[str]], int]:
    """{SOP class: accepted transfer syntaxes} (empty set: refused), and associations used.

    Contexts are planned as the sender plans them, one fewer per association to leave room
    for Verification: with it the association opens even when every storage class is
    refused, so the refusal is reported per class instead of as a failed connection.
    """
    accepted: Dict[str, Set[str]] = {}
    opened = 0
    for plan in plan_contexts(pairs, limit=MAX_CONTEXTS - 1):
        if control.cancelled:
            break
        contexts = [build_context(sop, [ts]) for sop, ts in plan.contexts]
        contexts.append(build_context(VERIFICATION, [IMPLICIT_LE]))
        assoc, failure = open_association(dest, settings, contexts, sink=control.emit,
                                          job_id=control.job_id)
        if assoc is None:
            raise DestinationUnreachable(failure.reason if failure else
                                         "The destination could not be reached.")
        opened += 1
        try:
            for sop_class in plan.sop_classes:
                accepted.setdefault(sop_class, set())
            for cx in assoc.accepted_contexts:
                if cx.abstract_syntax != VERIFICATION:
                    accepted.setdefault(cx.abstract_syntax, set()).add(cx.transfer_syntax[0])
        finally:
            assoc.release()
    return accepted, opened


def build_groups(keys: Mapping[GroupKey, int], accepted: Mapping[str, AbstractSet[str]],
                 decompress: bool) -> List[ProbeGroup]:
    """One ProbeGroup per (SOP class, transfer syntax, decision), in a stable order."""
    merged: Dict[Tuple[str, str, Decision], int] = {}
    decodable: Dict[str, bool] = {}
    for (sop_class, ts, streamable, pixels), count in keys.items():
        if is_encapsulated(ts) and ts not in decodable:
            decodable[ts] = decoder_installed(ts)
        decision = decide(sop_class, ts, streamable, accepted.get(sop_class, set()),
                          decompress=decompress, can_decode=decodable.get(ts, True),
                          has_pixels=pixels)
        key = (sop_class, ts, decision)
        merged[key] = merged.get(key, 0) + count
    groups = [ProbeGroup(sop, sop_class_name(sop), ts, short_syntax_label(ts), count,
                         d.action, d.target_syntax, d.explanation, d.reason)
              for (sop, ts, d), count in merged.items()]
    groups.sort(key=lambda g: (ACTIONS.index(g.action), g.sop_class_name,
                               g.transfer_syntax_name))
    return groups


# --- words -------------------------------------------------------------------------------------
def _n(count: int) -> str:
    return "{:,}".format(count)


def summary_line(result: ProbeResult) -> str:
    """'1,234 files will be sent as they are, 56 after decompression, 7 cannot be sent: ...'"""
    as_is = result.count(AS_IS)
    unpacked = sum(g.files for g in result.groups if g.decompressed)
    converted = result.count(DECOMPRESS) - unpacked
    refused, failing, problems = result.count(REFUSED), result.count(FAIL), len(result.problems)
    sendable = [(n, tail) for n, tail in ((as_is, "as %s" % ("it is" if as_is == 1 else
                                                             "they are")),
                                          (unpacked, "after decompression"),
                                          (converted, "after conversion")) if n]
    parts = []
    for index, (n, tail) in enumerate(sendable):
        parts.append("%s %s will be sent %s" % (_n(n), "file" if n == 1 else "files", tail)
                     if index == 0 else "%s %s" % (_n(n), tail))
    bad = refused + failing + problems
    if bad:
        causes = [text for n, text in (
            (refused, "%s refused by the destination" % _n(refused)),
            (failing, "%s in a form the destination does not take%s" % (
                _n(failing), " (decompression is turned off)" if _all_off(result) else "")),
            (problems, "%s not DICOM or damaged" % _n(problems))) if n]
        lead = "%s cannot be sent" % _n(bad) if parts else \
            "%s %s cannot be sent" % (_n(bad), "file" if bad == 1 else "files")
        parts.append("%s: %s" % (lead, ", ".join(causes)))
    if not parts:
        return "No files were found to check."
    return ", ".join(parts) + "."


def _all_off(result: ProbeResult) -> bool:
    """Every file that will fail does so only because decompression is turned off."""
    return all(g.reason == decompress_off_reason(g.transfer_syntax)
               for g in result.groups if g.action == FAIL)


def format_table(groups: Sequence[ProbeGroup], width: int = 100) -> str:
    """A plain-text table: Files | Kind of object | Stored as | What will happen."""
    rows = [(_n(g.files), g.sop_class_name, g.transfer_syntax_name, g.explanation)
            for g in groups]
    head = ("Files", "Kind of object", "Stored as", "What will happen")
    widths = [max(len(r[0]) for r in rows + [head])]
    widths.append(min(28, max(len(r[1]) for r in rows + [head])))
    widths.append(min(26, max(len(r[2]) for r in rows + [head])))
    widths.append(max(24, width - sum(widths) - 2 * 3))
    lines = [_table_row(head, widths), "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append(_table_row(row, widths))
    return "\n".join(lines)


def _table_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    wrapped = [textwrap.wrap(cell, w) or [""] for cell, w in zip(cells, widths)]
    lines = []
    for index in range(max(len(w) for w in wrapped)):
        parts = []
        for col, (cell_lines, w) in enumerate(zip(wrapped, widths)):
            text = cell_lines[index] if index < len(cell_lines) else ""
            parts.append(text.rjust(w) if col == 0 else text.ljust(w))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_problems(problems: Sequence[Tuple[str, str]], source: str = "",
                    width: int = 100) -> str:
    """Files that are not DICOM or are damaged: counted per reason, with a few examples."""
    by_reason: Dict[str, List[str]] = {}
    for path, reason in problems:
        shown = os.path.relpath(path, source) if source and path.startswith(source) else path
        by_reason.setdefault(reason, []).append(shown)
    lines = ["1 file is not sent because it is not DICOM or is damaged:" if len(problems) == 1
             else "%s files are not sent because they are not DICOM or are damaged:"
             % _n(len(problems))]
    for reason, paths in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        lines += textwrap.wrap(reason, width, initial_indent="  %6s × " % _n(len(paths)),
                               subsequent_indent=" " * 11)
        shown = ", ".join(paths[:EXAMPLES_PER_REASON])
        more = len(paths) - EXAMPLES_PER_REASON
        lines.append("           " + shown + (" and %s more" % _n(more) if more > 0 else ""))
    return "\n".join(lines)


def format_report(result: ProbeResult, source: str = "", width: int = 100) -> str:
    """The whole CLI report: heading, table, problems and the summary line."""
    files = result.count(*ACTIONS) + len(result.problems)
    lines = ["Checked %s %s%s with %s (nothing was sent)." % (
        _n(files), "file" if files == 1 else "files", " in %s" % source if source else "",
        result.destination or "the destination"), ""]
    if result.groups:
        lines += [format_table(result.groups, width), ""]
    if result.problems:
        lines += [format_problems(result.problems, source, width), ""]
    lines.append(summary_line(result))
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add ``dicom-migrate probe``."""
    parser = subparsers.add_parser(
        "probe", help="check what the destination will accept, without sending anything",
        description="Read the headers of the files under SOURCE_DIR, ask the destination which "
                    "kinds of files and compressions it accepts (nothing is sent) and show "
                    "what a migration would do with each group of files. Exit code 0 when "
                    "every file can be sent, 1 when some cannot, 3 when the destination "
                    "cannot be reached or refuses the connection.")
    parser.add_argument("source", metavar="SOURCE_DIR", help="folder holding the DICOM files")
    add_destination_args(parser)
    parser.add_argument("--timeout", type=positive_number, default=30.0, metavar="SECONDS",
                        help="connection and association timeout (default: %(default)s)")
    parser.add_argument("--no-decompress", action="store_true",
                        help="check as a migration with --no-decompress would run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = os.path.abspath(args.source)
    settings = settings_from_args(args, decompress=not args.no_decompress)
    finished = probe(source, destination_from_args(args), settings, Control())
    width = max(80, min(shutil.get_terminal_size((100, 24)).columns, 120))
    print(format_report(finished.result, source, width))  # type: ignore[arg-type]
    sys.stdout.flush()
    return finished.exit_code
