#!/usr/bin/env python3
"""Speed and memory figures for the README, measured against DCMTK storescu in the same run.

    python scripts/benchmark.py                      # storescp receiver: small + 0.5 MB files
    python scripts/benchmark.py --orthanc            # also into a real Orthanc, 1 and 4 streams
    python scripts/benchmark.py --orthanc --repeat 3 --orthanc-files 5000 --small 0 --large 0
    python scripts/benchmark.py --memory-files 100000   # peak memory + resumed re-run speed

Prints files/s and MB/s for our tool and for storescu (TCP_NODELAY=1 on every DCMTK process)
and the ratio. Nothing here asserts a number: it reports.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.uid import generate_uid  # noqa: E402

from tests.corpus import make_dicom  # noqa: E402
from tests.peers import OrthancPeer, StoreSCPPeer, free_port  # noqa: E402



def make_store(root: Path, count: int, rows: int, per_dir: int = 200) -> Tuple[int, int]:
    """Write ``count`` CT files of rows x rows 16-bit pixels; return (files, bytes).

    One template is written with pydicom, the rest are byte copies with a fresh SOP Instance
    UID patched in place (same width), which is fast enough for 100,000 files.
    """
    template_path = root / "template.tmp"
    base = generate_uid()[:40]  # unique per run; every UID below has the same length
    uid = "%s.%d" % (base, 10 ** 12)
    make_dicom(template_path, Rows=rows, Columns=rows, SOPInstanceUID=uid)
    data = template_path.read_bytes()
    template_path.unlink()
    old = uid.encode()
    total = 0
    for i in range(count):
        folder = root / ("study%04d" % (i // per_dir))
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        new = "%s.%d" % (base, 10 ** 12 + i)
        blob = data.replace(old, new.encode())
        (folder / ("im%06d.dcm" % i)).write_bytes(blob)
        total += len(blob)
    return count, total


def nodelay_env() -> Dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1", PYTHONPATH=str(ROOT))


_last_cpu = [0.0]  # CPU seconds (user + system) of the last run_timed's commands


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(cmds: Sequence[List[str]]) -> Tuple[float, int]:
    """Run the commands in parallel; (seconds, worst exit code). Their CPU time, which on a
    small machine is taken from the receiver, goes to _last_cpu."""
    cpu_before = children_cpu()
    start = time.monotonic()
    procs = [subprocess.Popen(c, env=nodelay_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for c in cmds]
    codes = []
    for p in procs:
        _, err = p.communicate()
        codes.append(p.returncode)
        if p.returncode not in (0, 1):
            sys.stderr.write(err.decode(errors="replace")[-2000:])
    elapsed = time.monotonic() - start
    _last_cpu[0] = children_cpu() - cpu_before
    return elapsed, max(codes)


def storescu_cmds(dirs: Sequence[Path], port: int, aet: str, streams: int) -> List[List[str]]:
    groups: List[List[str]] = [[] for _ in range(streams)]
    for i, d in enumerate(dirs):
        groups[i % streams].append(str(d))
    return [["storescu", "-aec", aet, "+sd", "+r", "-q", "127.0.0.1", str(port)] + g
            for g in groups if g]


def ours_cmd(source: Path, port: int, aet: str, work: Path, streams: int) -> List[str]:
    cmd = [sys.executable, "-m", "engine", "migrate", str(source), "--host", "127.0.0.1",
           "--port", str(port), "--called-aet", aet, "--work-dir", str(work), "--quiet",
           "--associations", str(streams)]  # explicit: the default is 4
    return cmd


def report(rows: List[Tuple[str, int, int, float, float]], reference: str) -> None:
    """``rows``: (name, files, bytes, seconds, sender CPU seconds)."""
    ref = {row[0]: row[3] for row in rows}[reference]
    print("  %-34s %7s %9s %9s %8s %13s" % ("run", "files", "files/s", "MB/s", "ratio",
                                           "CPU ms/file"))
    for name, files, nbytes, secs, cpu in rows:
        print("  %-34s %7d %9.1f %9.2f %7.2fx %13.3f" % (
            name, files, files / secs, nbytes / 1e6 / secs, ref / secs, cpu * 1000 / files))


def bench_storescp(tmp: Path, label: str, count: int, rows: int) -> None:
    src = tmp / label
    files, nbytes = make_store(src, count, rows)
    scp = StoreSCPPeer(tmp / ("scp-" + label), ["--ignore"], out_dir=None).start()
    try:
        dirs = sorted(p for p in src.iterdir() if p.is_dir())
        t_ref, _ = run_timed(storescu_cmds(dirs, scp.port, scp.aet, 1))
        cpu_ref = _last_cpu[0]
        t_ours, code = run_timed([ours_cmd(src, scp.port, scp.aet, tmp / ("w-" + label), 1)])
        cpu_ours = _last_cpu[0]
    finally:
        scp.stop()
    print("\n%s: %d files, %.1f MB, into DCMTK storescp (--ignore), one association" % (
        label, files, nbytes / 1e6))
    report([("DCMTK storescu", files, nbytes, t_ref, cpu_ref),
            ("dicom-migrate (exit %d)" % code, files, nbytes, t_ours, cpu_ours)],
           "DCMTK storescu")


def bench_orthanc(tmp: Path, count: int, streams_list: Sequence[int], repeat: int = 1) -> None:
    """Each tool and parallelism into a fresh Orthanc; with ``repeat`` > 1 the rounds are
    interleaved and the median time is reported (a shared 2-core machine is noisy)."""
    src = tmp / "orthanc-store"
    files, nbytes = make_store(src, count, 64)
    dirs = sorted(p for p in src.iterdir() if p.is_dir())
    times: Dict[str, List[float]] = {}
    cpus: Dict[str, List[float]] = {}
    names: List[str] = []
    for round_no in range(repeat):
        for streams in streams_list:
            for tool in ("storescu", "ours"):
                label = "%s-%d-%d" % (tool, streams, round_no)
                peer = OrthancPeer(tmp / ("orthanc-" + label)).start()
                try:
                    if tool == "storescu":
                        secs, _ = run_timed(storescu_cmds(dirs, peer.dicom_port, peer.aet,
                                                          streams))
                        name = "DCMTK storescu x%d process(es)" % streams
                    else:
                        secs, code = run_timed([ours_cmd(src, peer.dicom_port, peer.aet,
                                                         tmp / ("w-" + label), streams)])
                        name = "dicom-migrate %d assoc." % streams
                        if code != 0:
                            name += " (exit %d)" % code
                    arrived = len(peer.instances())
                finally:
                    peer.stop()
                    shutil.rmtree(str(tmp / ("orthanc-" + label)), ignore_errors=True)
                if arrived != files:
                    name += " [%d arrived]" % arrived
                if name not in times:
                    names.append(name)
                times.setdefault(name, []).append(secs)
                cpus.setdefault(name, []).append(_last_cpu[0])
    rows = [(n, files, nbytes, statistics.median(times[n]), statistics.median(cpus[n]))
            for n in names]
    print("\nOrthanc 1.10 (SQLite index), %d files of 64x64 CT, %.1f MB%s" % (
        files, nbytes / 1e6, ", median of %d rounds" % repeat if repeat > 1 else ""))
    report(rows, rows[0][0])
    # Rows come in pairs per parallelism: storescu xN, then ours with N associations.
    for (ref_name, _, _, ref_s, _), (name, _, _, secs, _) in zip(rows[::2], rows[1::2]):
        print("  equal parallelism: %s is %.2fx %s" % (name, ref_s / secs, ref_name))
    if repeat > 1:
        for name in names:
            print("  %-34s rounds: %s files/s" % (name, ", ".join(
                "%.0f" % (files / t) for t in times[name])))


def bench_memory(tmp: Path, count: int) -> None:
    src = tmp / "memory-store"
    t0 = time.monotonic()
    files, nbytes = make_store(src, count, 8, per_dir=500)
    print("\nGenerated %d files (%.1f MB) in %.0f s" % (files, nbytes / 1e6, time.monotonic() - t0))
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "engine", "receive", "--port", str(port)],
                                env=nodelay_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        work = tmp / "w-memory"
        for label in ("first run", "resumed re-run"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            secs, code = run_timed([ours_cmd(src, port, "PRACTICE", work, 1)])
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            print("  %-15s %d files in %.1f s = %.0f files/s, exit %d, peak RSS %s" % (
                label, files, secs, files / secs, code,
                "%.0f MB" % (peak / 1024) if peak > before else "<= previous run"))
    finally:
        receiver.terminate()
        receiver.wait(10)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=2000, help="number of small (64x64) files")
    ap.add_argument("--large", type=int, default=200, help="number of 0.5 MB (512x512) files")
    ap.add_argument("--orthanc", action="store_true", help="also benchmark into Orthanc")
    ap.add_argument("--orthanc-files", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="Orthanc rounds; the median is reported (default: 1)")
    ap.add_argument("--memory-files", type=int, default=0,
                    help="generate this many tiny files and measure memory and resume speed")
    args = ap.parse_args(argv)
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            print("DCMTK is missing: apt-get install dcmtk", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="dicom-bench-"))
    try:
        if args.small:
            bench_storescp(tmp, "small", args.small, 64)
        if args.large:
            bench_storescp(tmp, "0.5MB", args.large, 512)
        if args.orthanc:
            bench_orthanc(tmp, args.orthanc_files, (1, 4), args.repeat)
        if args.memory_files:
            bench_memory(tmp, args.memory_files)
    finally:
        shutil.rmtree(str(tmp), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
