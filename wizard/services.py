"""The wizard's only door into the engine's work functions.

Each function here returns a ``work(control) -> JobFinished`` callable for
``engine.jobs.start_job``; nothing here runs engine work on the Tk thread. Engine modules are
imported when a job runs, so a build that lacks one still opens and says what is missing.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from types import ModuleType
from typing import Any, Callable, Collection, List, Optional

from engine.config import Destination, Settings
from engine.errors import UserFacingError
from engine.events import JobFinished
from engine.jobs import Control

LOG = logging.getLogger(__name__)

Work = Callable[[Control], JobFinished]


class EngineMissing(UserFacingError):
    """This build of the program lacks an engine part the wizard needs."""


def engine_module(name: str) -> ModuleType:
    """Import ``engine.<name>``; raise EngineMissing with a sentence for IT if it is absent."""
    try:
        return importlib.import_module("engine." + name)
    except ImportError as exc:
        if exc.name != "engine." + name:
            raise  # a real bug inside an existing module must not be hidden
        raise EngineMissing("This copy of the program is missing the part that does this "
                            "(engine.%s). Please pass this message to IT." % name) from exc


def _call(func: Callable[..., Any], *args: Any, **optional: Any) -> Any:
    """Call ``func`` passing only the keyword options its signature accepts (engine parts
    grow options over time; an older engine simply ignores the extras)."""
    params = inspect.signature(func).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in optional.items() if takes_any or k in params}
    return func(*args, **kwargs)


def echo_work(dest: Destination, settings: Settings) -> Work:
    def work(control: Control) -> JobFinished:
        result = engine_module("echo").echo(dest, settings)
        text = "Connection works." if getattr(result, "ok", False) else "Connection failed."
        return JobFinished(control.job_id, text, result=result)
    return work


def receiver_work(out_dir: Optional[str], port: int = 0) -> Work:
    """Start the local practice receiver (port 0: any free port); ``result`` is the Receiver."""
    def work(control: Control) -> JobFinished:
        receiver = _call(engine_module("receiver").start_receiver, port, out_dir=out_dir)
        return JobFinished(control.job_id, "Practice receiver started.", result=receiver)
    return work


def default_ports() -> List[int]:
    try:
        return list(engine_module("discovery").DEFAULT_PORTS)
    except EngineMissing:
        return [104, 11112, 4242]


def discovery_work(subnet: str, extra_hosts: str, ports_text: str, threads: int,
                   settings: Settings) -> Work:
    """Search the given addresses; bad input ends the job with a sentence (ConfigError)."""
    def work(control: Control) -> JobFinished:
        mod = engine_module("discovery")
        hosts = mod.parse_targets(subnet, extra_hosts)
        ports = mod.parse_ports(ports_text)
        nodes = list(_call(mod.discover, hosts, ports, control, threads=threads,
                           user_aet=settings.calling_aet, settings=settings))
        return JobFinished(control.job_id, "%d answer(s)" % len(nodes),
                           cancelled=control.cancelled, result=nodes)
    return work


def scan_work(source: str) -> Work:
    def work(control: Control) -> JobFinished:
        return engine_module("scan").scan_tree(source, control)
    return work


def probe_work(paths_or_source: Any, dest: Destination, settings: Settings) -> Work:
    def work(control: Control) -> JobFinished:
        return engine_module("probe").probe(paths_or_source, dest, settings, control)
    return work


def migration_work(source: str, dest: Destination, settings: Settings, *, work_dir: str,
                   retry_failed: bool = False, only_paths: Optional[Collection[str]] = None,
                   associations: int = 1, max_mbps: Optional[float] = None,
                   window: Optional[str] = None) -> Work:
    def work(control: Control) -> JobFinished:
        run = engine_module("migrate").run_migration
        return _call(run, source, dest, settings, control, work_dir=work_dir,
                     retry_failed=retry_failed, only_paths=only_paths, associations=associations,
                     max_mbps=max_mbps, window=window)
    return work


def verify_work(work_dir: str, dest: Destination, settings: Settings) -> Work:
    def work(control: Control) -> JobFinished:
        return engine_module("verify").verify(work_dir, dest, settings, control)
    return work


def resend_work(work_dir: str, dest: Destination, settings: Settings, source: str,
                associations: int = 1) -> Work:
    """Mark what verification found missing as failed, then send it again."""
    def work(control: Control) -> JobFinished:
        verify = engine_module("verify")
        return _call(verify.resend_missing, work_dir, dest, settings, control, source=source,
                     associations=associations)
    return work


def export_csv_work(work_dir: str, out_path: str, dest_key: Optional[str]) -> Work:
    def work(control: Control) -> JobFinished:
        rows = engine_module("audit").export_csv(work_dir, out_path, dest_key=dest_key)
        return JobFinished(control.job_id, "%d rows written to %s" % (rows, out_path),
                           result=rows)
    return work


def resume_check_work(work_dir: str, source: str, dest_key: str) -> Work:
    """Look for an interrupted copy of ``source`` to ``dest_key``; ``result`` is its summary
    (engine ``manifest.unfinished_run``) or None."""
    def work(control: Control) -> JobFinished:
        manifest = engine_module("manifest")
        finder = getattr(manifest, "unfinished_run", None)
        if finder is None:
            LOG.info("engine.manifest.unfinished_run is missing; no resume offer")
            return JobFinished(control.job_id, "resume check unavailable", result=None)
        summary = finder(work_dir, source, dest_key)
        return JobFinished(control.job_id, "resume check done", result=summary)
    return work
