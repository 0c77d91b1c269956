"""Error types."""

from __future__ import annotations

from hxsched.errors import HxschedError, InternalError


def test_error_names_the_file():
    err = HxschedError("not a readable ONNX model", path="m.onnx")
    assert str(err) == "m.onnx: not a readable ONNX model" and err.path == "m.onnx"
    assert str(HxschedError("plain")) == "plain"
    assert not issubclass(InternalError, HxschedError)
