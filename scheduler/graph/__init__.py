"""The graph front end: the graph view, ONNX import/export, folding, segments, structural hash."""
