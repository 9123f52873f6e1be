"""Scan first: read every header so a person can pick patients, studies and series.

Only header fields are kept (a few hundred bytes per file), never pixel data.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .events import JobFinished, Progress
from .headers import HeaderProblem, InstanceHeader, read_header
from .jobs import Control
from .walk import walk_source


@dataclass
class SeriesNode:
    series_uid: str
    modality: str
    description: str
    number: str = ""
    files: List[str] = field(default_factory=list)
    bytes: int = 0
    # (SOP class, transfer syntax) -> file count, for the pre-flight probe
    syntaxes: Dict[Tuple[str, str], int] = field(default_factory=dict)


@dataclass
class StudyNode:
    study_uid: str
    date: str
    description: str
    series: List[SeriesNode] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(len(s.files) for s in self.series)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.series)

    @property
    def modalities(self) -> str:
        return "/".join(sorted({s.modality for s in self.series if s.modality}))


@dataclass
class PatientNode:
    patient_id: str
    name: str
    studies: List[StudyNode] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(s.files for s in self.studies)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.studies)


@dataclass
class ScanResult:
    source: str
    patients: List[PatientNode] = field(default_factory=list)
    problems: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    total_files: int = 0
    total_bytes: int = 0

    def all_files(self) -> List[str]:
        return [f for p in self.patients for st in p.studies for se in st.series for f in se.files]


class _Builder:
    def __init__(self, source: str) -> None:
        self.result = ScanResult(source)
        self._patients: Dict[Tuple[str, str], PatientNode] = {}
        self._studies: Dict[str, StudyNode] = {}
        self._series: Dict[Tuple[str, str], SeriesNode] = {}

    def add(self, h: InstanceHeader) -> None:
        key = (h.patient_id, h.patient_name)
        patient = self._patients.get(key)
        if patient is None:
            patient = self._patients[key] = PatientNode(h.patient_id, h.patient_name)
            self.result.patients.append(patient)
        study = self._studies.get(h.study_uid)
        if study is None:
            study = self._studies[h.study_uid] = StudyNode(h.study_uid, h.study_date,
                                                           h.study_description)
            patient.studies.append(study)
        skey = (h.study_uid, h.series_uid)
        series = self._series.get(skey)
        if series is None:
            series = self._series[skey] = SeriesNode(h.series_uid, h.modality,
                                                     h.series_description, h.series_number)
            study.series.append(series)
        series.files.append(h.path)
        series.bytes += h.size
        pair = (h.sop_class_uid, h.transfer_syntax)
        series.syntaxes[pair] = series.syntaxes.get(pair, 0) + 1
        self.result.total_files += 1
        self.result.total_bytes += h.size


def scan_tree(source: str, control: Control) -> JobFinished:
    """Read every header under ``source``; the JobFinished ``result`` is a ScanResult."""
    source = os.path.abspath(source)
    builder = _Builder(source)
    done, last = 0, 0.0
    for batch in walk_source(source):
        builder.result.problems.extend(batch.problems + batch.skipped)
        for entry in batch.files:
            if control.cancelled:
                return JobFinished(control.job_id, "Scan cancelled.", cancelled=True,
                                   result=builder.result)
            control.wait_if_paused()
            header = read_header(entry.path, entry.size, entry.mtime_ns)
            if isinstance(header, HeaderProblem):
                builder.result.problems.append((header.path, header.reason))
            else:
                builder.add(header)
            done += 1
            if time.monotonic() - last > 0.25:
                last = time.monotonic()
                control.emit(Progress(control.job_id, done, None, current=batch.directory))
    r = builder.result
    control.emit(Progress(control.job_id, done, done, current=""))
    summary = ("Found %d DICOM files of %d patients (%.1f MB); %d other files."
               % (r.total_files, len(r.patients), r.total_bytes / 1e6, len(r.problems)))
    return JobFinished(control.job_id, summary, {"files": r.total_files,
                                                 "problems": len(r.problems)}, result=r)


def filter_patients(result: ScanResult, text: str = "", modality: str = "",
                    date_from: str = "", date_to: str = "") -> List[PatientNode]:
    """Patients (with only their matching studies) for the wizard's filters."""
    text, modality = text.strip().lower(), modality.strip().upper()
    out: List[PatientNode] = []
    for p in result.patients:
        if text and text not in p.name.lower() and text not in p.patient_id.lower():
            continue
        studies = [s for s in p.studies if _study_matches(s, modality, date_from, date_to)]
        if studies:
            out.append(PatientNode(p.patient_id, p.name, studies))
    return out


def _study_matches(study: StudyNode, modality: str, date_from: str, date_to: str) -> bool:
    if modality and modality not in {s.modality.upper() for s in study.series}:
        return False
    if date_from and (not study.date or study.date < date_from):
        return False
    if date_to and (not study.date or study.date > date_to):
        return False
    return True

