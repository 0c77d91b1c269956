"""The DLA: its op table and rules, the checker, TensorRT's default placement, exact rewrites."""
