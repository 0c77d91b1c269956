"""Deployment accuracy: FP16/INT8 emulation of planned segments on ONNX Runtime (CPU), metrics
against FP32, INT8 entropy calibration and TensorRT calibration caches."""

# CPU emulation bounds the precision effect only: the DLA computes internally differently from
# any CPU ("GPU use FP32 internally while DLA use TF32", NVIDIA/TensorRT#3531), so the final
# check is on the device.
CPU_NOTE = (
    "CPU emulation (ONNX Runtime, FP32 compute with FP16/INT8 storage at TensorRT fusion "
    "boundaries) bounds the precision effect only: the DLA computes internally differently "
    "(NVIDIA/TensorRT#3531), so the final check is on the device"
)
