"""Target devices: their accelerators and the hardware numbers the cost model uses.

Numbers cite NVIDIA's Jetson module datasheets, the DLA-SW repository and nvpmodel; "derived" marks values computed
from quoted ones (e.g. dense = sparse / 2), "assumed" marks values no source gave us. The
efficiency factors are calibrated (see ``estimate.CALIBRATION``), not quoted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hxsched.errors import HxschedError
from hxsched.scheduler.types import Accelerator, AcceleratorKind


@dataclass(frozen=True)
class EngineSpec:
    """One kind of accelerator on a device (the GPU, or one DLA core)."""

    kind: AcceleratorKind
    fp16_tflops: float  # dense peak
    int8_tops: float  # dense peak
    mem_gbs: float  # DRAM bandwidth this engine can pull alone
    compute_eff: float  # achieved fraction of peak on convolutions (calibrated)
    mem_eff: float  # achieved fraction of bandwidth (calibrated)
    launch_us: float  # fixed cost per kernel (GPU) or per layer (DLA)
    source: str


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    title: str
    accelerators: tuple[Accelerator, ...]  # e.g. (GPU, DLA0, DLA1)
    gpu: EngineSpec
    dla: EngineSpec | None
    dram_gbs: float
    # A GPU<->DLA hand-over: fixed cost (task submission, synchronisation, reformat launch)
    # plus the boundary tensor through a reformat kernel at ``reformat_gbs``.
    transition_us: float
    reformat_gbs: float
    dla_target: str | None  # which DLA rule set applies ("orin", "xavier")
    source: str

    @property
    def dla_cores(self) -> int:
        return sum(1 for a in self.accelerators if a.is_dla)

    def engine(self, accelerator: str) -> EngineSpec:
        """The engine behind ``accelerator`` (``gpu``, ``dla0``/``dla1``, or the kind ``dla``)."""
        if accelerator in (AcceleratorKind.DLA, Accelerator.DLA0, Accelerator.DLA1):
            if self.dla is None:
                raise HxschedError(f"device {self.name} has no DLA")
            return self.dla
        return self.gpu


_ORIN_GPU = (
    "AGX Orin 64GB: 170 sparse INT8 TOPS (DS-10662-001), dense INT8 85 / FP16 42.5 (derived)"
)
_ORIN_DLA = (
    "2x DLA v2.0, 105 sparse INT8 TOPS for both (datasheet) -> ~26 dense INT8 TOPS per core "
    "(derived); Orin DLA FP16 rate not published: assumed INT8/2"
)

DEVICES: dict[str, DeviceSpec] = {
    d.name: d
    for d in (
        DeviceSpec(
            name="orin-agx",
            title="Jetson AGX Orin 64GB (MAXN)",
            accelerators=(Accelerator.GPU, Accelerator.DLA0, Accelerator.DLA1),
            gpu=EngineSpec(AcceleratorKind.GPU, 42.5, 85.0, 204.8, 0.60, 0.80, 10.0, _ORIN_GPU),
            dla=EngineSpec(AcceleratorKind.DLA, 13.0, 26.0, 70.0, 0.33, 0.75, 2.0, _ORIN_DLA),
            dram_gbs=204.8,
            transition_us=35.0,
            reformat_gbs=60.0,
            dla_target="orin",
            source="Jetson AGX Orin datasheet (DS-10662-001); transition cost from Orin 'Reformatting CopyNode' 0.041 ms "
            "(HaX-CoNN README, TRT 8.5) and Xavier 0.045-0.084 ms (HaX-CoNN transition_results)",
        ),
        DeviceSpec(
            name="orin-nx",
            title="Jetson Orin NX 16GB",
            accelerators=(Accelerator.GPU, Accelerator.DLA0, Accelerator.DLA1),
            gpu=EngineSpec(
                AcceleratorKind.GPU,
                14.0,
                28.0,
                102.4,
                0.80,
                0.50,
                15.0,
                "Orin NX 16GB: 1024-core Ampere GPU, ~1/3 of AGX Orin (derived, unverified)",
            ),
            dla=EngineSpec(
                AcceleratorKind.DLA,
                5.0,
                10.0,
                50.0,
                0.24,
                0.70,
                2.0,
                "2x NVDLA at 614 MHz, 20 sparse INT8 TOPS each -> 10 dense (derived)",
            ),
            dram_gbs=102.4,
            transition_us=35.0,
            reformat_gbs=40.0,
            dla_target="orin",
            source="Jetson Orin NX datasheet; GPU share derived",
        ),
        DeviceSpec(
            name="orin-nano",
            title="Jetson Orin Nano 8GB (no DLA)",
            accelerators=(Accelerator.GPU,),
            gpu=EngineSpec(
                AcceleratorKind.GPU,
                10.0,
                20.0,
                68.0,
                0.60,
                0.80,
                35.0,
                "Orin Nano 8GB: 1024-core Ampere GPU, 40 sparse INT8 TOPS (derived dense)",
            ),
            dla=None,
            dram_gbs=68.0,
            transition_us=0.0,
            reformat_gbs=30.0,
            dla_target=None,
            source="Jetson Orin Nano datasheet: no DLA",
        ),
        DeviceSpec(
            name="xavier-agx",
            title="Jetson AGX Xavier (MAXN)",
            accelerators=(Accelerator.GPU, Accelerator.DLA0, Accelerator.DLA1),
            gpu=EngineSpec(
                AcceleratorKind.GPU,
                11.0,
                22.0,
                137.0,
                0.60,
                0.80,
                10.0,
                "512-core Volta, 64 Tensor Cores; ~11 FP16 TFLOPS / 22 INT8 TOPS (commonly cited, "
                "unverified); 137 GB/s LPDDR4x",
            ),
            dla=EngineSpec(
                AcceleratorKind.DLA,
                2.5,
                5.0,
                50.0,
                0.80,
                0.90,
                3.0,
                "2x DLA v1, 'up to 5 TOPS INT8 or 2.5 TFLOPS FP16' each",
            ),
            dram_gbs=137.0,
            transition_us=60.0,
            reformat_gbs=30.0,
            dla_target="xavier",
            source="Jetson AGX Xavier datasheet; transition 0.045-0.084 ms DLA side (HaX-CoNN, Xavier)",
        ),
    )
}


def device(name: str) -> DeviceSpec:
    try:
        return DEVICES[name]
    except KeyError:
        raise HxschedError(
            f"unknown device {name!r} (known: {', '.join(DEVICES)}, and 'cpu' for measured "
            "ONNX Runtime profiles)"
        ) from None
