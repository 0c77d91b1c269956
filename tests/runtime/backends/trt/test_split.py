"""The trt backend's enqueue / host->device / compute / device->host split: the arithmetic on
recorded event times, the events' streams and order on the strict fake, and ``hxsched bench``'s
JSON and ``--export-times`` with trtexec's field names."""

from __future__ import annotations

import json
import random

import pytest
from json_schema_check import SCHEMA, schema_errors

from hxsched.cli import main
from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt.backend import RunTimes, copy_split

# trtexec --exportTimes names (TensorRT samples/common/sampleReporting.cpp, exportJSONTrace)
TRTEXEC_SPLIT = {"startH2dMs", "endH2dMs", "startD2hMs", "endD2hMs", "h2dMs", "d2hMs"}


# --- the arithmetic -------------------------------------------------------------------------------
def test_one_segment_run_gives_the_plain_durations():
    """A GPU segment between host and host, its event times as a run recorded them (ms since
    the backend's base event)."""
    run = RunTimes(
        compute=(12.7154, 14.9021),
        h2d=(12.4410, 12.6932),
        d2h=(14.9120, 15.0345),
        enqueue_ms=0.0871,
        pack_ms=0.412,
    )
    sp = copy_split([run])
    assert sp.h2d_ms == pytest.approx(0.2522)
    assert sp.compute_ms == pytest.approx(2.1867)
    assert sp.d2h_ms == pytest.approx(0.1225)
    assert sp.end_to_end_ms == pytest.approx(15.0345 - 12.4410)
    assert sp.h2d == (12.4410, 12.6932) and sp.d2h == (14.9120, 15.0345)
    assert (sp.enqueue_ms, sp.pack_ms) == (0.0871, 0.412)


def test_a_dla_to_gpu_chain_and_two_instances_attribute_each_instant_once():
    """dla0 (host input, device output) then gpu (device input, host output) of instance A, and
    instance B on dla1 uploading while A computes: compute counts first, copies only where no
    compute runs, so the parts add up to at most the frame's end-to-end time."""
    a0 = RunTimes(compute=(1.0, 5.0), h2d=(0.0, 1.0), enqueue_ms=0.05)
    a1 = RunTimes(compute=(5.2, 7.0), d2h=(7.0, 7.5), enqueue_ms=0.04)
    b0 = RunTimes(compute=(2.0, 4.0), h2d=(0.5, 1.5), d2h=(4.0, 8.0), enqueue_ms=0.06)
    sp = copy_split([a0, a1, b0])
    assert sp.compute_ms == pytest.approx(4.0 + 1.8)
    assert sp.h2d_ms == pytest.approx(1.0)  # 0 .. 1; B's 1 .. 1.5 is under A's compute
    assert sp.d2h_ms == pytest.approx(0.2 + 1.0)  # 5 .. 5.2 and 7 .. 8
    assert sp.end_to_end_ms == pytest.approx(8.0)
    assert sp.enqueue_ms == pytest.approx(0.15)
    assert sp.h2d == (0.0, 1.5) and sp.d2h == (4.0, 8.0)
    no_copies = copy_split([RunTimes(compute=(3.0, 4.5))])
    assert (no_copies.h2d_ms, no_copies.d2h_ms, no_copies.h2d, no_copies.d2h) == (0, 0, None, None)
    with pytest.raises(HxschedError):
        copy_split([])


def test_the_split_adds_up_on_any_event_times():
    rng = random.Random(7)
    for _ in range(300):
        runs = []
        for _ in range(rng.randint(1, 4)):
            t = rng.uniform(0, 10)
            h2d = (t, t + rng.uniform(0, 1)) if rng.random() < 0.6 else None
            c0 = (h2d[1] if h2d else t) + rng.uniform(0, 0.5)
            comp = (c0, c0 + rng.uniform(0, 3))
            d0 = comp[1] + rng.uniform(0, 0.5)
            d2h = (d0, d0 + rng.uniform(0, 1)) if rng.random() < 0.6 else None
            runs.append(RunTimes(comp, h2d, d2h, rng.uniform(0, 0.2)))
        sp = copy_split(runs)
        parts = (sp.h2d_ms, sp.compute_ms, sp.d2h_ms, sp.enqueue_ms)
        assert all(p >= 0 for p in parts)
        assert sp.h2d_ms + sp.compute_ms + sp.d2h_ms <= sp.end_to_end_ms + 1e-9


# --- the events on the fake -----------------------------------------------------------------------
def test_events_are_recorded_on_the_right_streams_in_order(fake_trt, tiny_plan, monkeypatch):
    """Per segment run: the upload pair on the copy stream before the compute pair on the
    segment's stream, the download pair on the copy stream after it, ``done`` last; every event
    the split reads is a timing event and complete when the run is collected."""
    from hxsched.runtime.backends.trt.backend import TrtBackend
    from hxsched.runtime.build import plan_instance_specs
    from hxsched.runtime.executor import Executor
    from hxsched.scheduler.planning.plan import load_plan

    recorded: list[tuple[int, int]] = []
    real = fake_trt.cuda.Event.record

    def spy(self, stream=None):
        recorded.append((id(self), stream.handle))
        return real(self, stream)

    monkeypatch.setattr(fake_trt.cuda.Event, "record", spy)
    plan = load_plan(tiny_plan)
    specs = plan_instance_specs(plan)
    backend = TrtBackend()
    backend.times = {}
    events = []
    ex = Executor(plan, specs, backend, record_enqueue=True)
    orig = type(backend).stream

    def stream(self, acc):
        st = orig(self, acc)
        if not hasattr(st, "_spied"):
            enq = st.enqueue

            def enqueue(seg, frame, waits):
                ev = enq(seg, frame, waits)
                events.append((seg, st, ev))
                return ev

            st.enqueue, st._spied = enqueue, True
        return st

    monkeypatch.setattr(TrtBackend, "stream", stream)
    import numpy as np

    x = {specs[0].name: {specs[0].graph.inputs[0]: np.zeros((1, 3, 32, 32), np.float32)}}
    try:
        ex.prepare()
        ex.run(iter([x] * 3))
    finally:
        ex.close()
    assert len(events) == 6 and [s.accelerator for s, _, _ in events[:2]] == ["dla0", "gpu"]
    order = {eid: k for k, (eid, _) in enumerate(recorded)}
    where = dict(recorded)
    for seg, st, ev in events:
        copies, own = st.copies.handle, st.stream.handle
        chain = []
        if seg.accelerator == "dla0":  # host input, device output
            assert ev.h2d is not None and ev.d2h is None
            assert {where[id(e)] for e in ev.h2d} == {copies}
            chain += list(ev.h2d)
        else:  # device input, host output
            assert ev.h2d is None and ev.d2h is not None
        chain += [ev.start, ev.end]
        assert {where[id(ev.start)], where[id(ev.end)]} == {own}
        if ev.d2h is not None:
            assert {where[id(e)] for e in ev.d2h} == {copies}
            chain += list(ev.d2h)
        chain.append(ev.done_event)
        assert [order[id(e)] for e in chain] == sorted(order[id(e)] for e in chain)
    assert len(backend.times or {}) == 6  # one per (frame, segment), read once each was done
    for t in (backend.times or {}).values():
        assert t.compute[1] >= t.compute[0] and t.enqueue_ms >= 0 and t.pack_ms >= 0
        if t.h2d is not None:
            assert t.h2d[0] <= t.h2d[1] <= t.compute[0]
        if t.d2h is not None:
            assert t.compute[1] <= t.d2h[0] <= t.d2h[1]


# --- hxsched bench --------------------------------------------------------------------------------
def test_bench_trt_reports_the_split(fake_trt, tiny_plan, tmp_path, capsys):
    """The JSON validates (the split per frame and per segment), --export-times carries
    trtexec's names, each frame's parts add up, and the table prints the split."""
    times = tmp_path / "times.json"
    args = ["bench", str(tiny_plan), "--backend", "trt", "--warmup", "0", "--duration", "0"]
    args += ["--iterations", "4", "--export-times", str(times)]
    assert main([*args, "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert schema_errors(d, json.loads(SCHEMA.read_text())) == []
    plan = d["runs"][0]
    sp = plan["split"]
    assert set(sp) == {"enqueue_ms", "pack_ms", "h2d_ms", "compute_ms", "d2h_ms", "end_to_end_ms"}
    assert sp["h2d_ms"]["p50"] + sp["compute_ms"]["p50"] + sp["d2h_ms"]["p50"] > 0
    segs = plan["segments"]
    assert {s["accelerator"] for s in segs.values()} == {"dla0", "gpu"}
    for s in segs.values():
        assert set(s["split"]) == {"enqueue_ms", "h2d_ms", "compute_ms", "d2h_ms"}
    assert not any("no enqueue/copy/compute split" in n for n in plan["notes"])
    frames = json.loads(times.read_text())
    assert len(frames) == plan["frames"] >= 4
    for f in frames:
        assert set(f) >= TRTEXEC_SPLIT | {"startEnqMs", "endEnqMs", "computeMs", "endToEndMs"}
        assert f["h2dMs"] + f["computeMs"] + f["d2hMs"] <= f["endToEndMs"] + 1e-4
        assert f["hostEnqueueMs"] >= 0 and f["endEnqMs"] >= f["startEnqMs"]
        assert f["startH2dMs"] <= f["endH2dMs"] <= f["startComputeMs"]
        assert f["endComputeMs"] <= f["startD2hMs"] <= f["endD2hMs"]
        assert all({"h2dMs", "computeMs", "d2hMs"} <= set(s) for s in f["segments"].values())
    assert main([*args, "-q"]) == 0
    out = capsys.readouterr().out
    assert "plan split ms per frame (median): host enqueue" in out
    assert "enqueue" in out.split("segment", 1)[1].splitlines()[0]  # the segment table's head
