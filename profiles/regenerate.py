"""Rebuild the shipped estimated profiles from the zoo and the current cost model.

python -m hxsched.profiles.regenerate            # rewrite profiles/<device>/<model>.yaml
python -m hxsched.profiles.regenerate --check    # exit 1 if any shipped profile is stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hxsched.scheduler.profile.schema import Profile

SHIPPED_DEVICES = ("orin-agx", "xavier-agx")
# (file stem, zoo model, rewrite for the DLA first)
SHIPPED_MODELS = (
    ("pix2pix_unet256", "pix2pix_unet256", False),
    ("pix2pix_unet256_dla", "pix2pix_unet256", True),
    ("yolov8n", "yolov8n", False),
    ("yolov8s", "yolov8s", False),
)


def shipped_profiles() -> Iterator[tuple[Path, Profile]]:
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


def comparable(profile: Profile) -> dict[str, Any]:
    """The profile as data without the dates (which change on every regeneration)."""
    data = profile.to_dict()
    for src in data["provenance"]["sources"].values():
        src.pop("date", None)
    return data


def main(argv: list[str] | None = None) -> int:
    from hxsched.scheduler.profile.schema import load_profile, save_profile

    parser = argparse.ArgumentParser(
        prog="python -m hxsched.profiles.regenerate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "out",
        nargs="?",
        type=Path,
        default=Path(__file__).parent,
        help="folder to write (default: the shipped profiles)",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a profile is stale"
    )
    args = parser.parse_args(argv)
    stale = 0
    for rel, profile in shipped_profiles():
        path = args.out / rel
        if args.check:
            fresh = path.exists() and comparable(load_profile(path)) == comparable(profile)
            if not fresh:
                stale += 1
                print(f"stale: {path}")
            continue
        save_profile(profile, path)
        print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
