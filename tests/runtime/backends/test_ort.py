"""The ort backend: a worker per accelerator, event waits, errors carried to the waiter."""

from __future__ import annotations

import numpy as np
import pytest

from hxsched.runtime.backends.base import FrameState, SegmentFailed
from hxsched.runtime.backends.ort import OrtBackend
from hxsched.runtime.build import InstanceSpec, SegmentSpec
from hxsched.runtime.reference import OrtModel
from hxsched.scheduler.graph.onnx_io import load_model
from hxsched.scheduler.graph.segments import extract_segment, segment_io


def specs_for(graph, cut):
    segs = []
    for k, (a, b, acc) in enumerate([(0, cut, "dla0"), (cut + 1, len(graph.nodes) - 1, "gpu")]):
        io = segment_io(graph, a, b)
        s = SegmentSpec(
            "u#0",
            k,
            acc,
            k,
            k,
            1.0,
            a,
            b,
            io.inputs,
            io.outputs,
            graph=extract_segment(graph, a, b),
        )
        segs.append(s)
    return [InstanceSpec("u#0", "u", segs, graph)]


def test_two_workers_chain_a_torch_model(data_dir):
    graph = load_model(data_dir / "torch" / "torch_unet_tiny.onnx")
    specs = specs_for(graph, len(graph.nodes) // 2)
    b = OrtBackend(threads=1)
    b.prepare(specs, inflight=2)
    feeds = {
        graph.inputs[0]: np.random.default_rng(0)
        .standard_normal(graph.tensors[graph.inputs[0]].shape)
        .astype(np.float32)
    }
    f = FrameState(0, {"u#0": feeds})
    e0 = b.stream("dla0").enqueue(specs[0].segments[0], f, [])
    e1 = b.stream("gpu").enqueue(specs[0].segments[1], f, [e0])
    e1.wait()
    assert e0.done() and e1.end_ms >= e1.start_ms >= e0.end_ms
    ref = OrtModel(graph).run(feeds)
    for k, v in ref.items():
        assert np.max(np.abs(v - f.tensors["u#0"][k])) <= 1e-5
    # inputs no later segment reads are released (bounded memory)
    assert graph.inputs[0] not in f.tensors["u#0"]
    assert "ONNX Runtime" in b.source()
    b.close()


def test_a_failing_segment_fails_its_waiters(data_dir):
    graph = load_model(data_dir / "torch" / "torch_unet_tiny.onnx")
    specs = specs_for(graph, 2)
    b = OrtBackend(threads=1)
    b.prepare(specs, inflight=1)
    f = FrameState(0, {"u#0": {}})  # the input is missing
    e0 = b.stream("dla0").enqueue(specs[0].segments[0], f, [])
    e1 = b.stream("gpu").enqueue(specs[0].segments[1], f, [e0])
    with pytest.raises(SegmentFailed):
        e1.wait()
    b.close()


def test_the_default_thread_count_is_the_measured_profiles(small_plan):
    """A plan made from profiles measured on ONNX Runtime runs with the thread count they were
    timed with (the fewest if they differ); told a count, or without one, as before."""
    import dataclasses

    from hxsched.runtime.backends.ort import measured_threads
    from hxsched.runtime.session import make_backend
    from hxsched.scheduler.planning.plan import SourceRef
    from hxsched.scheduler.types import ProvenanceKind

    def measured(threads):
        ref = SourceRef(kind=ProvenanceKind.MEASURED, tool="onnxruntime profiler (CPU)")
        return dataclasses.replace(ref, versions={"threads": threads})

    assert measured_threads(small_plan) is None  # estimated profiles
    insts = [
        dataclasses.replace(i, profile=dataclasses.replace(i.profile, sources={"ort": measured(t)}))
        for i, t in zip(small_plan.instances, ("2", "1", "2"), strict=False)
    ]
    plan = dataclasses.replace(small_plan, instances=tuple(insts))
    assert measured_threads(plan) == 1
    assert make_backend("ort", plan=plan).threads == 1
    assert make_backend("ort", plan=plan, threads=3).threads == 3
    assert make_backend("ort", plan=small_plan).threads is None
