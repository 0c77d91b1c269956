"""Host-side packing of one NCHW frame for a DLA input: the full kCHW16 pack (zero-padded copy,
transpose, contiguous copy, copy into the pinned buffer), one strided copy into a preallocated
kCHW16 buffer whose padding lanes were zeroed once, and the contiguous FP16 cast that a
kDLA_LINEAR input needs when W fills 64 bytes. Prints medians against a plan period.

    python benchmarks/bench_trt_pack.py [--shape 1 3 640 640] [--period-ms 2.66] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hxsched.runtime.backends.trt.backend import pack_into, pack_vectorized


def _median_ms(fn, runs: int) -> float:
    fn()  # warm-up (page faults of fresh buffers)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[1, 3, 640, 640])
    ap.add_argument("--vec", type=int, default=16)
    ap.add_argument("--period-ms", type=float, default=2.66, help="the plan's period (YOLOv8n)")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    n, c, h, w = args.shape
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(np.float32)
    groups = -(-c // args.vec)
    host = np.zeros(n * groups * h * w * args.vec, dtype=np.float16)  # the pinned buffer

    def full() -> None:
        np.copyto(host, pack_vectorized(x, args.vec, "float16").reshape(host.shape))

    def strided() -> None:
        pack_into(host, x, args.vec)

    flat = np.zeros(n * c * h * w, dtype=np.float16)  # kDLA_LINEAR FP16: W padded to 64 bytes

    def dla_linear() -> None:
        pack_into(flat, x, 1)

    cases = [("full pack + copy", full), ("one strided copy", strided)]
    if (w * 2) % 64 == 0:  # no W padding needed: kDLA_LINEAR is NCHW
        cases.append(("kDLA_LINEAR cast", dla_linear))
    for name, fn in cases:
        ms = _median_ms(fn, args.runs)
        share = 100 * ms / args.period_ms
        print(
            f"{name:18s} {tuple(args.shape)} vec {args.vec}: median {ms:7.3f} ms "
            f"({share:5.1f} % of a {args.period_ms} ms period)"
        )


if __name__ == "__main__":
    main()
