"""RTSTRUCT contour filling: curator's scan-line ``polygon_mask`` against scikit-image's
``draw.polygon`` (the anchor: what ``curator.io.rtstruct`` called first).

A synthetic structure set the size of a real one: on a 512 × 512 CT slice grid, ``--slices``
contours of each of a body outline (an ellipse of ~420 × 300 pixels, ``--vertices`` points with a
wobble, as a planning system traces the skin), a lung (~150 × 200) and a small tumour (~30 px);
every contour filled by both, alternately, best of ``--repeat``. Reported: the total time of each,
their ratio, and whether every mask is identical (it must be: random vertices put no pixel
centre exactly on an edge).

Usage::

    python benchmarks/rtstruct_fill_bench.py [--slices 150] [--vertices 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import skimage
from skimage.draw import polygon

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.io.rtstruct import polygon_mask

SHAPE = (512, 512)


def contours(slices: int, vertices: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(slices):
        for (cr, cc), (ar, ac), n in (((256, 256), (210, 150), vertices), ((230, 180), (75, 100), vertices // 3),
                                      ((240, 170), (15, 15), 40)):
            t = np.sort(rng.uniform(0, 2 * np.pi, n))
            wobble = 1 + 0.03 * np.sin(7 * t + rng.uniform(0, 6))
            out.append((cr + ar * wobble * np.cos(t), cc + ac * wobble * np.sin(t)))
    return out


def skimage_mask(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    rr, cc = polygon(r, c, shape=SHAPE)
    m[rr, cc] = 1
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--vertices", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    polys = contours(args.slices, args.vertices)
    print(f"python {platform.python_version()}, numpy {np.__version__}, scikit-image {skimage.__version__}")
    print(f"{len(polys)} contours on {SHAPE[0]}x{SHAPE[1]} slices ({args.slices} slices x 3 structures; body "
          f"{args.vertices} vertices)")
    best = {"skimage draw.polygon (anchor)": float("inf"), "curator polygon_mask": float("inf")}
    same = True
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        a = [skimage_mask(r, c) for r, c in polys]
        t1 = time.perf_counter()
        b = [polygon_mask(r, c, SHAPE) for r, c in polys]
        t2 = time.perf_counter()
        best["skimage draw.polygon (anchor)"] = min(best["skimage draw.polygon (anchor)"], t1 - t0)
        best["curator polygon_mask"] = min(best["curator polygon_mask"], t2 - t1)
        same = same and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    anchor = best["skimage draw.polygon (anchor)"]
    print("| fill | total s | per contour ms | ratio |")
    print("|---|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t:.2f} | {1000 * t / len(polys):.2f} | {t / anchor:.3f} |")
    print(f"identical masks: {same}")


if __name__ == "__main__":
    main()
