"""A small receiving Storage SCP: the README demo, the wizard's practice mode, the self-test.

It accepts every storage SOP class (private and unknown ones too) in any transfer syntax, plus
Verification, and writes each object unchanged as a Part 10 file, or only counts it.

It also answers C-FIND (Study Root and Patient Root) about what it holds, so a practice run can
go all the way through verification and "resend missing". For that it keeps a small in-memory
index: eight strings per SOP instance, never the datasets. With an output folder, the files
already in it are indexed at start, so a restarted receiver still knows what it holds.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import threading
import time
import zlib
from io import BytesIO
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID
from pynetdicom import AE, VerificationPresentationContexts, _config, evt

from .association import enable_nodelay
from .config import check_ae_title, check_port
from .errors import ConfigError, UserFacingError

LOG = logging.getLogger(__name__)

_OUT_OF_RESOURCES = 0xA700
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_PENDING, _PENDING_PARTIAL, _SUCCESS, _CANCEL = 0xFF00, 0xFF01, 0x0000, 0xFE00
_UNABLE_TO_PROCESS = 0xC000
_unrestricted_lock = threading.Lock()
_unrestricted_users = 0
_unrestricted_before = False


def _use_unrestricted_storage(on: bool) -> None:
    """Reference-count pynetdicom's process-wide "accept any storage class" switch.

    pynetdicom has no per-AE way to accept private or unknown SOP classes; the switch only
    changes how acceptors negotiate, so it is on exactly while a receiver runs.
    """
    global _unrestricted_users, _unrestricted_before
    with _unrestricted_lock:
        if on:
            if _unrestricted_users == 0:
                _unrestricted_before = _config.UNRESTRICTED_STORAGE_SERVICE
                _config.UNRESTRICTED_STORAGE_SERVICE = True
            _unrestricted_users += 1
        else:
            _unrestricted_users -= 1
            if _unrestricted_users == 0:
                _config.UNRESTRICTED_STORAGE_SERVICE = _unrestricted_before


# -- what the receiver holds: a small index for C-FIND ------------------------------------
class Instance(NamedTuple):
    """The only things kept per received object (field names are the DICOM keywords)."""

    PatientID: str
    PatientName: str
    StudyInstanceUID: str
    StudyDate: str
    SeriesInstanceUID: str
    Modality: str
    SOPInstanceUID: str
    SOPClassUID: str


# Query/Retrieve level of each indexed attribute: PATIENT 0, STUDY 1, SERIES 2, IMAGE 3.
_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_ATTR_LEVEL = {"PatientID": 0, "PatientName": 0, "StudyInstanceUID": 1, "StudyDate": 1,
               "SeriesInstanceUID": 2, "Modality": 2, "SOPInstanceUID": 3, "SOPClassUID": 3}
_LEVEL_KEY = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
_MODEL_LEVELS = {STUDY_ROOT_FIND: ("STUDY", "SERIES", "IMAGE"), PATIENT_ROOT_FIND: _LEVELS}
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}
# The tags read from each object: the indexed ones plus the character set to decode names.
_TAGS = [Tag(kw) for kw in ("SpecificCharacterSet",) + Instance._fields]
_LAST_TAG = max(_TAGS)
_HEADER_LIMIT = 16 << 20  # of a deflated object, inflate at most this much to find the keys


class InstanceIndex:
    """Thread-safe map SOP Instance UID -> Instance; the newest object per UID wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Dict[str, Instance] = {}

    def add(self, item: Instance, replace: bool = True) -> None:
        with self._lock:
            if replace:
                self._items[item.SOPInstanceUID] = item
            else:
                self._items.setdefault(item.SOPInstanceUID, item)

    def snapshot(self) -> List[Instance]:
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, sop_instance_uid: object) -> bool:
        return sop_instance_uid in self._items


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, None)
    except Exception:  # an undecodable value must not stop the receiver
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().rstrip("\x00").strip()


def instance_of(ds: Dataset, sop_uid: str = "", sop_class: str = "") -> Optional[Instance]:
    """The index entry for ``ds`` (the UIDs given are fallbacks); None without a SOP UID."""
    values = {kw: _text(ds, kw) for kw in Instance._fields}
    values["SOPInstanceUID"] = values["SOPInstanceUID"] or sop_uid.strip().rstrip("\x00")
    values["SOPClassUID"] = values["SOPClassUID"] or sop_class.strip().rstrip("\x00")
    if not values["SOPInstanceUID"]:
        return None
    # Most values repeat across a study's objects: share one string per value.
    return Instance(**{kw: v if kw == "SOPInstanceUID" else sys.intern(v)
                       for kw, v in values.items()})


def _stop_after_keys(tag: Any, vr: Any, length: int) -> bool:
    return bool(tag > _LAST_TAG)


def instance_from_bytes(raw: bytes, transfer_syntax: str, sop_uid: str = "",
                        sop_class: str = "") -> Optional[Instance]:
    """Read only the indexed keys from a dataset as received (no file meta), cheaply."""
    ts = UID(transfer_syntax)
    data = raw
    if ts == _DEFLATED:
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, _HEADER_LIMIT)
    try:
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
    except ValueError:  # a private transfer syntax: the dataset is explicit VR little endian
        implicit, little = False, True
    ds = read_dataset(BytesIO(data), implicit, little, stop_when=_stop_after_keys,
                      specific_tags=list(_TAGS))
    return instance_of(ds, sop_uid, sop_class)


def instance_from_file(path: str) -> Optional[Instance]:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
    meta = getattr(ds, "file_meta", None) or Dataset()
    return instance_of(ds, _text(meta, "MediaStorageSOPInstanceUID"),
                       _text(meta, "MediaStorageSOPClassUID"))


def _values(elem: DataElement) -> List[str]:
    """A query key's values ([] = universal matching)."""
    value = elem.value
    if value is None or value == "" or (isinstance(value, (list, MultiValue)) and not value):
        return []
    items = value if isinstance(value, (list, MultiValue)) else [value]
    out = [str(v).strip().rstrip("\x00").strip() for v in items]
    return [v for v in out if v]


def _wildcard(pattern: str, fold: bool) -> Callable[[str], bool]:
    if "*" not in pattern and "?" not in pattern:
        return (lambda v: v.upper() == pattern.upper()) if fold else (lambda v: v == pattern)
    regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                               for c in pattern) + r"\Z", re.IGNORECASE if fold else 0)
    return lambda v: regex.match(v) is not None


def _date_range(pattern: str) -> Callable[[str], bool]:
    if "-" not in pattern:
        return lambda v: v == pattern
    low, high = pattern.split("-", 1)
    return lambda v: bool(v) and (not low or v >= low) and (not high or v <= high)


def _person(name: str) -> str:
    # "DOE^JOHN^^" and "DOE^JOHN" are the same name.
    return name.rstrip("^ ")


def _matcher(keyword: str, values: List[str]) -> Optional[Callable[[Instance], bool]]:
    """A test for one non-empty key; None when we cannot match on that key."""
    if keyword in _UID_KEYS:
        wanted = set(values)  # UID list matching: any of them
        return lambda item: getattr(item, keyword) in wanted
    if keyword == "StudyDate":
        tests = [_date_range(v) for v in values]
        return lambda item: any(t(item.StudyDate) for t in tests)
    if keyword in ("PatientID", "Modality", "ModalitiesInStudy"):
        field = "Modality" if keyword == "ModalitiesInStudy" else keyword
        tests = [_wildcard(v, False) for v in values]
        return lambda item: any(t(getattr(item, field)) for t in tests)
    if keyword == "PatientName":
        tests = [_wildcard(_person(v), True) for v in values]
        return lambda item: any(t(_person(item.PatientName)) for t in tests)
    return None


class _Groups:
    """Everything held, grouped by patient, study and series (for counts and lists)."""

    def __init__(self, items: Iterable[Instance]) -> None:
        self.by: Tuple[Dict[str, List[Instance]], ...] = ({}, {}, {})
        for item in items:
            for level in range(3):
                self.by[level].setdefault(getattr(item, _LEVEL_KEY[level]), []).append(item)

    def of(self, level: int, item: Instance) -> List[Instance]:
        return self.by[level].get(getattr(item, _LEVEL_KEY[level]), [item])


def _count(items: List[Instance], keyword: str) -> int:
    return len({getattr(i, keyword) for i in items})


# Answer keys computed from the groups: keyword -> (group level, how).
_COMPUTED: Dict[str, Tuple[int, Callable[[List[Instance]], Any]]] = {
    "NumberOfPatientRelatedStudies": (0, lambda g: _count(g, "StudyInstanceUID")),
    "NumberOfPatientRelatedSeries": (0, lambda g: _count(g, "SeriesInstanceUID")),
    "NumberOfPatientRelatedInstances": (0, len),
    "NumberOfStudyRelatedSeries": (1, lambda g: _count(g, "SeriesInstanceUID")),
    "NumberOfStudyRelatedInstances": (1, len),
    "NumberOfSeriesRelatedInstances": (2, len),
    "ModalitiesInStudy": (1, lambda g: sorted({i.Modality for i in g} - {""})),
    "SOPClassesInStudy": (1, lambda g: sorted({i.SOPClassUID for i in g} - {""})),
}


def find(items: List[Instance], level: str, query: Dataset) -> Tuple[List[Dataset], bool]:
    """The answers to ``query`` at ``level`` over ``items``, one per matching entity, and
    whether some non-empty key could not be used for matching (status 0xFF01)."""
    depth = _LEVELS.index(level)
    tests, partial = [], False
    for elem in query:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_KEYS or elem.VR == "SQ":
            continue
        values = _values(elem)
        if not values:
            continue  # universal matching
        test = _matcher(keyword, values)
        if test is None:
            partial = True  # e.g. a count or an attribute we do not keep: not matched on
        else:
            tests.append(test)
    matched: Dict[str, Instance] = {}
    for item in items:
        if all(test(item) for test in tests):
            matched.setdefault(getattr(item, _LEVEL_KEY[depth]), item)
    groups = _Groups(items)
    return [_answer(query, depth, matched[key], groups) for key in sorted(matched)], partial


def _answer(query: Dataset, depth: int, item: Instance, groups: _Groups) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = _LEVELS[depth]
    for elem in query:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_KEYS or elem.tag.is_private or " or " in elem.VR:
            continue
        if keyword in _ATTR_LEVEL:
            # Attributes of a lower level than asked about are not one value: left empty.
            setattr(ds, keyword, getattr(item, keyword) if _ATTR_LEVEL[keyword] <= depth else "")
        elif keyword in _COMPUTED:
            level, how = _COMPUTED[keyword]
            setattr(ds, keyword, how(groups.of(level, item)))
        else:  # a key we do not keep is returned empty, as the standard asks
            ds.add(DataElement(elem.tag, elem.VR, [] if elem.VR == "SQ" else None))
    for level in range(1, depth + 1):  # unique keys of this level and the ones above
        if _LEVEL_KEY[level] not in ds:
            setattr(ds, _LEVEL_KEY[level], getattr(item, _LEVEL_KEY[level]))
    if any(ord(c) > 127 for c in item.PatientName):
        ds.SpecificCharacterSet = "ISO_IR 192"  # names are kept decoded: answer in UTF-8
    return ds


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


class Receiver:
    """A running receiver. ``count``, ``bytes`` and ``index`` may be read from any thread.

    ``count`` and ``bytes`` are this session's objects; ``index`` is everything it answers
    C-FIND about (this session's objects plus, with an output folder, the files found there).
    """

    def __init__(self, aet: str, out_dir: Optional[str]) -> None:
        self.aet = aet
        self.out_dir = out_dir
        self.port = 0
        self.host = ""
        self.count = 0
        self.bytes = 0
        self.index = InstanceIndex()
        self.preloaded = 0  # objects indexed from the output folder at start
        self._lock = threading.Lock()
        self._server: Any = None
        self._ready = threading.Event()  # set once the output folder is indexed
        self._ready.set()
        self._stopping = False

    def handle_store(self, event: Any) -> int:
        """EVT_C_STORE handler (runs on the association's thread)."""
        raw = event.request.DataSet.getvalue()  # the bytes as sent: nothing is re-encoded
        if self.out_dir is not None:
            try:
                self._write(event, raw)
            except OSError as exc:
                LOG.error("Could not save a received object: %s", exc)
                return _OUT_OF_RESOURCES
        self._index_received(event, raw)
        with self._lock:
            self.count += 1
            self.bytes += len(raw)
        return 0x0000

    def _index_received(self, event: Any, raw: bytes) -> None:
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        sop_class = str(event.request.AffectedSOPClassUID or "")
        try:
            item = instance_from_bytes(raw, str(event.context.transfer_syntax), sop_uid,
                                       sop_class)
        except Exception:  # an odd header only costs its query keys, never the object
            LOG.warning("Could not read the query keys of %s", sop_uid, exc_info=True)
            item = instance_of(Dataset(), sop_uid, sop_class)
        if item is not None:
            self.index.add(item)

    def handle_find(self, event: Any) -> Iterator[Tuple[Any, Optional[Dataset]]]:
        """EVT_C_FIND handler: one pending answer per match, then success."""
        self._ready.wait()  # never answer "not there" while the folder is still being read
        model = str(event.request.AffectedSOPClassUID or "")
        try:
            query = event.identifier
            level = str(query.get("QueryRetrieveLevel", "") or "").strip().upper()
        except Exception as exc:  # an identifier we cannot even decode
            yield _failure(_UNABLE_TO_PROCESS, "Cannot decode the query: %s" % exc), None
            return
        if level not in _MODEL_LEVELS.get(model, ()):
            yield _failure(_UNABLE_TO_PROCESS, "Unknown query level '%s'" % level), None
            return
        answers, partial = find(self.index.snapshot(), level, query)
        for ds in answers:
            if event.is_cancelled:
                yield _CANCEL, None
                return
            yield (_PENDING_PARTIAL if partial else _PENDING), ds
        yield _SUCCESS, None

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until the files already in the output folder are indexed."""
        return self._ready.wait(timeout)

    def _index_folder(self) -> None:
        assert self.out_dir is not None
        try:
            names = sorted(n for n in os.listdir(self.out_dir) if n.endswith(".dcm"))
            for name in names:
                if self._stopping:
                    return
                try:
                    item = instance_from_file(os.path.join(self.out_dir, name))
                except Exception:  # not DICOM, or vanished: simply not known
                    LOG.debug("Not indexed: %s", name, exc_info=True)
                    continue
                if item is not None:
                    self.index.add(item, replace=False)  # an object received meanwhile wins
                    self.preloaded += 1
        except OSError as exc:
            LOG.warning("Could not read %s to answer queries: %s", self.out_dir, exc)
        finally:
            self._ready.set()

    def _write(self, event: Any, raw: bytes) -> None:
        assert self.out_dir is not None
        name = _safe_name(str(event.request.AffectedSOPInstanceUID or ""))
        fd, temp = tempfile.mkstemp(suffix=".part", dir=self.out_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(DicomFileLike(handle), event.file_meta)
                handle.write(raw)
            os.replace(temp, os.path.join(self.out_dir, name + ".dcm"))
        except OSError:
            os.unlink(temp)
            raise

    def stop(self) -> None:
        """Stop listening and close open associations. Safe to call twice."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            _use_unrestricted_storage(False)

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _safe_name(uid: str) -> str:
    # A UID is digits and dots; anything else must not be able to reach the file system.
    cleaned = re.sub(r"[^0-9A-Za-z.\-]", "_", uid.strip().rstrip("\x00")).strip(".")
    return cleaned or "no-sop-instance-uid"


def start_receiver(port: int, out_dir: Optional[str] = None, aet: str = "PRACTICE",
                   host: str = "127.0.0.1", index_existing: bool = True) -> Receiver:
    """Start listening on ``host:port`` (port 0 picks a free one) in the background.

    With ``out_dir`` and ``index_existing``, the files already there are indexed in the
    background (queries wait for that) so C-FIND answers for them too.
    Raises ConfigError for a bad AE title or port and UserFacingError when the port is taken.
    """
    for problem in (check_ae_title(aet), check_port(port) if port else None):
        if problem:
            raise ConfigError(problem)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    receiver = Receiver(aet.strip(), out_dir)
    ae = AE(ae_title=receiver.aet)
    ae.supported_contexts = VerificationPresentationContexts
    for model in (STUDY_ROOT_FIND, PATIENT_ROOT_FIND):
        ae.add_supported_context(model)
    ae.maximum_pdu_size = 0  # no limit: senders then use big PDUs, fewer round trips
    handlers: List[Any] = [(evt.EVT_C_STORE, receiver.handle_store),
                           (evt.EVT_C_FIND, receiver.handle_find),
                           (evt.EVT_CONN_OPEN, enable_nodelay)]
    _use_unrestricted_storage(True)
    try:
        receiver._server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    except OSError as exc:
        _use_unrestricted_storage(False)
        raise ConfigError("Cannot receive on %s port %d (%s). Pick another port, such as "
                              "11112, or close the program that uses this one."
                              % (host, port, exc.strerror or exc))
    receiver.host, receiver.port = host, int(receiver._server.server_address[1])
    if out_dir is not None and index_existing:
        receiver._ready.clear()
        threading.Thread(target=receiver._index_folder, name="receiver-index",
                         daemon=True).start()
    return receiver


def register(subparsers: Any) -> None:
    """Add ``dicom-migrate receive``."""
    parser = subparsers.add_parser(
        "receive", help="run a practice receiver (a small Storage SCP) until Ctrl+C",
        description="Receive DICOM objects over C-STORE, to practise or test a migration "
                    "without a real PACS. It also answers C-FIND (Study and Patient Root) "
                    "about what it holds, so 'verify' works against it. Press Ctrl+C to stop.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--out", metavar="DIR",
                        help="save each object as DIR/<SOP Instance UID>.dcm; queries also "
                             "see the files already there (default: only count them)")
    parser.add_argument("--aet", default="PRACTICE", help="our AE title (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this computer only; "
                             "0.0.0.0 for every network card)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    receiver = start_receiver(args.port, args.out, args.aet, args.host)
    where = "saving into %s" % args.out if args.out else "counting only, nothing is saved"
    print("Receiving as %s on %s:%d (%s). Press Ctrl+C to stop."
          % (receiver.aet, receiver.host, receiver.port, where), flush=True)
    shown = -1
    try:
        if args.out and receiver.wait_ready() and receiver.preloaded:
            print("Answering queries also for the %d files already in %s."
                  % (receiver.preloaded, args.out), flush=True)
        while True:
            if receiver.count != shown:
                shown = receiver.count
                print("\rReceived %d files (%.1f MB)" % (shown, receiver.bytes / 1e6),
                      end="", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    print("\nStopped. Received %d files (%.1f MB)." % (receiver.count, receiver.bytes / 1e6))
    return 0
