"""``build``, ``run``, ``profile`` and ``serve`` with ``--backend trt`` end to end on the strict
TensorRT/pycuda fake, for every recorded TensorRT version the code supports (``fake_trt``).

The fake runs each engine's ONNX model on the CPU in the tensor's real layout, so outputs are
checked against ONNX Runtime; contexts are per thread, DLA buffers must be padded, a DLA core
holds 16 engines, TensorRT 8.x parses only explicit-batch networks (tests/fakes)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request

import numpy as np

from hxsched.cli import main


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_build_writes_engines_and_the_manifest(fake_trt, tiny_plan, tmp_path, capsys):
    """Catches issue 10 items 1 (no ``stream_flags``) and 2 (implicit batch on 8.x)."""
    out = tmp_path / "b"
    code = main(["build", str(tiny_plan), "--backend", "trt", "-o", str(out), "--json", "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "trt" and manifest["fallbacks"] == []
    assert fake_trt.stats.builds == len(manifest["segments"]) == 2
    assert len(list((tmp_path / "cache").rglob("*.engine"))) == 2
    # a second build takes every engine from the cache
    assert main(["build", str(tiny_plan), "--backend", "trt", "-o", str(out), "-q"]) == 0
    assert fake_trt.stats.builds == 2


def test_run_50_frames_gives_the_model_s_outputs(fake_trt, tiny_plan, capsys):
    """Catches items 1, 2 and, through --verify, 8 (outputs that are views of reused pinned
    buffers: with 2 frames in flight and 3 inputs cycling, a reused slot holds another frame)."""
    args = ["run", str(tiny_plan), "--backend", "trt", "--frames", "50", "--verify"]
    args += ["--inflight", "2"]
    code = main([*args, "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    d = json.loads(captured.out)
    assert d["frames"] == 50 and d["fps"] > 0 and d["latency_ms"]["p50"] > 0
    assert "TensorRT" in d["source"]
    diffs = d["verify"]["max_abs_diff"]
    assert diffs and all(v <= 2e-2 for outs in diffs.values() for v in outs.values()), diffs
    assert fake_trt.stats.executions >= 100  # two segments per frame, every one executed


def test_profile_measures_every_group_within_the_dla_limits(fake_trt, deep_model, tmp_path, capsys):
    """Catches item 2 and item 5 (unpadded kCHW16 buffers; more than 16 DLA engines alive)."""
    out = tmp_path / "deep.yaml"
    args = ["profile", str(deep_model), "--backend", "trt", "--device", "orin-agx"]
    code = main([*args, "--runs", "3", "--warmup", "1", "-o", str(out), "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    from hxsched.scheduler.profile.schema import load_profile

    prof = load_profile(out)
    dla = [g for g in prof.groups if "dla" in g.time_ms]
    assert len(dla) > 16  # more DLA engines than one core holds at once
    assert all(g.sources.get("time_ms.gpu") == "trt" for g in prof.groups)
    assert fake_trt.stats.max_dla_alive <= 16


def test_a_dla_fallback_is_found_from_the_builder_log(fake_trt, tmp_path, monkeypatch, caplog):
    """Catches item 7: the builder's own lines, as our logger keeps them, must parse."""
    from fakes.models import tiny_graph

    from hxsched.runtime.backends.trt.backend import TrtBackend
    from hxsched.runtime.build import InstanceSpec, SegmentSpec, segment_digest

    g = tiny_graph(depth=1, size=8)
    seg = SegmentSpec(
        instance="m",
        index=0,
        accelerator="dla0",
        first_group=0,
        last_group=0,
        expected_ms=1.0,
        first_node=0,
        last_node=len(g.nodes) - 1,
        inputs=tuple(g.inputs),
        outputs=tuple(g.outputs),
        inputs_from={"x": None},
        outputs_to={"y": None},
        graph=g,
        digest=segment_digest(g),
    )
    backend = TrtBackend(cache_dir=tmp_path / "e", allow_gpu_fallback=True)
    caplog.set_level(logging.INFO, logger="hxsched")
    backend.prepare([InstanceSpec("m", "tiny", [seg], g)], inflight=1)
    try:
        events = {e.node: e for e in backend.fallbacks}
        assert "Gather_out" in events
        assert "Unsupported on DLA" in events["Gather_out"].reason, events["Gather_out"]
    finally:
        backend.close()


def _pipeline(tmp_path, plan_path) -> object:
    from hxsched.runtime.service.pipeline import pipeline_from_dict
    from hxsched.scheduler.planning.plan import load_plan

    plan = load_plan(plan_path)
    models = [
        {"name": i.model, "role": "synth", "path": i.model_path, "size": 32} for i in plan.instances
    ]
    return pipeline_from_dict(
        {
            "schema": "hxsched.pipeline/1",
            "name": "fake-trt",
            "backend": "trt",
            "plan": str(plan_path),
            "queue": 8,
            "models": models,
            "sources": [{"kind": "phantom", "count": 20}],
        }
    )


def test_serve_20_slices_on_its_worker_and_http_threads(fake_trt, tiny_plan, tmp_path):
    """Catches item 3: prepared on this thread, run on the worker, status read on HTTP threads."""
    from hxsched.runtime.service.service import Service, ServiceOptions

    out = tmp_path / "out"
    svc = Service(
        _pipeline(tmp_path, tiny_plan), ServiceOptions(output=out, http_port=0, stop_after=20)
    )
    svc.start()
    statuses: list[int] = []
    try:
        assert threading.current_thread() is threading.main_thread()
        t0 = time.monotonic()
        while not svc.wait(0.2) and time.monotonic() - t0 < 60:
            with urllib.request.urlopen(svc.http.url + "/status.json", timeout=10) as r:
                statuses.append(r.status)
        status = json.loads(urllib.request.urlopen(svc.http.url + "/status.json").read())
        assert svc.error is None, svc.error
        assert svc.counts().get("done", 0) == 20, svc.counts()
        assert "TensorRT" in json.dumps(status)
    finally:
        svc.stop()
    assert statuses and set(statuses) == {200}
    assert len(list((out / "dicom").rglob("*.dcm"))) == 20
    assert fake_trt.stats.executions >= 40


def test_engine_outputs_match_onnx_runtime_through_the_backend(fake_trt, tiny_plan):
    """One frame through both segments (DLA kCHW16 hand-over to the GPU) against the whole
    model on ONNX Runtime."""
    import onnxruntime as ort

    from hxsched.runtime.build import plan_instance_specs
    from hxsched.runtime.session import run_plan
    from hxsched.scheduler.planning.plan import load_plan

    plan = load_plan(tiny_plan)
    specs = plan_instance_specs(plan)
    assert [s.accelerator for s in specs[0].segments] == ["dla0", "gpu"]
    stats, report = run_plan(plan, "trt", frames=3, verify=3)
    diffs = report["verify"]["max_abs_diff"]
    assert all(v <= 2e-2 for outs in diffs.values() for v in outs.values()), diffs
    sess = ort.InferenceSession(plan.instances[0].model_path, providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].shape == [1, 3, 32, 32] and np.isfinite(stats.steady_fps)
