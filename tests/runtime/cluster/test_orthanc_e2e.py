"""End to end with real parts: dcmtk storescu -> an Orthanc router (the generated configuration
and Lua script) -> two `hxsched serve --backend sim --replay` nodes (replaying outputs recorded
once on ONNX Runtime) -> a second Orthanc as the PACS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dcmtk_helpers import dcmtk_tool

from hxsched.runtime.cluster.orthanc import (
    Cluster,
    Modality,
    RouterSettings,
    parse_pacs,
    study_node,
    write_cluster,
)

pydicom = pytest.importorskip("pydicom")
ORTHANC = shutil.which("Orthanc") or (
    "/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None
)
STORESCU = dcmtk_tool("storescu")  # DCMTK's, not pynetdicom's script of the same name
pytestmark = [
    pytest.mark.skipif(ORTHANC is None, reason="needs Orthanc (Debian: apt-get install orthanc)"),
    pytest.mark.skipif(STORESCU is None, reason="needs dcmtk's storescu (apt-get install dcmtk)"),
]
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
# DCMTK >= 3.6.2 (storescu, and Debian's Orthanc, linked to it) keeps Nagle's algorithm on unless
# the environment sets TCP_NODELAY=1 (DCMTK config/docs/envvars.txt; Orthanc's own static builds
# define DISABLE_NAGLE_ALGORITHM): measured ~90 ms per C-STORE on loopback instead of ~10
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Proc:
    """A child process with its log in a file; stopped by SIGTERM (or killed by SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, ready_url: str) -> None:
        self.argv, self.log, self.ready_url = argv, log, ready_url
        self.p: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as f:
            self.p = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT, env=ENV)
        wait_for(lambda: self._alive() and answers(self.ready_url), timeout, self.log.name)

    def _alive(self) -> bool:
        assert self.p is not None
        if self.p.poll() is not None:
            raise AssertionError(f"{self.argv[0]} exited: {self.log.read_text()[-3000:]}")
        return True

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def orthanc_proc(folder: Path, config: dict[str, Any] | None = None) -> Proc:
    """An Orthanc; without ``config``, a plain one acting as the PACS."""
    if config is None:
        config = {
            "Name": "pacs",
            "DicomAet": "PACS",
            "DicomPort": free_port(),
            "HttpPort": free_port(),
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "RemoteAccessAllowed": False,
            "OverwriteInstances": False,  # a result sent again is kept once
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(config))
    assert ORTHANC is not None
    proc = Proc(
        [ORTHANC, str(folder / "orthanc.json")],
        folder / "orthanc.log",
        f"http://127.0.0.1:{config['HttpPort']}/system",
    )
    proc.config = config  # type: ignore[attr-defined]
    return proc


@dataclass
class Node:
    name: str
    aet: str
    scp_port: int
    http_port: int
    out: Path
    proc: Proc

    @property
    def modality(self) -> Modality:
        return Modality(self.name, "127.0.0.1", self.scp_port, self.aet)


def _role(model: str) -> str:
    return "detect" if "yolo" in model else "synth"


def record_replays(plan: Any) -> None:
    """Record each model's outputs for ``--replay`` once, here, before the nodes start: two
    nodes recording at the same time on a fresh cache would make their start slow."""
    from hxsched.runtime.service.pipeline import PipelineModel
    from hxsched.runtime.service.replay import recording
    from hxsched.runtime.service.roles import Role

    for i in plan.instances:
        recording(PipelineModel(i.model, Role(_role(i.model)), path=i.model_path), i.model_path)


def make_node(tmp: Path, name: str, plan: Any, pacs_port: int) -> Node:
    aet, scp, http = f"NODE{name.upper()}", free_port(), free_port()
    pipe = {
        "schema": "hxsched.pipeline/1",
        "name": f"node-{name}",
        "backend": "sim",
        "plan": plan.path,
        "models": [
            {
                "name": i.model,
                "role": _role(i.model),
                "path": i.model_path,
            }
            for i in plan.instances
        ],
        "sources": [{"kind": "scp", "port": scp, "ae_title": aet}],
        "sinks": {
            "previews": False,
            "pacs": {
                "host": "127.0.0.1",
                "port": pacs_port,
                "ae_title": "PACS",
                "calling_ae_title": aet,
                "retry_initial_s": 0.5,
                "retry_max_s": 2.0,
            },
        },
        "workers": 0,
    }
    folder = tmp / name
    folder.mkdir()
    (folder / "pipeline.json").write_text(json.dumps(pipe))  # JSON is YAML
    argv = [sys.executable, "-m", "hxsched", "serve", str(folder / "pipeline.json")]
    argv += ["--output", str(folder / "out"), "--port", str(http), "--scp-port", str(scp)]
    argv += ["--log-level", "WARNING", "--replay"]  # sim replaying outputs recorded on ORT
    # ready, not live: the HTTP face answers while the models load, before the SCP listens (a
    # store job sent then is refused, and the router fails the study over to the other node)
    proc = Proc(argv, folder / "serve.log", f"http://127.0.0.1:{http}/health/ready")
    return Node(name, aet, scp, http, folder / "out", proc)


@dataclass
class Loop:
    tmp: Path
    router: Proc
    pacs: Proc
    nodes: tuple[Node, ...]
    router_port: int

    def url(self, proc: Proc, path: str) -> str:
        return f"http://127.0.0.1:{proc.config['HttpPort']}{path}"  # type: ignore[attr-defined]

    def router_instances(self) -> int:
        return int(http_json(self.url(self.router, "/statistics"))["CountInstances"])

    def send(
        self, files: list[Path], port: int | None = None, called: str = "HXROUTER", **kw: str
    ) -> None:
        out = self.sending(files, port, called, **kw).communicate(timeout=300)[1]
        assert not out, out[-2000:]

    def sending(
        self,
        files: list[Path],
        port: int | None = None,
        called: str = "HXROUTER",
        calling: str = "SCANNER",
    ) -> subprocess.Popen[str]:
        """storescu under way (stderr piped: it prints nothing when every store succeeded)."""
        assert STORESCU is not None
        argv = [STORESCU, "-aet", calling, "-aec", called, "127.0.0.1"]
        argv += [str(port or self.router_port), *map(str, files)]
        return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=ENV)

    def pacs_results(self) -> dict[str, dict[str, Any]]:
        """SOP Instance UID -> simplified tags, of everything the PACS holds."""
        ids = http_json(self.url(self.pacs, "/instances"))
        tags = [http_json(self.url(self.pacs, f"/instances/{i}/tags?simplify")) for i in ids]
        return {t["SOPInstanceUID"]: t for t in tags}


def references(tags: Any) -> set[str]:
    """Every ReferencedSOPInstanceUID in a result's tags (the source slice it was made from)."""
    if isinstance(tags, dict):
        found = {v for k, v in tags.items() if k == "ReferencedSOPInstanceUID"}
        return found.union(*(references(v) for v in tags.values()))
    if isinstance(tags, list):
        return set().union(*(references(v) for v in tags))
    return set()


def make_series(folder: Path, n: int) -> tuple[str, list[str], list[Path]]:
    """``n`` slices of pydicom's CT test data, re-identified: one new study, new SOP UIDs."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    uids, files = [], []
    pixels = src.pixel_array
    for k in range(n):
        ds = src.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 2.5 * k]
        px = pixels.copy()
        px[0, 0] = k  # every slice's pixels differ too
        ds.PixelData = px.tobytes()
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
        files.append(path)
    return study, uids, files


def node_results(nodes: tuple[Node, ...], sources: set[str]) -> set[str]:
    """SOP Instance UIDs of the DICOM results the nodes wrote for these sources."""
    out = set()
    for node in nodes:
        for f in node.out.rglob("*.dcm"):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            if references(_as_dict(ds)) & sources:
                out.add(str(ds.SOPInstanceUID))
    return out


def _as_dict(ds: Any) -> Any:
    return {
        e.keyword: ([_as_dict(i) for i in e.value] if e.VR == "SQ" else str(e.value))
        for e in ds
        if e.keyword
    }


@pytest.fixture(scope="module")
def loop(tmp_path_factory, gan_yolo_plan) -> Iterator[Loop]:
    tmp = tmp_path_factory.mktemp("cluster")
    pacs = orthanc_proc(tmp / "pacs")
    pacs_port = pacs.config["DicomPort"]  # type: ignore[attr-defined]
    record_replays(gan_yolo_plan)
    nodes = tuple(make_node(tmp, n, gan_yolo_plan, pacs_port) for n in ("a", "b"))
    router_port = free_port()
    settings = RouterSettings(dicom_port=router_port, http_port=free_port(), down_s=3, retry_s=2)
    cluster = Cluster(
        tuple(n.modality for n in nodes), parse_pacs(f"127.0.0.1:{pacs_port}"), settings
    )
    conf, _ = write_cluster(cluster, tmp / "router")
    router = orthanc_proc(tmp / "router", json.loads(conf.read_text()))
    procs = [pacs, *(n.proc for n in nodes), router]
    try:
        for p in procs:
            p.start()
        yield Loop(tmp, router, pacs, nodes, router_port)
    finally:
        for p in reversed(procs):
            p.stop()


def delivered(loop: Loop, sources: set[str]) -> Callable[[], bool]:
    """True once the router holds nothing and every source has its synthetic image in the PACS."""

    def check() -> bool:
        if loop.router_instances() > 0:
            return False
        got = loop.pacs_results().values()
        return sources <= {u for t in got if t["Modality"] == "OT" for u in references(t)}

    return check


def check_pacs(loop: Loop, sources: set[str]) -> dict[str, dict[str, Any]]:
    """Every source slice has its results in the PACS, once each, labelled and referencing it."""
    got = {u: t for u, t in loop.pacs_results().items() if references(t) & sources}
    per_source = Counter(u for t in got.values() for u in references(t) & sources)
    assert set(per_source) == sources, f"{len(sources - set(per_source))} slices lost"
    assert len(set(per_source.values())) == 1, per_source.most_common(3)  # same results per slice
    for t in got.values():
        assert len(references(t) & sources) == 1
        assert NOT_FOR_DIAGNOSIS in t.get("SeriesDescription", ""), t.get("SeriesDescription")
        assert t["Modality"] in ("OT", "SR")
    sc = [t for t in got.values() if t["Modality"] == "OT"]
    assert len(sc) == len(sources)  # one synthetic image per slice
    assert all("NOT FOR DIAGNOSTIC USE" in t["DerivationDescription"] for t in sc)
    # what the nodes wrote (on either node, before and after a restart) is what the PACS has
    assert node_results(loop.nodes, sources) == set(got)
    return got


@pytest.mark.slow
def test_a_node_killed_mid_series_loses_nothing_and_results_reach_the_pacs_once(loop, tmp_path):
    study, uids, files = make_series(tmp_path / "ct", 200)
    first = {"a": loop.nodes[0], "b": loop.nodes[1]}[study_node(study, ("a", "b"))]
    sending = loop.sending(files)
    other = next(n for n in loop.nodes if n is not first)
    wait_for(lambda: _status(first)["frames_in"] >= 50, 120, "50 slices on the study's node")
    assert _status(other)["frames_in"] == 0  # a study stays on one node
    first.proc.kill()  # SIGKILL mid-series: its jobs fail and go to the other node
    time.sleep(2.0)
    first.proc.start()  # its journal redoes what it had acknowledged
    assert not sending.communicate(timeout=300)[1]  # the router took every slice
    wait_for(delivered(loop, set(uids)), 120, "every slice's results in the PACS")
    time.sleep(2.0)  # anything sent twice would arrive now
    got = check_pacs(loop, set(uids))
    assert len(got) >= 200
    jobs = http_json(loop.url(loop.router, "/jobs?expand"))
    (loop.tmp / "router-jobs.json").write_text(json.dumps(jobs))
    assert _status(other)["frames_in"] > 0, "the other node took the failed jobs"


def _status(node: Node) -> dict[str, Any]:
    return dict(http_json(f"http://127.0.0.1:{node.http_port}/status.json"))


def test_an_instance_resent_to_a_node_gives_no_second_result(loop, tmp_path):
    study, uids, files = make_series(tmp_path / "ct", 20)
    loop.send(files)
    wait_for(delivered(loop, set(uids)), 60, "the results in the PACS")
    time.sleep(1.0)
    before = loop.pacs_results()
    # a lost C-STORE response: Orthanc re-sends to the same node, and to the other one
    loop.send(files)  # through the router: to the study's node again (a duplicate there)
    for node in loop.nodes:
        loop.send(files[:5], port=node.scp_port, called=node.aet)
    wait_for(lambda: loop.router_instances() == 0, 60, "the router to forward the copies")
    time.sleep(4.0)  # the other node's results (the same SOP Instance UIDs) have arrived now
    after = loop.pacs_results()
    assert set(after) == set(before)
    stats = http_json(loop.url(loop.pacs, "/statistics"))
    assert stats["CountInstances"] == len(after)
    check_pacs(loop, set(uids))


def test_what_a_node_sends_to_the_router_is_forwarded_to_the_pacs(loop, tmp_path):
    """Results may go through the router too: instances from a node's AE title go to the PACS."""
    study, uids, files = make_series(tmp_path / "ct", 3)
    loop.send(files, calling=loop.nodes[1].aet)
    wait_for(lambda: set(uids) <= set(loop.pacs_results()), 60, "the PACS to have them")
    wait_for(lambda: loop.router_instances() == 0, 30, "the router to delete them")
    assert not node_results(loop.nodes, set(uids))  # no node was sent them


@pytest.mark.slow
def test_the_pacs_down_for_30_s_loses_nothing(loop, tmp_path):
    study, uids, files = make_series(tmp_path / "ct", 60)
    loop.pacs.stop()
    loop.send(files)
    wait_for(lambda: loop.router_instances() == 0, 60, "the nodes to take every slice")
    time.sleep(30.0)  # results wait in the nodes' outbound queues
    loop.pacs.start()
    wait_for(delivered(loop, set(uids)), 90, "the queued results in the PACS")
    time.sleep(2.0)
    check_pacs(loop, set(uids))
