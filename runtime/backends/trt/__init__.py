"""The ``trt`` backend: TensorRT engines, their cache, Jetson profiling, DLA fallback detection.

Only thin functions touch tensorrt/pycuda, and they import them lazily."""
