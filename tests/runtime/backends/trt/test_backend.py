"""The ``trt`` backend's pure parts (layouts, build decisions, engine keys, fallback checks) on a
CPU, and one end-to-end run on an NVIDIA GPU with TensorRT + pycuda."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_builders import graph, w

from hxsched.errors import HxschedError
from hxsched.runtime.backends.trt import engine as trt_engine
from hxsched.runtime.backends.trt.backend import (
    TrtBackend,
    check_fallbacks,
    engine_key,
    pack_vectorized,
    padded_nbytes,
    segment_config,
    unpack_vectorized,
)
from hxsched.runtime.backends.trt.engine import TensorIO
from hxsched.runtime.backends.trt.engine_cache import EngineCache
from hxsched.runtime.build import InstanceSpec, SegmentSpec, segment_digest

TRT = Path(__file__).resolve().parents[3] / "data" / "trt"


def _resnet_head(seed: int = 0):
    """Conv_0 + Relu_1 -> MaxPool_2 -> Conv_3 + Relu_4: the node names of the recorded ResNet-18
    engine (tests/data/trt/trex_resnet18_a100_fp16.graph.excerpt.json)."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="Conv_0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r1"], name="Relu_1"),
        helper.make_node(
            "MaxPool", ["r1"], ["m2"], name="MaxPool_2", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["m2", "w3"], ["c3"], name="Conv_3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["y"], name="Relu_4"),
    ]
    inits = {"w0": w(4, 3, 3, 3, seed=seed), "w3": w(4, 4, 3, 3, seed=1)}
    return graph(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)


def _seg(g, accelerator: str, *, src: str | None = None, dst: str | None = None) -> SegmentSpec:
    return SegmentSpec(
        instance="m",
        index=0,
        accelerator=accelerator,
        first_group=0,
        last_group=0,
        expected_ms=1.0,
        first_node=0,
        last_node=len(g.nodes) - 1,
        inputs=tuple(g.inputs),
        outputs=tuple(g.outputs),
        inputs_from={t: src for t in g.inputs},
        outputs_to={t: dst for t in g.outputs},
        graph=g,
        digest=segment_digest(g),
    )


@pytest.fixture(scope="module")
def head():
    return _resnet_head()


# --- layouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "fmt", "nbytes"),
    [
        ((1, 3, 8, 8), "float16", "chw16", 1 * 16 * 8 * 8 * 2),
        ((1, 16, 8, 8), "float16", "chw16", 1 * 16 * 8 * 8 * 2),
        ((1, 17, 4, 5), "float16", "chw16", 1 * 32 * 4 * 5 * 2),
        ((2, 3, 4, 4), "int8", "chw32", 2 * 32 * 4 * 4 * 1),
        ((1, 33, 2, 2), "int8", "chw32", 1 * 64 * 2 * 2 * 1),
        ((1, 3, 8, 8), "float32", "linear", 1 * 3 * 8 * 8 * 4),
        ((1, 17, 4, 5), "float16", "linear", 1 * 17 * 4 * 5 * 2),
        ((1, 1000), "float32", "linear", 4000),
        ((), "float32", "linear", 4),
        ((), "int8", "chw32", 1),
    ],
)
def test_padded_nbytes(shape, dtype, fmt, nbytes):
    assert padded_nbytes(shape, dtype, fmt) == nbytes


def _trt_vector_major(arr: np.ndarray, vec: int) -> np.ndarray:
    """TensorRT's definition of kCHW16/kCHW32 (TensorFormat docs): a C array
    [N][(C+V-1)/V][H][W][V] where tensor coordinate (n, c, h, w) lies at [n][c/V][h][w][c%V];
    padding channels are zero. Written element by element, independently of the backend."""
    n, c, h, wd = arr.shape
    out = np.zeros((n, -(-c // vec), h, wd, vec), dtype=arr.dtype)
    for ni in range(n):
        for ci in range(c):
            for hi in range(h):
                for wi in range(wd):
                    out[ni, ci // vec, hi, wi, ci % vec] = arr[ni, ci, hi, wi]
    return out


@pytest.mark.parametrize("vec", [16, 32])
@pytest.mark.parametrize("shape", [(1, 3, 2, 3), (2, 17, 3, 2), (1, 64, 2, 2), (1, 33, 1, 1)])
def test_pack_is_tensorrt_vector_major_and_unpack_inverts_it(shape, vec):
    rng = np.random.default_rng(sum(shape) + vec)
    arr = rng.standard_normal(shape).astype(np.float32)
    dtype = "float16" if vec == 16 else "float32"
    packed = pack_vectorized(arr, vec, dtype)
    n, c, h, wd = shape
    assert packed.shape == (n, -(-c // vec), h, wd, vec) and packed.dtype == np.dtype(dtype)
    assert packed.flags.c_contiguous
    np.testing.assert_array_equal(packed, _trt_vector_major(arr.astype(dtype), vec))
    # The bytes a buffer of padded_nbytes holds, read back flat (as from a pinned host buffer).
    fmt = "chw16" if vec == 16 else "chw32"
    assert packed.nbytes == padded_nbytes(shape, dtype, fmt)
    back = unpack_vectorized(packed.reshape(-1), shape, vec)
    assert back.shape == shape and back.dtype == np.float32
    np.testing.assert_array_equal(back, arr.astype(dtype).astype(np.float32))


def test_pack_spot_checks_the_documented_coordinates():
    arr = np.arange(2 * 17 * 3 * 4, dtype=np.float32).reshape(2, 17, 3, 4)
    packed = pack_vectorized(arr, 16, "float32")
    for n, c, h, x in [(0, 0, 0, 0), (1, 16, 2, 3), (0, 15, 1, 2), (1, 5, 0, 1)]:
        assert packed[n, c // 16, h, x, c % 16] == arr[n, c, h, x]
    assert not packed[:, 1, :, :, 1:].any()  # channels 17..31 are padding


def test_int8_chw32_round_trip():
    rng = np.random.default_rng(3)
    arr = rng.integers(-128, 128, size=(1, 40, 2, 3)).astype(np.int8)
    packed = pack_vectorized(arr, 32, "int8")
    assert packed.dtype == np.int8 and packed.shape == (1, 2, 2, 3, 32)
    np.testing.assert_array_equal(unpack_vectorized(packed, arr.shape, 32), arr.astype(np.float32))


def test_linear_is_a_plain_copy():
    arr = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    packed = pack_vectorized(arr, 1, "float16")
    assert packed.shape == arr.shape and packed.dtype == np.float16
    back = unpack_vectorized(packed.reshape(-1), arr.shape, 1)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, arr, rtol=1e-3, atol=1e-3)


# --- build decisions -----------------------------------------------------------------------------


def test_dla_segment_from_host_to_gpu(head):
    seg = _seg(head, "dla1", src=None, dst="gpu")
    cfg = segment_config(
        seg, "fp16", allow_gpu_fallback=False, calibration_cache=None, trt_version="10.3.0"
    )
    assert cfg.accelerator == "dla1" and cfg.dla_core == 1 and cfg.precision == "fp16"
    assert cfg.inputs == {"x": TensorIO("float16", "chw16")}
    assert cfg.outputs == {"y": TensorIO("float16", "chw16")}
    assert cfg.direct_io and not cfg.gpu_fallback and not cfg.strongly_typed

    fb = segment_config(
        seg, "fp16", allow_gpu_fallback=True, calibration_cache=None, trt_version="10.3.0"
    )
    assert fb.gpu_fallback and not fb.direct_io
    assert fb.inputs == cfg.inputs and fb.outputs == cfg.outputs


def test_gpu_segment_between_host_and_host(head):
    seg = _seg(head, "gpu")
    cfg = segment_config(
        seg, "fp16", allow_gpu_fallback=True, calibration_cache=None, trt_version="10.3.0"
    )
    assert cfg.dla_core is None and not cfg.gpu_fallback and not cfg.direct_io
    assert cfg.inputs == {"x": TensorIO("float32", "linear")}
    assert cfg.outputs == {"y": TensorIO("float32", "linear")}
    gg = segment_config(
        _seg(head, "gpu", src="gpu", dst="dla0"),
        "fp16",
        allow_gpu_fallback=False,
        calibration_cache=None,
        trt_version="10.3.0",
    )
    assert gg.inputs["x"] == TensorIO("float16", "linear")
    assert gg.outputs["y"] == TensorIO("float16", "chw16")


def test_int8_calibration_depends_on_the_tensorrt_major(head):
    seg = _seg(head, "dla0", src="gpu", dst="gpu")
    with pytest.raises(HxschedError, match="calibration"):
        segment_config(
            seg, "int8", allow_gpu_fallback=False, calibration_cache=None, trt_version="10.3.0"
        )
    with pytest.raises(HxschedError, match="calibration"):
        segment_config(
            seg, "int8", allow_gpu_fallback=False, calibration_cache=None, trt_version="8.5.2.2"
        )
    cfg = segment_config(
        seg, "int8", allow_gpu_fallback=False, calibration_cache=None, trt_version="11.0.0"
    )
    assert cfg.strongly_typed and cfg.precision == "int8"
    assert cfg.inputs["x"] == TensorIO("int8", "chw32")
    cal = segment_config(
        seg, "int8", allow_gpu_fallback=False, calibration_cache="cal.cache", trt_version="10.3.0"
    )
    assert cal.calibration_cache == "cal.cache" and not cal.strongly_typed


def _key(seg: SegmentSpec, **kw):
    cfg = segment_config(
        seg,
        kw.pop("precision", "fp16"),
        allow_gpu_fallback=False,
        calibration_cache=None,
        trt_version="10.3.0",
    )
    return engine_key(seg, cfg, trt_version="10.3.0", device_name="Orin", compute_capability="8.7")


def test_engine_key_follows_the_segment(head):
    seg = _seg(head, "dla0", src=None, dst="gpu")
    key = _key(seg)
    assert key.segment_sha256 == seg.digest and key.dla_core == 0 and key.direct_io
    assert key.io_layout == "in:x=float16/chw16;out:y=float16/chw16"
    assert key.filename().startswith(seg.digest[:12] + "-dla0-fp16-")
    assert _key(_seg(head, "dla0", src=None, dst="gpu")) == key  # deterministic

    other = _seg(_resnet_head(seed=7), "dla0", src=None, dst="gpu")  # new weights, same structure
    assert other.digest != seg.digest
    assert _key(other).digest() != key.digest()
    assert _key(other).filename() != key.filename()
    # A DLA boundary is chw16 whoever is on the other side; the same segment on the GPU,
    # or at another precision, is another engine.
    assert _key(_seg(head, "dla0", src=None, dst=None)).io_layout == key.io_layout
    gpu = _key(_seg(head, "gpu"))
    assert gpu.io_layout == "in:x=float32/linear;out:y=float32/linear"
    assert gpu.digest() != key.digest() and "-gpu-fp16-" in gpu.filename()


# --- fallback checks -----------------------------------------------------------------------------


def test_check_fallbacks_from_a_recorded_inspector_json(head):
    """A planned-DLA segment whose engine came out as the recorded GPU engine: every node that a
    GPU layer names is a fallback, in node order, with the layer that runs it."""
    info = (TRT / "trex_resnet18_a100_fp16.graph.excerpt.json").read_text()
    events = check_fallbacks(_seg(head, "dla0"), info, [])
    assert [e.node for e in events] == ["Conv_0", "Relu_1", "MaxPool_2", "Conv_3", "Relu_4"]
    assert all(e.segment == "m/s0" and e.source == "inspector" for e in events)
    assert events[0].layer == "Conv_0 + Relu_1" and "CaskConvolution" in events[0].reason
    assert events[2].layer == "MaxPool_2"
    # The same engine for a GPU segment is what was planned: nothing to report.
    assert check_fallbacks(_seg(head, "gpu"), info, []) == []


def _yolo_head():
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], name="/model.22/cv3/Conv"),
        helper.make_node("Div", ["c", "k"], ["d"], name="/model.22/Div"),
        helper.make_node("Reshape", ["d", "s"], ["y"], name="/model.22/Reshape"),
    ]
    inits = {"wc": w(4, 3, 1, 1), "k": np.array(2.0, np.float32), "s": np.array([1, 4, 16])}
    return graph(nodes, {"x": [1, 3, 4, 4]}, ["y"], inits)


def test_check_fallbacks_from_a_recorded_builder_log():
    g = _yolo_head()
    assert [n.name for n in g.nodes] == ["/model.22/cv3/Conv", "/model.22/Div", "/model.22/Reshape"]
    log = (TRT / "ultralytics_16449_yolov8m_jp6.log").read_text().splitlines()
    # The engine's layer names from a real DLA engine (no node of ours is named there).
    names = [
        "images to nvm",
        "{ForeignNode[Conv_0...Concat_198]}",
        "head_3 from nvm",
        "images copy finish",
    ]
    for inspector in (None, json.dumps(names)):
        events = check_fallbacks(_seg(g, "dla1", src="gpu", dst="gpu"), inspector, log)
        assert [(e.node, e.source) for e in events] == [
            ("/model.22/Div", "builder-log"),
            ("/model.22/Reshape", "builder-log"),
        ]
        assert events[0].reason == "DLA cores do not support DIV ElementWise operation"
        assert events[1].reason == "Unsupported on DLA (SHUFFLE)"
    assert check_fallbacks(_seg(g, "gpu"), json.dumps(names), log) == []


def test_check_fallbacks_without_a_model_or_evidence(head):
    seg = _seg(head, "dla0")
    assert check_fallbacks(seg, None, []) == []
    seg.graph = None
    assert (
        check_fallbacks(
            seg,
            None,
            [
                "Layer 'Conv_0' (CONVOLUTION): Unsupported on DLA. "
                "Switching this layer's device type to GPU."
            ],
        )
        == []
    )


# --- the backend without TensorRT ----------------------------------------------------------------


def test_backend_constructs_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setenv("HXSCHED_CACHE_DIR", str(tmp_path / "cache"))
    b = TrtBackend()
    assert b.name == "trt" and b.computes and b.precision == "fp16"
    assert b.cache.root == tmp_path / "cache" / "engines"
    assert not (tmp_path / "cache").exists()  # nothing written until an engine is built
    b2 = TrtBackend(
        precision="int8", allow_gpu_fallback=True, calibration_cache="c", cache_dir=tmp_path / "e"
    )
    assert b2.cache.root == tmp_path / "e" and b2.allow_gpu_fallback
    b2.close()


def test_prepare_without_tensorrt_says_how_to_get_it(tmp_path, monkeypatch, head):
    for mod in ("pycuda", "pycuda.autoinit", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)  # as if not installed, even where it is
    inst = InstanceSpec("m", "tiny", [_seg(head, "gpu")], head)
    with pytest.raises(HxschedError) as exc:
        TrtBackend(cache_dir=tmp_path).prepare([inst], inflight=1)
    text = str(exc.value)
    assert "pycuda" in text and "TensorRT" in text
    assert "JetPack" in text and "hxsched[jetson]" in text and "--backend ort" in text
    assert "\n" not in text


def _fake_cuda_modules(monkeypatch) -> None:
    pkg = types.ModuleType("pycuda")
    driver = types.ModuleType("pycuda.driver")
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", types.ModuleType("pycuda.autoinit"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    pkg.driver = driver


def test_prepare_names_missing_tensorrt(tmp_path, monkeypatch, head):
    _fake_cuda_modules(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    inst = InstanceSpec("m", "tiny", [_seg(head, "gpu")], head)
    with pytest.raises(HxschedError, match=r"tensorrt is missing.*JetPack"):
        TrtBackend(cache_dir=tmp_path).prepare([inst], inflight=1)


def test_prepare_refuses_a_segment_without_a_model(tmp_path, monkeypatch):
    _fake_cuda_modules(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    seg = SegmentSpec("m", 0, "dla0", 0, 3, 1.0)
    with pytest.raises(HxschedError, match="no model"):
        TrtBackend(cache_dir=tmp_path).prepare([InstanceSpec("m", "x", [seg])], inflight=2)


def _offline_backend(tmp_path, monkeypatch, **kw) -> TrtBackend:
    b = TrtBackend(cache_dir=tmp_path, **kw)
    monkeypatch.setattr(b, "device_identity", lambda: ("10.3.0", "Orin", "8.7"), raising=False)
    return b


def test_engine_for_uses_the_cache_without_building(tmp_path, monkeypatch, head, caplog):
    b = _offline_backend(tmp_path, monkeypatch)
    seg = _seg(head, "dla0", src=None, dst="gpu")
    key = _key(seg)
    EngineCache(tmp_path).put(key, b"a cached engine")

    def no_build(*a, **k):
        raise AssertionError("built although cached")

    monkeypatch.setattr(trt_engine, "build_engine", no_build)
    caplog.set_level(logging.INFO, logger="hxsched")
    assert b.engine_for(seg) == b"a cached engine"
    assert caplog.messages == [f"m/s0: engine from cache ({key.filename()})"]


def test_a_failed_dla_build_names_the_nodes_and_the_fallback_flag(tmp_path, monkeypatch, caplog):
    g = _yolo_head()
    b = _offline_backend(tmp_path, monkeypatch)
    recorded = (TRT / "ultralytics_16449_yolov8m_jp6.log").read_text().splitlines()

    def failing_build(onnx_bytes, cfg, log):
        assert cfg.accelerator == "dla0" and cfg.direct_io and not cfg.gpu_fallback
        assert onnx_bytes[:2]  # the segment as a serialized ModelProto
        log.extend(recorded)
        raise HxschedError("TensorRT could not build the dla0 engine: see log")

    monkeypatch.setattr(trt_engine, "build_engine", failing_build)
    caplog.set_level(logging.INFO, logger="hxsched")
    with pytest.raises(HxschedError) as exc:
        b.engine_for(_seg(g, "dla0", src="gpu", dst="gpu"))
    text = str(exc.value)
    assert text.startswith("m/s0: TensorRT could not build the dla0 engine")
    assert "/model.22/Div: DLA cores do not support DIV ElementWise operation" in text
    assert "--allow-gpu-fallback" in text
    assert "building a TensorRT fp16 engine on dla0" in caplog.messages[0]
    assert list(tmp_path.iterdir()) == []  # nothing cached


# --- on a GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_segment_end_to_end_matches_onnx_runtime(
    tmp_path, caplog
):  # pragma: no cover - needs a GPU
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    import onnxruntime as ort

    from hxsched.runtime.backends.base import FrameState
    from hxsched.scheduler.graph.onnx_io import to_model_proto

    g = _resnet_head()
    seg = _seg(g, "gpu")
    inst = InstanceSpec("m", "tiny", [seg], g)
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    sess = ort.InferenceSession(
        to_model_proto(g).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    want = [sess.run(["y"], {"x": x})[0] for x in frames]

    caplog.set_level(logging.INFO, logger="hxsched")
    backend = TrtBackend(cache_dir=tmp_path, precision="fp16")
    backend.prepare([inst], inflight=2)
    try:
        assert any("building a TensorRT fp16 engine on gpu" in s for s in caplog.messages)
        assert backend.fallbacks == []
        stream = backend.stream("gpu")
        states = [FrameState(k, {"m": {"x": x}}) for k, x in enumerate(frames)]
        for state, expected in zip(states, want, strict=True):
            ev = stream.enqueue(seg, state, [])
            ev.wait()
            assert ev.done() and ev.end_ms >= ev.start_ms >= 0
            got = state.tensors["m"]["y"]
            assert got.shape == expected.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)
        assert "TensorRT" in backend.source()
    finally:
        backend.close()
    assert len(list(tmp_path.glob("*.engine"))) == 1

    # A second backend loads the engine from the cache.
    caplog.clear()
    again = TrtBackend(cache_dir=tmp_path, precision="fp16")
    again.prepare([inst], inflight=1)
    try:
        assert any("engine from cache" in s for s in caplog.messages)
        state = FrameState(0, {"m": {"x": frames[0]}})
        again.stream("gpu").enqueue(seg, state, []).wait()
        np.testing.assert_allclose(state.tensors["m"]["y"], want[0], rtol=2e-2, atol=2e-2)
    finally:
        again.close()


def test_vectorised_dimension_is_c_for_three_dimensional_tensors():
    from hxsched.runtime.backends.trt.backend import padded_nbytes

    assert padded_nbytes((3, 5, 7), "float16", "chw16") == 16 * 5 * 7 * 2  # [C, H, W]
    assert padded_nbytes((1, 3, 5, 7), "float16", "chw16") == 16 * 5 * 7 * 2
    assert padded_nbytes((1, 1000), "float16", "chw16") == 1000 * 2  # no C: not vectorised


# --- issue 10: streams, contexts, copies, layouts -----------------------------------------------


class _ThreadCuda:
    """A pycuda.driver that, like pycuda, keeps a context stack per thread and refuses work on a
    thread without a current context (src/cpp/cuda.hpp ``context_stack``)."""

    def __init__(self) -> None:
        import threading

        self.local = threading.local()
        self.streams: list[int] = []
        self.queries = 0
        cuda = self

        class Ctx:
            def push(self) -> None:
                cuda._stack().append(self)

            @staticmethod
            def pop() -> None:
                cuda._stack().pop()

            @staticmethod
            def get_device():
                cuda._need()
                cuda.queries += 1
                return Device(0)

            @staticmethod
            def synchronize() -> None:
                cuda._need()

            @staticmethod
            def get_current():
                stack = cuda._stack()
                return stack[-1] if stack else None

        class Device:
            def __init__(self, n: int) -> None:
                pass

            def retain_primary_context(self):
                return Ctx()

            def name(self) -> str:
                return "Orin"

            def compute_capability(self):
                return (8, 7)

        class Stream:
            def __init__(self, flags: int = 0) -> None:
                cuda._need()
                cuda.streams.append(flags)

        class Event:
            def __init__(self, flags: int = 0) -> None:
                cuda._need()

            def record(self, stream=None):
                return self

            def synchronize(self):
                return self

            def time_since(self, other) -> float:
                return 0.5

        self.Context, self.Device, self.Stream, self.Event = Ctx, Device, Stream, Event

    def init(self, flags: int = 0) -> None:
        pass

    def _stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def _need(self) -> None:
        if not self._stack():
            raise RuntimeError("explicit_context_dependent failed: no currently active context?")


def _install_thread_cuda(monkeypatch, version: str = "10.3.0") -> _ThreadCuda:
    cuda = _ThreadCuda()
    pkg = types.ModuleType("pycuda")
    pkg.driver = cuda
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", None)  # must not be needed
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return cuda


def _on_thread(fn):
    import threading

    out: list = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out.append(("error", str(exc)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


def test_streams_are_non_blocking(tmp_path, monkeypatch):
    cuda = _install_thread_cuda(monkeypatch)
    b = TrtBackend(cache_dir=tmp_path)
    b.prepare([], inflight=1)
    assert cuda.streams == [1]  # the clock stream: CU_STREAM_NON_BLOCKING
    b.stream("gpu")
    b.stream("dla0")
    assert cuda.streams == [1] * 5  # and a compute and a copy stream per accelerator
    b.close()


def test_the_primary_context_is_made_current_on_each_issuing_thread(tmp_path, monkeypatch):
    cuda = _install_thread_cuda(monkeypatch)
    b = TrtBackend(cache_dir=tmp_path)
    b.prepare([], inflight=1)
    queried = cuda.queries
    # An HTTP thread: status() reads the identity cached at prepare time, no CUDA call.
    assert _on_thread(b.device_identity) == ("ok", ("10.3.0", "Orin", "8.7"))
    assert _on_thread(b.source)[1].startswith("measured: TensorRT 10.3.0 on Orin (sm 8.7)")
    assert cuda.queries == queried
    # A worker thread without the context cannot issue work; with it, it can, and pops after.
    assert _on_thread(b.now_ms)[0] == "error"

    def worker():
        with b.on_this_thread():
            t = b.now_ms()
        return t, len(cuda._stack())

    assert _on_thread(worker) == ("ok", (0.5, 0))
    assert len(cuda._stack()) == 1  # the preparing thread keeps it until close()
    b.close()
    assert cuda._stack() == []
    # Closing from another thread makes the context current there for the purpose.
    other = TrtBackend(cache_dir=tmp_path)
    other.prepare([], inflight=1)
    assert _on_thread(other.close) == ("ok", None)


def test_the_executor_binds_the_backend_to_its_thread(tmp_path, monkeypatch):
    from hxsched.runtime.executor import Executor

    seen: list[str] = []

    class Bound:
        def __init__(self) -> None:
            self.backend = self

        @contextlib.contextmanager
        def on_this_thread(self):
            seen.append("push")
            yield
            seen.append("pop")

    ex = Executor.__new__(Executor)
    ex.backend = Bound()
    ex._frames, ex.inflight = [], 1
    monkeypatch.setattr(ex, "prepare", lambda: None, raising=False)
    monkeypatch.setattr(ex, "_drain", lambda on_output: seen.append("drain"), raising=False)
    monkeypatch.setattr(ex, "summary", lambda: "stats", raising=False)
    assert ex.run([]) == "stats"
    assert seen == ["push", "drain", "pop"]


def test_an_old_tensorrt_is_refused_before_any_cuda_call(tmp_path, monkeypatch):
    cuda = _install_thread_cuda(monkeypatch, version="8.4.1.5")
    with pytest.raises(HxschedError, match=r"TensorRT 8\.4\.1\.5 is too old.*JETSON\.md"):
        TrtBackend(cache_dir=tmp_path).prepare([], inflight=1)
    assert cuda.streams == [] and cuda._stack() == []


def test_a_binding_for_another_python_says_what_to_do(tmp_path):
    from hxsched.runtime.backends.trt.backend import foreign_trt_bindings, missing_binding_message

    (tmp_path / "python3.8" / "dist-packages" / "tensorrt").mkdir(parents=True)
    (tmp_path / "python3.10" / "dist-packages" / "tensorrt").mkdir(parents=True)
    other = foreign_trt_bindings((3, 10), roots=(str(tmp_path),))
    assert other == [str(tmp_path / "python3.8" / "dist-packages" / "tensorrt")]
    text = missing_binding_message("tensorrt", (3, 10), other)
    assert "another Python" in text and "JetPack 5.1" in text and "3.10" in text
    assert "\n" not in text
    plain = missing_binding_message("pycuda", (3, 10), [])
    assert "pycuda is missing" in plain and "hxsched[jetson]" in plain


def test_host_outputs_are_copies_not_views_of_the_pinned_slot():
    slot = np.arange(12, dtype=np.float32)
    out = unpack_vectorized(slot, (1, 3, 2, 2), 1)
    assert not np.shares_memory(out, slot)
    slot[:] = -1  # the next frame reuses the slot
    assert out.reshape(-1)[5] == 5.0


@pytest.mark.parametrize("vec", [1, 16, 32])
def test_pack_into_writes_the_same_bytes_as_pack_vectorized(vec):
    from hxsched.runtime.backends.trt.backend import pack_into

    arr = np.random.default_rng(vec).standard_normal((2, 35, 3, 4)).astype(np.float32)
    dtype = "float32" if vec == 32 else "float16"
    want = pack_vectorized(arr, vec, dtype).reshape(-1)
    host = np.zeros(want.size, dtype=dtype)
    pack_into(host, arr, vec)
    np.testing.assert_array_equal(host, want)


def _chain(accs, g):
    """Segments of one instance over the same graph, reading x and skip tensors as given."""
    return [
        SegmentSpec(
            "m", k, acc, k, k, 1.0, inputs=ins, outputs=outs, inputs_from=fr, outputs_to=to, graph=g
        )
        for k, (acc, ins, outs, fr, to) in enumerate(accs)
    ]


def test_a_tensor_read_by_a_dla_and_later_by_the_gpu_has_one_layout():
    from hxsched.runtime.backends.trt.backend import instance_layouts

    g = graph(
        [
            helper.make_node("Relu", ["x"], ["t"], name="a"),
            helper.make_node("Relu", ["t"], ["u"], name="b"),
            helper.make_node("Add", ["u", "t"], ["y"], name="c"),
        ],
        {"x": [1, 8, 4, 4]},
        ["y"],
        {},
    )
    segs = _chain(
        [
            ("gpu", ("x",), ("t",), {"x": None}, {"t": "dla0"}),
            ("dla0", ("t",), ("u",), {"t": "gpu"}, {"u": "gpu"}),
            ("gpu", ("u", "t"), ("y",), {"u": "dla0", "t": "gpu"}, {"y": None}),
        ],
        g,
    )
    lay = instance_layouts(segs, "fp16", allow_gpu_fallback=False)
    assert lay["t"] == TensorIO("float16", "chw16")  # the GPU reader gets the DLA's format
    assert lay["x"] == TensorIO("float32", "linear") and lay["y"] == TensorIO("float32", "linear")
    cfgs = [
        segment_config(
            s,
            "fp16",
            allow_gpu_fallback=False,
            calibration_cache=None,
            trt_version="10.3.0",
            layouts=lay,
        )
        for s in segs
    ]
    assert cfgs[0].outputs["t"] == cfgs[1].inputs["t"] == cfgs[2].inputs["t"]


def test_low_rank_dla_boundaries_are_refused_or_reformatted():
    from hxsched.runtime.backends.trt.backend import tensor_layout

    with pytest.raises(HxschedError, match=r"rank 2 and crosses dla0.*--allow-gpu-fallback"):
        tensor_layout("logits", {"dla0", "gpu"}, "fp16", (1, 1000), "m/s0", False)
    assert tensor_layout("logits", {"dla0", "gpu"}, "fp16", (1, 1000), "m/s0", True) == TensorIO(
        "float16", "linear"
    )


def test_host_fed_dla_inputs_use_dla_linear_when_it_is_plain_nchw():
    from hxsched.runtime.backends.trt.backend import tensor_layout

    assert tensor_layout("x", {None, "dla0"}, "fp16", (1, 3, 640, 640), "s", False) == TensorIO(
        "float16", "dla_linear"
    )
    assert tensor_layout("x", {None, "dla0"}, "fp16", (1, 3, 8, 8), "s", False) == TensorIO(
        "float16", "chw16"
    )
    assert tensor_layout("x", {None, "dla0", "gpu"}, "fp16", (1, 3, 640, 640), "s", False) == (
        TensorIO("float16", "chw16")
    )


def test_the_calibration_cache_is_in_the_engine_key(head, tmp_path):
    seg = _seg(head, "gpu", src=None, dst=None)
    a, b = tmp_path / "a.cache", tmp_path / "b.cache"
    a.write_bytes(b"TRT-8601-EntropyCalibration2\nx: 3c00f9f4\n")
    b.write_bytes(b"TRT-8601-EntropyCalibration2\nx: 3c010000\n")
    keys = []
    for cache in (a, b):
        cfg = segment_config(
            seg,
            "int8",
            allow_gpu_fallback=False,
            calibration_cache=str(cache),
            trt_version="10.3.0",
        )
        keys.append(
            engine_key(seg, cfg, trt_version="10.3.0", device_name="Orin", compute_capability="8.7")
        )
    assert keys[0].calibration_sha256 and keys[0].digest() != keys[1].digest()
    assert _key(seg).calibration_sha256 == ""
