"""Segments from plans: exact cuts, boundary sides, clear errors on plan/model mismatch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.build import plan_instance_specs, segment_digest, write_segments
from hxsched.runtime.reference import OrtModel, random_inputs
from hxsched.scheduler.graph.onnx_io import load_model
from hxsched.scheduler.planning.plan import Plan, PlanInstance, PlanSegment, Predicted


def chain(inst, feeds):
    tensors = dict(feeds)
    for seg in inst.segments:
        m = OrtModel(seg.graph)
        tensors.update(m.run({t: tensors[t] for t in seg.inputs}))
        m.close()
    return tensors


def test_gan_yolo_segments_chain_to_the_whole_model(gan_yolo_plan):
    specs = plan_instance_specs(gan_yolo_plan)
    assert [len(i.segments) for i in specs] == [len(p.segments) for p in gan_yolo_plan.instances]
    for inst in specs:
        assert inst.segments[0].first_node == 0
        assert inst.segments[-1].last_node == len(inst.graph.nodes) - 1
        assert all(s.digest and len(s.digest) == 64 for s in inst.segments)
        first = inst.segments[0]
        assert all(src is None for src in first.inputs_from.values())
        for later in inst.segments[1:]:
            assert all(src is not None for src in later.inputs_from.values())
        feeds = random_inputs(inst.graph, 3)
        whole = OrtModel(inst.graph)
        ref = whole.run(feeds)
        whole.close()
        got = chain(inst, feeds)
        for name, value in ref.items():
            assert np.max(np.abs(value - got[name])) <= 1e-4


def _torch_plan(graph, path, cut: int) -> Plan:
    names = [n.name for n in graph.nodes]
    segs = (
        PlanSegment(
            groups=(0, 0),
            first_node=names[0],
            last_node=names[cut],
            accelerator="dla0",
            ms=1.0,
            busy_ms=1.0,
        ),
        PlanSegment(
            groups=(1, 1),
            first_node=names[cut + 1],
            last_node=names[-1],
            accelerator="gpu",
            ms=1.0,
            busy_ms=1.0,
        ),
    )
    inst = PlanInstance(name="unet#0", model="unet", segments=segs, model_path=str(path))
    return Plan(
        objective="throughput",
        device="orin-agx",
        accelerators=("gpu", "dla0"),
        instances=(inst,),
        predicted=Predicted(period_ms=1.0),
    )


def test_a_torch_export_cut_anywhere_is_exact(data_dir):
    path = data_dir / "torch" / "torch_unet_tiny.onnx"
    graph = load_model(path)
    for cut in (1, len(graph.nodes) // 2, len(graph.nodes) - 2):
        inst = plan_instance_specs(_torch_plan(graph, path, cut))[0]
        assert inst.segments[0].outputs_to and set(inst.segments[0].outputs_to.values()) <= {
            "gpu",
            None,
        }
        feeds = random_inputs(graph, cut)
        ref = OrtModel(graph).run(feeds)
        got = chain(inst, feeds)
        for name, value in ref.items():
            assert np.max(np.abs(value - got[name])) <= 1e-5


def test_plan_model_mismatch_errors(gan_yolo_plan, yolov8n_path, tmp_path):
    wrong = dataclasses.replace(gan_yolo_plan.instances[0], model_path=str(yolov8n_path))
    plan = dataclasses.replace(gan_yolo_plan, instances=[wrong])
    with pytest.raises(HxschedError, match="plan/model mismatch"):
        plan_instance_specs(plan)
    gone = dataclasses.replace(gan_yolo_plan.instances[0], model_path=str(tmp_path / "no.onnx"))
    with pytest.raises(HxschedError, match="not found"):
        plan_instance_specs(dataclasses.replace(gan_yolo_plan, instances=[gone]))
    bad_node = dataclasses.replace(
        gan_yolo_plan.instances[1],
        segments=(dataclasses.replace(gan_yolo_plan.instances[1].segments[0], first_node="nope"),)
        + gan_yolo_plan.instances[1].segments[1:],
    )
    with pytest.raises(HxschedError, match="'nope'"):
        plan_instance_specs(dataclasses.replace(gan_yolo_plan, instances=[bad_node]))


def test_group_level_plans_run_without_models(small_plan):
    specs = plan_instance_specs(small_plan, with_models=False)
    assert all(s.graph is None and s.expected_ms > 0 for i in specs for s in i.segments)
    with pytest.raises(HxschedError, match="only --backend sim"):
        plan_instance_specs(small_plan)


def test_write_segments_and_digest(gan_yolo_plan, tmp_path):
    specs = plan_instance_specs(gan_yolo_plan)
    rows = write_segments(specs[1:], tmp_path)
    assert [r["file"] for r in rows] == [f"yolov8n_0_s{k}.onnx" for k in range(len(rows))]
    again = load_model(tmp_path / rows[0]["file"])
    assert segment_digest(again) == rows[0]["sha256"]
