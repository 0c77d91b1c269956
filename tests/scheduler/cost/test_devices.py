"""Device specifications."""

from __future__ import annotations

from hxsched.scheduler.cost.devices import DEVICES


def test_every_device_cites_sources_and_is_consistent():
    for dev in DEVICES.values():
        assert dev.source and dev.gpu.source
        assert dev.accelerators[0] == "gpu"
        assert (dev.dla is None) == (dev.dla_cores == 0) == (dev.dla_target is None)
        if dev.dla is not None:
            assert dev.dla.source and dev.transition_us > 0
            assert dev.gpu.fp16_tflops > dev.dla.fp16_tflops
