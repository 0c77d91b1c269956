"""Inputs and FP32 outputs in Polygraphy's JSON: our reader, and Polygraphy's own (dev-only)."""

from __future__ import annotations

import numpy as np
import pytest

from hxsched.runtime.validate import polygraphy


def _data():
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    outs = [
        {"output0": rng.standard_normal((1, 84, 4)).astype(np.float32), "n": np.arange(3)}
        for _ in range(2)
    ]
    return feeds, outs


def test_round_trip(tmp_path):
    feeds, outs = _data()
    ins, outp = polygraphy.save(tmp_path, "y8n_0", feeds, outs)
    for a, b in zip(polygraphy.load_inputs(ins), feeds, strict=True):
        assert np.array_equal(a["images"], b["images"]) and a["images"].dtype == np.float32
    got = polygraphy.load_outputs(outp)
    assert len(got) == 2 and np.array_equal(got[1]["output0"], outs[1]["output0"])


def test_polygraphy_loads_them(tmp_path):
    pytest.importorskip("polygraphy")
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    feeds, outs = _data()
    ins, outp = polygraphy.save(tmp_path, "m", feeds, outs)
    loaded = load_json(str(ins))
    assert np.array_equal(loaded[0]["images"], feeds[0]["images"])
    results = RunResults.load(str(outp))
    ((runner, iters),) = list(results.items())
    assert runner == polygraphy.RUNNER and len(iters) == 2
    assert np.array_equal(np.asarray(iters[1]["output0"]), outs[1]["output0"])
