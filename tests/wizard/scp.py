"""A scripted PACS for wizard tests: pynetdicom's own server, in this process, on loopback.

It answers C-ECHO, stores (decoded) every C-STORE of the SOP classes it supports, refuses
the classes it is told to leave out, fails chosen SOP Instance UIDs on their first attempt,
can sleep per file (to cancel mid-copy), and answers Study Root C-FIND at STUDY, SERIES and
IMAGE level about what it holds, the way a real PACS does.
"""
from __future__ import annotations

import fnmatch
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Set

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

LEVEL_KEYS = {
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
FAIL_STATUS = 0xC000  # "cannot understand": permanent, so the engine does not retry by itself


class ScriptedPACS:
    def __init__(self, aet: str = "TESTPACS", refuse_sop_classes: Iterable[str] = (),
                 fail_first: Iterable[str] = (), delay_s: float = 0.0) -> None:
        self.aet = aet
        self.refused = set(refuse_sop_classes)
        self.fail_first: Set[str] = set(fail_first)
        self.delay_s = delay_s
        self.stored: Dict[str, Dataset] = {}  # SOP Instance UID -> header of what arrived
        self.attempts: Dict[str, int] = {}
        self.finds: List[Dataset] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self.port = 0

    # -- life cycle -----------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1") -> "ScriptedPACS":
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax not in self.refused:
                # Default (uncompressed) transfer syntaxes only: compressed files must be
                # decompressed by the sender, as with many real PACS.
                ae.add_supported_context(context.abstract_syntax)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find)]
        self._server = ae.start_server((host, 0), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- storage --------------------------------------------------------------------------
    def _on_store(self, event: Any) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        with self._lock:
            self.attempts[uid] = self.attempts.get(uid, 0) + 1
            if uid in self.fail_first and self.attempts[uid] == 1:
                return FAIL_STATUS
            header = Dataset()
            for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate",
                            "SeriesInstanceUID", "Modality", "SOPInstanceUID", "SOPClassUID"):
                if keyword in ds:
                    setattr(header, keyword, ds.data_element(keyword).value)
            self.stored[uid] = header
        return 0x0000

    # -- query ----------------------------------------------------------------------------
    def _on_find(self, event: Any) -> Iterable[Any]:
        query = event.identifier
        self.finds.append(query)
        level = str(query.get("QueryRetrieveLevel", ""))
        if level not in LEVEL_KEYS:
            yield 0xA900, None
            return
        with self._lock:
            rows = list(self.stored.values())
        seen: Set[tuple] = set()
        for row in rows:
            if not all(_matches(query, row, k) for k in LEVEL_KEYS[level]):
                continue
            if not all(_matches(query, row, k) for k in ("PatientID", "StudyDate", "Modality")):
                continue
            key = tuple(str(row.get(k, "")) for k in LEVEL_KEYS[level])
            if key in seen:
                continue
            seen.add(key)
            yield 0xFF00, self._answer(query, row, level, rows)

    def _answer(self, query: Dataset, row: Dataset, level: str, rows: List[Dataset]) -> Dataset:
        answer = Dataset()
        answer.QueryRetrieveLevel = level
        for element in query:
            keyword = element.keyword
            if keyword in ("QueryRetrieveLevel", "") or element.VR == "SQ":
                continue
            if keyword == "NumberOfStudyRelatedInstances":
                value: Any = sum(1 for r in rows if r.StudyInstanceUID == row.StudyInstanceUID)
            elif keyword == "NumberOfSeriesRelatedInstances":
                value = sum(1 for r in rows if r.SeriesInstanceUID == row.SeriesInstanceUID)
            else:
                value = row.get(keyword, "")
            setattr(answer, keyword, value)
        return answer


def _matches(query: Dataset, row: Dataset, keyword: str) -> bool:
    wanted = query.get(keyword, None)
    if wanted is None or str(wanted) in ("", "*"):
        return True
    have = str(row.get(keyword, ""))
    options = str(wanted).split("\\")  # a UID list matches any of its values
    return any(fnmatch.fnmatchcase(have, option) for option in options)


def sop_uid_of(path: Any) -> Optional[str]:
    from pydicom import dcmread

    return str(dcmread(str(path), stop_before_pixels=True).SOPInstanceUID)
