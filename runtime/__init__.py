"""Running plans: backends, engine building and cache, executor, fallback detection, service.

Hardware libraries (tensorrt, pycuda) are imported lazily inside the backends only.
"""
