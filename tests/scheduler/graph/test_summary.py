"""Model summaries (structural hash, node order) remembered by file identity."""

from __future__ import annotations

import os

import pytest

from hxsched.errors import ModelError
from hxsched.scheduler.graph.onnx_io import save_model
from hxsched.scheduler.graph.structure import structural_hash
from hxsched.scheduler.graph.summary import ModelSummary, summarize


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HXSCHED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_first_read_loads_then_the_cache_answers(yolov8n_graph, tmp_path, cache):
    path = tmp_path / "m.onnx"
    save_model(yolov8n_graph, path)
    first, graph = summarize(path)
    assert graph is not None and len(list(cache.iterdir())) == 1
    assert first.structural_hash == structural_hash(graph)
    assert first.node_names == tuple(n.name for n in graph.nodes)
    again, graph2 = summarize(path)
    assert graph2 is None and again == first


def test_a_changed_file_is_read_again(pix2pix_graph, yolov8n_graph, tmp_path, cache):
    path = tmp_path / "m.onnx"
    save_model(yolov8n_graph, path)
    old, _ = summarize(path)
    save_model(pix2pix_graph, path)  # same path, other model
    new, graph = summarize(path)
    assert graph is not None and new.structural_hash != old.structural_hash
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: read again
    assert summarize(path)[1] is not None


def test_shape_overrides_are_part_of_the_key(yolov8n_graph, tmp_path, cache):
    path = tmp_path / "m.onnx"
    save_model(yolov8n_graph, path)
    summarize(path)
    # an override that agrees with the model still keys its own entry (another --shape, another
    # model as far as the cache can tell)
    _, graph = summarize(path, {"images": (1, 3, 640, 640)})
    assert graph is not None and len(list(cache.iterdir())) == 2


def test_a_broken_cache_entry_is_ignored(yolov8n_graph, tmp_path, cache):
    path = tmp_path / "m.onnx"
    save_model(yolov8n_graph, path)
    summarize(path)
    (entry,) = cache.iterdir()
    entry.write_text("{not json")
    summary, graph = summarize(path)
    assert graph is not None and summary == ModelSummary.of(graph)


def test_a_missing_model_is_the_usual_one_line_error(tmp_path, cache):
    with pytest.raises(ModelError, match="no such file"):
        summarize(tmp_path / "none.onnx")
