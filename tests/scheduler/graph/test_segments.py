"""Segments: chained, they compute exactly what the whole model computes."""

from __future__ import annotations

import numpy as np
import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.reference import OrtModel, random_inputs
from hxsched.scheduler.graph.onnx_io import load_model
from hxsched.scheduler.graph.segments import segment_io, split_at


def run_chain(graph, segments, feeds):
    env = dict(feeds)
    for seg in segments:
        env.update(OrtModel(seg).run({k: env[k] for k in seg.inputs}))
    return {k: env[k] for k in graph.outputs}


@pytest.mark.parametrize("fraction", [(0.2, 0.5, 0.75), (0.33,), (0.9,)])
def test_chained_segments_equal_the_whole_model(pix2pix_graph, fraction):
    n = len(pix2pix_graph.nodes)
    segs = split_at(pix2pix_graph, [int(f * n) for f in fraction])
    feeds = random_inputs(pix2pix_graph, 3)
    want = OrtModel(pix2pix_graph).run(feeds)
    got = run_chain(pix2pix_graph, segs, feeds)
    for k in want:
        assert float(np.abs(want[k] - got[k]).max()) <= 1e-4


def test_torch_export_segments(data_dir):
    g = load_model(data_dir / "torch" / "torch_unet_tiny.onnx")
    segs = split_at(g, [2, 5])
    feeds = random_inputs(g, 0)
    want, got = OrtModel(g).run(feeds), run_chain(g, segs, feeds)
    assert all(np.allclose(want[k], got[k], atol=1e-5) for k in want)


def test_skip_connections_cross_segments(pix2pix_graph):
    io = segment_io(pix2pix_graph, 25, 45)
    assert len(io.inputs) > 1  # the U-Net's skips enter the middle segment
    with pytest.raises(HxschedError):
        segment_io(pix2pix_graph, 5, 500)
