"""Real DICOM peers for tests: Orthanc, DCMTK storescp and dcmqrscp as child processes.

Each peer listens on free loopback ports, writes its output to a log file (whose tail is shown
when it fails to start), and runs with ``TCP_NODELAY=1`` so Nagle's delayed ACKs do not make
the peer, instead of our code, the bottleneck. Only the standard library is used here so the
module works unchanged on both library stacks.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# A port we handed out but whose peer failed to bind is retried with fresh ports this often.
START_ATTEMPTS = 3

# Debian installs some servers (Orthanc) into sbin, which a non-login PATH may lack.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

_recent_ports: List[int] = []
_ports_lock = threading.Lock()


class PeerStartError(RuntimeError):
    """A peer process died or never became ready; the message carries its log tail."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, then release it).

    Ports handed out recently are skipped, so two peers started back to back in one test do
    not race for the same number before either has bound it.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _ports_lock:
            if port in _recent_ports:
                continue
            _recent_ports.append(port)
            del _recent_ports[:-64]
        return port
    raise RuntimeError("could not find a free TCP port on %s" % host)


def port_open(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_listens(pid: int, port: int) -> Optional[bool]:
    """Whether process ``pid`` itself holds a listening TCP socket on ``port``.

    Needed because a bare connect can succeed against whoever else grabbed the port between
    ``free_port()`` and the peer's bind. Linux only (/proc); None where it cannot tell.
    """
    try:
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # cols: sl, local_address (hex ip:port), rem_address, st (0A = LISTEN), ..., inode
            if (len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port
                    and cols[9] in inodes):
                return True
    return False


def find_binary(name: str) -> Optional[str]:
    """Absolute path of an executable on PATH or in the sbin folders, else None."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _EXTRA_BIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(str(candidate), os.X_OK):
            return str(candidate)
    return None


def orthanc_binary() -> Optional[str]:
    """The Debian package installs ``/usr/sbin/Orthanc`` (capital O); accept lowercase too."""
    return find_binary("Orthanc") or find_binary("orthanc")


def peer_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a peer or DCMTK client: ours plus TCP_NODELAY=1 (see DESIGN.md)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if extra:
        env.update(extra)
    return env


class PeerProcess:
    """One child process with its log file; stops the whole process group on ``stop()``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 cwd: Optional[Path] = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.proc = None  # type: Optional[subprocess.Popen]

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted peer keeps the earlier run's lines for diagnosis.
        with open(str(self.log_path), "ab") as log:
            log.write(("$ %s\n" % " ".join(self.argv)).encode())
            log.flush()
            # New session: the peer (and anything it forks per association) is one process
            # group that stop() can end without touching any other process.
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.cwd) if self.cwd else None, env=peer_env(),
                start_new_session=True)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll() if self.proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log at %s)" % self.log_path
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], what: str,
                   timeout: float = STARTUP_TIMEOUT) -> float:
        """Poll ``ready`` until true; raise PeerStartError if the process dies or time runs out.

        Returns the seconds it took, so tests and benchmarks can report start-up cost.
        """
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if not self.alive:
                raise PeerStartError("%s exited with code %s before %s; log %s:\n%s" % (
                    self.name, self.returncode, what, self.log_path, self.log_tail()))
            if ready():
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise PeerStartError("%s not ready (%s) after %.0f s; log %s:\n%s" % (
                    self.name, what, timeout, self.log_path, self.log_tail()))
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT, graceful: bool = True) -> None:
        """SIGTERM the process group (SIGKILL after ``timeout``, or at once when not
        ``graceful``) and reap the process."""
        proc = self.proc
        if proc is None:
            return
        self._signal_group(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        # Forked per-association children (dcmqrscp --fork) may outlive the leader.
        self._signal_group(proc.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class _Peer:
    """Shared start/stop logic: retry with fresh ports when a port was taken meanwhile."""

    name = "peer"
    host = LOOPBACK
    # Whether stop() lets the peer shut down cleanly by default (see OrthancPeer).
    graceful_stop = True

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / ("%s.log" % self.name)
        self.process = None  # type: Optional[PeerProcess]
        self.startup_seconds = 0.0
        self._started_once = False

    # Subclasses fill these in.
    def _choose_ports(self) -> None:
        raise NotImplementedError

    def _ports_fixed(self) -> bool:
        return False

    def _argv(self) -> List[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files before each launch."""

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> "_Peer":
        """Launch and wait until ready. A restart after ``stop()`` keeps ports and storage."""
        last_error = None  # type: Optional[PeerStartError]
        for attempt in range(START_ATTEMPTS):
            if attempt and not self._started_once and not self._ports_fixed():
                self._choose_ports()  # someone grabbed the port between free_port() and bind
            self._prepare()
            began = time.monotonic()
            self.process = PeerProcess(self.name, self._argv(), self.log_path, cwd=self.workdir)
            self.process.start()
            try:
                self.process.wait_until(self._ready, "accepting connections")
            except PeerStartError as exc:
                last_error = exc
                self.process.stop(graceful=False)
                # Only a lost port race is worth another try; a bad option or config is not.
                if "in use" not in self.process.log_tail().lower():
                    break
                continue
            self.startup_seconds = time.monotonic() - began
            self._started_once = True
            return self
        assert last_error is not None
        raise last_error

    def stop(self, graceful: Optional[bool] = None) -> None:
        """Stop and reap the peer; ``graceful`` defaults to the class's ``graceful_stop``."""
        if self.process is not None:
            self.process.stop(graceful=self.graceful_stop if graceful is None else graceful)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def _accepting(self, port: int) -> bool:
        """Our own process listens on ``port`` and a connect succeeds."""
        pid = self.process.pid if self.process else None
        if pid is None or process_listens(pid, port) is False:
            return False
        return port_open(self.host, port)


class OrthancPeer(_Peer):
    """Orthanc started from a JSON config in ``workdir`` with a REST client (urllib only)."""

    name = "orthanc"
    aet = "ORTHANC"
    # A clean SIGTERM shutdown takes Orthanc 1.10.1 ~3.5 s (HTTP and DICOM servers wind down
    # in turn); its storage is throw-away and SQLite survives SIGKILL, so tear down at once.
    # Restart tests that care call ``stop(graceful=True)``.
    graceful_stop = False

    def __init__(self, workdir: Path, binary: Optional[str] = None,
                 **config_overrides: Any) -> None:
        super().__init__(workdir)
        found = binary or orthanc_binary()
        if not found:
            raise PeerStartError("Orthanc binary not found (apt-get install orthanc)")
        self.binary = found
        self.overrides = dict(config_overrides)
        self.config_path = self.workdir / "orthanc.json"
        self.storage_dir = self.workdir / "storage"
        self.dicom_port = 0
        self.http_port = 0
        self.config = {}  # type: Dict[str, Any]
        # Never route loopback REST calls through an http_proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.config = self._build_config(free_port(), free_port())
        self.dicom_port = int(self.config["DicomPort"])
        self.http_port = int(self.config["HttpPort"])
        self.aet = str(self.config["DicomAet"])

    def _ports_fixed(self) -> bool:
        return "DicomPort" in self.overrides or "HttpPort" in self.overrides

    def _build_config(self, dicom_port: int, http_port: int) -> Dict[str, Any]:
        config = {
            "Name": "pytest-orthanc",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "TemporaryDirectory": str(self.workdir / "tmp"),
            "DicomServerEnabled": True,
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": False,
            "HttpServerEnabled": True,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            # Tests query Orthanc over C-FIND (verification) from AETs it has never heard of.
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            # Keep the temp dir small and start-up fast: no job persistence, no Explorer.
            "SaveJobs": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
        }  # type: Dict[str, Any]
        config.update(self.overrides)
        return config

    def _prepare(self) -> None:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))

    def _argv(self) -> List[str]:
        return [self.binary, str(self.config_path)]

    def _ready(self) -> bool:
        if not (self._accepting(self.dicom_port) and self._accepting(self.http_port)):
            return False
        try:
            self.get_json("/system", timeout=1.0)
            return True
        except (OSError, ValueError):
            return False

    # --- REST ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.http_port)

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                content_type: str = "application/json", timeout: float = 30.0) -> bytes:
        """Raw HTTP call to the REST API; raises urllib.error.HTTPError on 4xx/5xx."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with self._opener.open(req, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self.request("GET", path, timeout=timeout).decode("utf-8"))

    def post_json(self, path: str, payload: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        data = self.request("POST", path, body)
        return json.loads(data.decode("utf-8")) if data.strip() else None

    def instances(self) -> List[str]:
        """Orthanc ids of every stored instance."""
        return list(self.get_json("/instances"))

    def sop_instance_uids(self) -> Set[str]:
        """SOP Instance UIDs of every stored instance (one request, ``?expand``)."""
        return {item["MainDicomTags"]["SOPInstanceUID"]
                for item in self.get_json("/instances?expand")}

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file, byte for byte as Orthanc keeps it."""
        return self.request("GET", "/instances/%s/file" % orthanc_id)

    def instance_tags(self, orthanc_id: str) -> Dict[str, Any]:
        """Tags by keyword (``/simplified-tags``) for quick assertions."""
        return dict(self.get_json("/instances/%s/simplified-tags" % orthanc_id))

    def transfer_syntax(self, orthanc_id: str) -> str:
        """The transfer syntax the instance was received in (Orthanc metadata)."""
        return self.request("GET", "/instances/%s/metadata/TransferSyntax" % orthanc_id
                            ).decode("ascii").strip()

    def find_instance(self, sop_uid: str) -> Optional[str]:
        """Orthanc id of the instance with this SOP Instance UID, or None."""
        for hit in self.post_json("/tools/lookup", sop_uid.encode("ascii")) or []:
            if hit.get("Type") == "Instance":
                return str(hit["ID"])
        return None

    def delete_instance(self, orthanc_id: str) -> None:
        self.request("DELETE", "/instances/%s" % orthanc_id)

    def clear(self) -> None:
        """Delete everything stored (for module-scoped instances shared by tests)."""
        for patient in self.get_json("/patients"):
            self.request("DELETE", "/patients/%s" % patient)

    def statistics(self) -> Dict[str, Any]:
        """``GET /statistics``: CountInstances, CountStudies, TotalDiskSize..."""
        return dict(self.get_json("/statistics"))

    def __repr__(self) -> str:
        return "<OrthancPeer %s dicom=%d http=%d>" % (self.aet, self.dicom_port, self.http_port)


class StoreSCPPeer(_Peer):
    """DCMTK ``storescp``: writes what it receives into ``out_dir``, or discards (``--ignore``)."""

    name = "storescp"
    aet = "STORESCP"

    def __init__(self, workdir: Path, extra_args: Iterable[str] = (),
                 out_dir: Optional[Path] = None, aet: str = "STORESCP") -> None:
        super().__init__(workdir)
        found = find_binary("storescp")
        if not found:
            raise PeerStartError("storescp not found (apt-get install dcmtk)")
        self.binary = found
        self.extra_args = [str(a) for a in extra_args]
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.aet = aet
        self.port = 0
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _prepare(self) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def _argv(self) -> List[str]:
        target = ["-od", str(self.out_dir)] if self.out_dir is not None else ["--ignore"]
        return [self.binary, "-aet", self.aet] + target + self.extra_args + [str(self.port)]

    def _ready(self) -> bool:
        # A bare TCP probe: storescp logs a failed association and keeps listening.
        return self._accepting(self.port)

    def received_files(self) -> List[Path]:
        """Files storescp wrote (named like ``CT.1.2.3...``), sorted; [] with ``--ignore``."""
        if self.out_dir is None or not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.rglob("*") if p.is_file())

    def __repr__(self) -> str:
        return "<StoreSCPPeer %s port=%d>" % (self.aet, self.port)


DCMQRSCP_CONFIG = """\
# Written by tests/peers.py: one read/write storage area accepting any peer.
# Quota: 500 studies is dcmqrscp's maximum; 1 GB per study.
NetworkTCPPort  = {port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{aet}  {storage}  RW  (500, 1024mb)  ANY
AETable END
"""


class QRSCPPeer(_Peer):
    """DCMTK ``dcmqrscp``: stores C-STOREd files in its own area and answers C-FIND/C-GET."""

    name = "dcmqrscp"
    aet = "QRSCP"

    def __init__(self, workdir: Path, extra_args: Iterable[str] = (), aet: str = "QRSCP",
                 single_process: bool = False) -> None:
        super().__init__(workdir)
        found = find_binary("dcmqrscp")
        if not found:
            raise PeerStartError("dcmqrscp not found (apt-get install dcmtk)")
        self.binary = found
        self.extra_args = [str(a) for a in extra_args]
        self.aet = aet
        self.single_process = single_process
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "dcmqrscp.cfg"
        self.port = 0
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _prepare(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # No UserName/GroupName lines: as root dcmqrscp would otherwise switch to user dcmtk.
        self.config_path.write_text(DCMQRSCP_CONFIG.format(
            port=self.port, aet=self.aet, storage=self.storage_dir))

    def _argv(self) -> List[str]:
        # Fork mode by default: dcmqrscp 3.6.7 (Debian 12) segfaults after the first
        # association is released in --single-process mode. Forked children are in the
        # peer's process group, which stop() kills.
        mode = ["--single-process"] if self.single_process else ["--fork"]
        return ([self.binary, "-c", str(self.config_path)] + mode + self.extra_args
                + [str(self.port)])

    def _ready(self) -> bool:
        return self._accepting(self.port)

    def stored_files(self) -> List[Path]:
        """DICOM files in the storage area (without dcmqrscp's ``index.dat``)."""
        return sorted(p for p in self.storage_dir.rglob("*")
                      if p.is_file() and p.name != "index.dat")

    def __repr__(self) -> str:
        return "<QRSCPPeer %s port=%d>" % (self.aet, self.port)


def run_dcmtk(tool: str, *args: str, timeout: float = 60.0,
              cwd: Optional[Path] = None) -> "subprocess.CompletedProcess[str]":
    """Run a DCMTK client (storescu, findscu, echoscu) with TCP_NODELAY=1; never raises on rc."""
    found = find_binary(tool)
    if not found:
        raise FileNotFoundError("%s not found (apt-get install dcmtk)" % tool)
    return subprocess.run([found] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, env=peer_env(),
                          cwd=str(cwd) if cwd else None)
