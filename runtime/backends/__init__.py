"""Execution backends, peers picked by name: ``ort`` (CPU), ``sim`` (profile times), ``trt``."""
