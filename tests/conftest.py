"""Shared fixtures: real DICOM peers on loopback, generated DICOM files, per-test app dirs.

Peers (see tests/peers.py) are started on demand by factory fixtures and always stopped (and
reaped) at teardown. When a test fails, the tails of the logs of the peers it started are
added to its report as a "peer logs" section.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from tests import corpus
from tests.peers import (
    OrthancPeer,
    QRSCPPeer,
    StoreSCPPeer,
    find_binary,
    free_port as _free_port,
    orthanc_binary,
)

_PEERS_ATTR = "_dicom_peers"


def _require(binary: Optional[str], what: str) -> None:
    """Skip a test whose peer is not installed; in CI a missing peer is a failure instead."""
    if binary:
        return
    message = "%s is not installed (scripts/test.sh installs it with apt-get)" % what
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    peers = getattr(item, _PEERS_ATTR, None)
    if report.failed and peers:
        # Why a peer refused something is usually only in its own log.
        text = "\n\n".join("== %r (log %s)\n%s" % (p, p.log_path, p.log_tail(30))
                           for p in peers)
        report.sections.append(("peer logs", text))


def _track(node: Any, peer: Any) -> None:
    peers = getattr(node, _PEERS_ATTR, None)
    if peers is None:
        peers = []
        setattr(node, _PEERS_ATTR, peers)
    peers.append(peer)


# --- generic ---------------------------------------------------------------------------------
@pytest.fixture
def free_port() -> Callable[..., int]:
    """The ``free_port(host="127.0.0.1")`` function itself (also importable from tests.peers)."""
    return _free_port


@pytest.fixture
def app_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point engine.dirs (manifest, logs, settings) at ``tmp_path/appdata`` for this test."""
    from engine import dirs

    target = tmp_path / "appdata"
    target.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(dirs, "override", target)
    return target


@pytest.fixture
def make_dicom(tmp_path: Path) -> Callable[..., Path]:
    """``make_dicom(path, sop_class=CTImageStorage, ts=ExplicitVRLittleEndian, **attrs)``.

    Writes a small valid DICOM file (see tests.corpus.make_dicom) and returns its path; a
    relative ``path`` is taken under this test's ``tmp_path``.
    """
    def factory(path: Any, *args: Any, **kwargs: Any) -> Path:
        target = Path(path)
        if not target.is_absolute():
            target = tmp_path / target
        return corpus.make_dicom(target, *args, **kwargs)

    return factory


# --- Orthanc ---------------------------------------------------------------------------------
class _OrthancFactory:
    """Callable that starts Orthanc instances under one base dir and stops them all."""

    def __init__(self, base: Path, node: Any = None) -> None:
        self.base = base
        self.node = node
        self.started = []  # type: List[OrthancPeer]

    def __call__(self, **config_overrides: Any) -> OrthancPeer:
        workdir = self.base / ("orthanc-%d" % len(self.started))
        peer = OrthancPeer(workdir, **config_overrides)
        self.started.append(peer)
        if self.node is not None:
            _track(self.node, peer)
        return peer.start()  # type: ignore[return-value]

    def stop_all(self) -> None:
        for peer in self.started:
            peer.stop()


@pytest.fixture
def orthanc_factory(tmp_path: Path, request: pytest.FixtureRequest
                    ) -> Iterator[Callable[..., OrthancPeer]]:
    """``orthanc_factory(**config_overrides) -> OrthancPeer`` (started, ready, killed after).

    Overrides go straight into Orthanc's JSON config, e.g.
    ``AcceptedTransferSyntaxes=["1.2.840.10008.1.2"]``, ``UnknownSopClassAccepted=True``,
    ``OverwriteInstances=True``, ``MaximumPduLength=...``, ``LimitFindInstances=...``.
    """
    _require(orthanc_binary(), "Orthanc")
    factory = _OrthancFactory(tmp_path / "peers", request.node)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., OrthancPeer]) -> OrthancPeer:
    """An empty Orthanc with the default test config, for this test only."""
    return orthanc_factory()


@pytest.fixture(scope="module")
def orthanc_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """One default Orthanc shared by a module's tests: call ``.clear()`` where order matters."""
    _require(orthanc_binary(), "Orthanc")
    factory = _OrthancFactory(tmp_path_factory.mktemp("orthanc_module"))
    try:
        yield factory()
    finally:
        factory.stop_all()


# --- DCMTK -----------------------------------------------------------------------------------
@pytest.fixture
def storescp_factory(tmp_path: Path, request: pytest.FixtureRequest
                     ) -> Iterator[Callable[..., StoreSCPPeer]]:
    """``storescp_factory(*extra_args, out_dir=None, aet="STORESCP") -> StoreSCPPeer``.

    ``extra_args`` go to storescp before the port (e.g. ``"+xi"`` implicit only, ``"+xa"``
    accept all syntaxes, ``"--refuse"``, ``"--abort-after"``, ``"-v"``). Without ``out_dir``
    it runs with ``--ignore`` (receives, stores nothing).
    """
    _require(find_binary("storescp"), "DCMTK storescp")
    started = []  # type: List[StoreSCPPeer]

    def factory(*extra_args: str, out_dir: Optional[Path] = None,
                aet: str = "STORESCP") -> StoreSCPPeer:
        workdir = tmp_path / "peers" / ("storescp-%d" % len(started))
        peer = StoreSCPPeer(workdir, extra_args, out_dir=out_dir, aet=aet)
        started.append(peer)
        _track(request.node, peer)
        return peer.start()  # type: ignore[return-value]

    try:
        yield factory
    finally:
        for peer in started:
            peer.stop()


@pytest.fixture
def storescp(storescp_factory: Callable[..., StoreSCPPeer], tmp_path: Path) -> StoreSCPPeer:
    """A default storescp writing into ``tmp_path/received``."""
    return storescp_factory(out_dir=tmp_path / "received")


@pytest.fixture
def dcmqrscp_factory(tmp_path: Path, request: pytest.FixtureRequest
                     ) -> Iterator[Callable[..., QRSCPPeer]]:
    """``dcmqrscp_factory(*extra_args, aet="QRSCP", single_process=False) -> QRSCPPeer``.

    Accepts C-STORE from any AET into its own storage area and answers C-FIND (patient and
    study root) about what it holds.
    """
    _require(find_binary("dcmqrscp"), "DCMTK dcmqrscp")
    started = []  # type: List[QRSCPPeer]

    def factory(*extra_args: str, aet: str = "QRSCP",
                single_process: bool = False) -> QRSCPPeer:
        workdir = tmp_path / "peers" / ("dcmqrscp-%d" % len(started))
        peer = QRSCPPeer(workdir, extra_args, aet=aet, single_process=single_process)
        started.append(peer)
        _track(request.node, peer)
        return peer.start()  # type: ignore[return-value]

    try:
        yield factory
    finally:
        for peer in started:
            peer.stop()
