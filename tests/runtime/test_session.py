"""Runs of a plan: equivalence on ort, comparison with the prediction, re-planning on drift."""

from __future__ import annotations

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.session import make_backend, replan, run_plan


def test_gan_yolo_on_ort_matches_the_whole_models(gan_yolo_plan):
    stats, report = run_plan(gan_yolo_plan, "ort", frames=4, verify=2)
    assert stats.frames == 4
    diffs = report["verify"]["max_abs_diff"]
    assert set(diffs) == {i.name for i in gan_yolo_plan.instances}
    assert all(v <= 1e-4 for outs in diffs.values() for v in outs.values())
    assert "measured_segments_fps" in report["comparison"]
    assert "achieved_over_plan" not in report["comparison"]  # other device: not comparable


def test_dual_pix2pix_on_ort_matches(dual_gan_plan):
    stats, report = run_plan(dual_gan_plan, "ort", frames=2, verify=2)
    diffs = report["verify"]["max_abs_diff"]
    assert len(diffs) == 2 and all(v <= 1e-4 for o in diffs.values() for v in o.values())


def test_sim_comparison_and_replan(small_plan, tmp_path):
    seg = f"{small_plan.instances[0].name}/s{len(small_plan.instances[0].segments) - 1}"
    stats, report = run_plan(
        small_plan, "sim", frames=300, backend_opts={"slowdowns": [(seg, 2.0, 0)]}
    )
    assert report["comparison"]["achieved_over_plan"] < 0.95
    assert stats.fallback_events
    new, info = replan(small_plan, stats, time_limit_s=20)
    assert info["drifted"] == [seg]
    assert new.predicted.period_ms >= small_plan.predicted.period_ms
    assert new.predicted.period_ms < 1000.0 / stats.steady_fps  # beats running on with it
    clean, _ = run_plan(small_plan, "sim", frames=100)
    with pytest.raises(HxschedError, match="no segment drifted"):
        replan(small_plan, clean)


def test_unknown_backend_and_bad_frames(small_plan):
    with pytest.raises(HxschedError, match="unknown backend"):
        make_backend("cuda")
    with pytest.raises(HxschedError, match="--frames"):
        run_plan(small_plan, "sim", frames=0)
