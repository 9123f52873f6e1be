"""Messages the engine sends to whoever runs it (CLI, wizard, tests).

Every message is a frozen dataclass holding plain values only, so it can cross a thread
boundary through a queue. Imports neither pydicom nor pynetdicom.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple


class Outcome(str, enum.Enum):
    """Final state of one file; the values are what the manifest and CSV store."""

    SENT = "sent"
    WARNING = "sent_with_warning"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class EngineEvent:
    job_id: int


@dataclass(frozen=True)
class JobStarted(EngineEvent):
    kind: str
    total: Optional[int] = None


@dataclass(frozen=True)
class Progress(EngineEvent):
    """Running totals. ``total`` is None while the size of the job is unknown."""

    done: int
    total: Optional[int]
    bytes_done: int = 0
    files_per_s: float = 0.0
    mb_per_s: float = 0.0
    eta_s: Optional[float] = None
    current: str = ""
    counts: Tuple[Tuple[str, int], ...] = ()


@dataclass(frozen=True)
class FileDone(EngineEvent):
    """One file reached a final state (sent, warning, skipped or failed)."""

    path: str
    outcome: Outcome
    reason: str
    sop_instance_uid: str = ""
    patient: str = ""
    status: Optional[int] = None


@dataclass(frozen=True)
class AssociationOpened(EngineEvent):
    peer: str
    accepted: int
    rejected: int


@dataclass(frozen=True)
class AssociationClosed(EngineEvent):
    how: str  # "released", "aborted", "rejected" or "refused"
    reason: str = ""


@dataclass(frozen=True)
class NodeFound(EngineEvent):
    """Discovery: one open port, and whether DICOM answered there."""

    host: str
    port: int
    dicom: bool
    accepted_aet: str = ""  # the called AE title that was accepted (not the PACS's real title)
    elapsed_ms: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class StudyVerified(EngineEvent):
    """Verification: one study compared between the manifest and the destination."""

    study_instance_uid: str
    patient: str
    expected: int
    found: int
    verdict: str  # "MATCH", "MISMATCH" or "MISSING"
    missing: Tuple[str, ...] = ()


@dataclass(frozen=True)
class LogLine(EngineEvent):
    level: str  # "info", "notice" (shown to the user, not a problem), "warning", "error"
    text: str


@dataclass(frozen=True)
class JobFinished(EngineEvent):
    """Terminal event of a job that ran to its end (or was cancelled cleanly)."""

    summary: str
    counts: Dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    exit_code: int = 0
    result: object = None


@dataclass(frozen=True)
class JobFailed(EngineEvent):
    """Terminal event of a job that stopped on an unexpected error."""

    message: str
    traceback: str = ""
    exit_code: int = 1  # 2: invalid settings, 3: destination unreachable (as the CLI exits)


Sink = Callable[[EngineEvent], None]


def null_sink(event: EngineEvent) -> None:
    """A sink that drops everything (for callers that do not listen)."""
