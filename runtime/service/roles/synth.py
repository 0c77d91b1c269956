"""The ``synth`` role: an image-to-image generator (Pix2Pix: CT slice -> synthetic MRI slice),
its input in [-1, 1] and its output as DICOM Secondary Capture in a new series."""

from __future__ import annotations

from typing import Any

import numpy as np

from hxsched.runtime.service.imaging import (
    Window,
    pix2pix_input_into,
    pix2pix_output_to_uint8,
    to_pix2pix_input,
)
from hxsched.runtime.service.roles.base import (
    Prepared,
    Role,
    RoleHandler,
    RoleResult,
    SliceContext,
    register,
)

SIM_NOTE = " [sim backend: CT passed through, not a model output]"
REPLAY_NOTE = " [sim backend: replayed ONNX Runtime output]"


@register
class SynthRole(RoleHandler):
    role = Role.SYNTH
    settings = {
        "window": Window.BRAIN,
        "size": 256,
        "channels": 3,
        "series_description": "",
    }

    def prepare(self, window01: np.ndarray, model) -> Prepared:
        return Prepared(to_pix2pix_input(window01, channels=model.channels, size=model.size))

    def prepare_into(self, window01: np.ndarray, model, out: np.ndarray) -> Any:
        if np.ndim(window01) != 2 or out.shape != (1, model.channels, model.size, model.size):
            return super().prepare_into(window01, model, out)
        pix2pix_input_into(window01, out)  # straight into the hand-over slot
        return None

    def input_shape(self, model) -> tuple[int, ...]:
        return (1, model.channels, model.size, model.size)

    def passthrough(self, prepared: np.ndarray) -> np.ndarray:
        return prepared  # the prepared CT, labelled as such in every output

    def finish(self, output: np.ndarray, info: Any, model, ctx: SliceContext) -> RoleResult:
        h, w = ctx.slice.pixels.shape[:2]
        img = pix2pix_output_to_uint8(output, size=(h, w))
        result = RoleResult(image=img)
        if ctx.sinks.dicom:
            result.files[f"dicom:{ctx.instance}"] = str(_write_dicom(img, model, ctx))
        return result


def _write_dicom(img: np.ndarray, model, ctx: SliceContext):
    from hxsched.runtime.service.dicom_io import encode_secondary_capture
    from hxsched.runtime.service.pipeline import Backend

    path = ctx.out / "dicom" / ctx.instance.replace("#", "_") / f"{ctx.item_id}.dcm"
    desc = model.series_description or f"hxsched {model.name} - NOT FOR DIAGNOSTIC USE"
    if ctx.backend == Backend.SIM:
        desc += REPLAY_NOTE if ctx.replayed else SIM_NOTE
    data = encode_secondary_capture(
        img,
        ctx.slice,
        series_uid=_series_uid(ctx),
        series_number=1001 + ctx.index,
        series_description=desc,
        templates=ctx.templates,
        derivation_note=(REPLAY_NOTE if ctx.replayed else SIM_NOTE)
        if ctx.backend == Backend.SIM
        else "",
    )
    return ctx.write(path, data)


def _series_uid(ctx: SliceContext) -> str:
    """The synthetic series of the source series and instance (deterministic)."""
    from pydicom.uid import generate_uid

    base = (ctx.slice.meta or {}).get("SeriesInstanceUID") or ctx.slice.log_id
    return generate_uid(entropy_srcs=["hxsched-synthetic", str(base), ctx.instance])
