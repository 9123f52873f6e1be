"""TEST DOUBLES for engine calls the wizard needs but the engine does not provide yet.

Used only when the real function is missing (see ``install_missing`` and the ``engine_parts``
fixture); each double follows the contract the wizard codes against and talks to the real
test PACS, so the wizard still runs end to end. Delete an entry once the engine has it.
"""
from __future__ import annotations

import os
import types
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from engine.config import Destination, Settings
from engine.events import JobFinished, Progress, StudyVerified
from engine.jobs import Control

ELE, ILE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
NEEDED = {  # engine module -> functions the wizard calls
    "probe": ("probe",),
    "verify": ("verify", "resend_missing"),
    "manifest": ("unfinished_run",),
}


@dataclass
class DoubleProbeResult:
    groups: List[Tuple[str, str, int, str, str]] = field(default_factory=list)


@dataclass
class DoubleVerifyResult:
    studies: List[StudyVerified] = field(default_factory=list)


def _ae(settings: Settings) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=settings.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


def double_probe(paths_or_source: Any, dest: Destination, settings: Settings,
                 control: Control) -> JobFinished:
    """Group files by (SOP class, transfer syntax) and ask the PACS about each group."""
    from engine.headers import HeaderProblem, read_header
    from engine.walk import iter_files

    paths = (list(paths_or_source) if not isinstance(paths_or_source, str)
             else [e.path if hasattr(e, "path") else e for e in iter_files(paths_or_source)])
    groups: Dict[Tuple[str, str], int] = defaultdict(int)
    for path in paths:
        st = os.stat(path)
        header = read_header(path, st.st_size, st.st_mtime_ns)
        if not isinstance(header, HeaderProblem):
            groups[(header.sop_class_uid, header.transfer_syntax)] += 1
    ae = _ae(settings)
    for sop, ts in groups:
        for syntax in dict.fromkeys((ts, ELE, ILE)):
            ae.add_requested_context(sop, syntax)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.called_aet)
    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    if assoc.is_established:
        assoc.release()
    result = DoubleProbeResult()
    for (sop, ts), count in sorted(groups.items()):
        if (sop, ts) in accepted:
            action, why = "as is", "The PACS accepts these files as they are."
        elif (sop, ELE) in accepted or (sop, ILE) in accepted:
            action, why = "decompress", "The PACS only takes them uncompressed."
        else:
            action, why = "refused", "The PACS does not accept this kind of object at all."
        result.groups.append((_uid_name(sop), _uid_name(ts), count, action, why))
    return JobFinished(control.job_id, "probe done", result=result)


def _found_sop_uids(dest: Destination, settings: Settings, study_uid: str) -> List[str]:
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind as FIND,
    )

    ae = _ae(settings)
    ae.add_requested_context(FIND)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.called_aet)
    found: List[str] = []
    if not assoc.is_established:
        return found
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    for status, identifier in assoc.send_c_find(query, FIND):
        if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
            found.append(str(identifier.SOPInstanceUID))
    assoc.release()
    return found


def _compare(work_dir: str, dest: Destination, settings: Settings,
             control: Control) -> List[StudyVerified]:
    from engine.manifest import ManifestStore

    store = ManifestStore(work_dir)
    try:
        sent = store.sent_by_study(dest.key)
    finally:
        store.close()
    rows: List[StudyVerified] = []
    for index, (study, instances) in enumerate(sorted(sent.items()), 1):
        expected = {sop for sop, _, _ in instances}
        found = set(_found_sop_uids(dest, settings, study))
        missing = tuple(sorted(expected - found))
        row = StudyVerified(control.job_id, study, instances[0][2], len(expected),
                            len(expected & found), "MATCH" if not missing else "MISMATCH",
                            missing)
        control.emit(row)
        control.emit(Progress(control.job_id, index, len(sent)))
        rows.append(row)
    return rows


def double_verify(work_dir: str, dest: Destination, settings: Settings,
                  control: Control) -> JobFinished:
    rows = _compare(work_dir, dest, settings, control)
    bad = sum(1 for r in rows if r.verdict != "MATCH")
    return JobFinished(control.job_id, "%d studies, %d not matching" % (len(rows), bad),
                       result=DoubleVerifyResult(rows))


def double_resend_missing(work_dir: str, dest: Destination, settings: Settings,
                          control: Control, source: str = "", **_: Any) -> JobFinished:
    from engine.manifest import ManifestStore
    from engine.migrate import run_migration

    rows = _compare(work_dir, dest, settings, Control(0))  # silent: only the resend reports
    missing = [uid for r in rows for uid in r.missing]
    store = ManifestStore(work_dir)
    try:
        store.mark_for_resend(dest.key, missing, "missing from the PACS at verification")
    finally:
        store.close()
    return run_migration(source, dest, settings, control, work_dir=work_dir, retry_failed=True)


def double_unfinished_run(work_dir: str, source: str, dest_key: str) -> Optional[Dict[str, Any]]:
    from engine.manifest import ManifestStore, manifest_path

    if not manifest_path(work_dir).exists():
        return None
    store = ManifestStore(work_dir)
    try:
        run = store.last_run(source, dest_key)
    finally:
        store.close()
    return run if run and run["state"] != "finished" else None


DOUBLES = {
    ("probe", "probe"): double_probe,
    ("verify", "verify"): double_verify,
    ("verify", "resend_missing"): double_resend_missing,
    ("manifest", "unfinished_run"): double_unfinished_run,
}


def missing_calls() -> List[str]:
    """``module.function`` names the engine does not provide yet."""
    from wizard import services

    missing = []
    for module, names in NEEDED.items():
        try:
            real: Any = services.engine_module(module)
        except services.EngineMissing:
            real = None
        missing.extend("%s.%s" % (module, n) for n in names if not hasattr(real, n))
    return missing


def patched_engine_module(original: Any) -> Any:
    """Wrap ``services.engine_module`` so missing functions come from the doubles above."""
    from wizard.services import EngineMissing

    def engine_module(name: str) -> Any:
        try:
            real: Any = original(name)
        except EngineMissing:
            if name not in NEEDED:
                raise
            real = None
        wanted: Sequence[str] = NEEDED.get(name, ())
        if real is not None and all(hasattr(real, n) for n in wanted):
            return real
        merged = types.SimpleNamespace(**(vars(real) if real is not None else {}))
        for fname in wanted:
            if not hasattr(merged, fname):
                setattr(merged, fname, DOUBLES[(name, fname)])
        return merged
    return engine_module
