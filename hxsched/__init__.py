"""hxsched: plan and run several neural networks across a Jetson's GPU and DLA cores."""

from hxsched.errors import HxschedError, InternalError

__version__ = "0.1.0"

__all__ = ["HxschedError", "InternalError", "__version__"]
