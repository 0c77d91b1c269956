"""Rebuild the shipped estimated profiles from the zoo and the current cost model."""

from __future__ import annotations

import sys
from pathlib import Path

SHIPPED_DEVICES = ("orin-agx", "xavier-agx")
# (file stem, zoo model, rewrite for the DLA first)
SHIPPED_MODELS = (
    ("pix2pix_unet256", "pix2pix_unet256", False),
    ("pix2pix_unet256_dla", "pix2pix_unet256", True),
    ("yolov8n", "yolov8n", False),
    ("yolov8s", "yolov8s", False),
)


def shipped_profiles():
    """Yield (relative path, Profile) for every shipped profile, computed now."""
    from hxsched.scheduler.cost.estimate import estimate_profile
    from hxsched.scheduler.dla.rewrite import rewrite_for_dla
    from hxsched.scheduler.graph.onnx_io import graph_from_proto
    from hxsched.scheduler.zoo import build_zoo_model

    graphs = {}
    for stem, zoo_name, rewrite in SHIPPED_MODELS:
        if stem not in graphs:
            graph = graph_from_proto(build_zoo_model(zoo_name, calibrate_weights=False))
            if rewrite:
                rewrite_for_dla(graph)
            graph.path = None
            graphs[stem] = graph
        for dev in SHIPPED_DEVICES:
            profile = estimate_profile(graphs[stem], dev, model_name=stem)
            yield Path(dev) / f"{stem}.yaml", profile


def main(argv: list[str] | None = None) -> int:
    from hxsched.scheduler.profile.schema import save_profile

    out = Path(argv[0]) if argv else Path(__file__).parent
    for rel, profile in shipped_profiles():
        save_profile(profile, out / rel)
        print(f"wrote {out / rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
