"""Speed of the QC features on TotalSegmentator-sized label maps (one core).

Anchor (issue 7): every feature of a 117-class TotalSegmentator label map in <= 2 s on one
core. Measured side by side: :func:`curator.qc.features.measure_label_map` (one pass for the
bounding boxes, then per-label crops) against the obvious per-class loop (a full-volume
``labels == c`` mask per class, then the same per-label measurement on its crop).

    python benchmarks/qc_features.py                 # 512×512×300 synthetic map + the real example
    python benchmarks/qc_features.py --shape 256 256 150
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.qc.features import MeasureOptions, field_of_view, measure_label_map, measure_mask
from curator.testing.labelmaps import many_class_map
from curator.testing.phantoms import grid

REAL = Path(os.environ.get("CURATOR_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
ANCHOR_S = 2.0


def per_class_loop(lab: np.ndarray, g: Geometry, names: dict[int, str], opts: MeasureOptions) -> int:
    fov = field_of_view(g)
    n = 0
    for code, term in names.items():
        m = lab == code
        box = ndimage.find_objects(m.view(np.uint8))
        if not box or box[0] is None:
            continue
        measure_mask(term, m[box[0]], box[0], g, fov=fov, options=opts)
        n += 1
    return n


def cpu(fn, repeat: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def run(lab: np.ndarray, g: Geometry, label: str, mesh: bool) -> list[str]:
    names = {int(c): f"c{int(c)}" for c in np.unique(lab) if c}
    opts = MeasureOptions(mesh=mesh)
    t_one, feats = cpu(lambda: measure_label_map(lab, g, names, options=opts))
    t_loop, _ = cpu(lambda: per_class_loop(lab, g, names, opts), repeat=1)
    row = (f"| {label}{' + mesh' if mesh else ''} | {lab.shape} | {len(feats)} | {t_one:.2f} s | "  # type: ignore[arg-type]
           f"{t_one / ANCHOR_S:.2f} | {t_loop:.2f} s | {t_loop / t_one:.1f}× |")
    return [row]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/curator-qc-117class.npy"))
    args = ap.parse_args()
    shape = tuple(args.shape)
    if args.cache.exists() and np.load(args.cache, mmap_mode="r").shape == shape:
        lab = np.load(args.cache)
    else:
        lab = many_class_map(shape, n_classes=117, seed=1)  # type: ignore[arg-type]
        np.save(args.cache, lab)
    g = grid(shape, spacing=(0.8, 0.8, 1.5))  # type: ignore[arg-type]
    lines = ["| map | shape | labels | one pass (CPU) | ÷ 2 s anchor | per-class loop (CPU) | loop ÷ one pass |",
             "|---|---|---|---|---|---|---|"]
    lines += run(lab, g, f"synthetic 117-class, {(lab > 0).mean():.0%} labelled", mesh=False)
    real = REAL / "totalsegmentator" / "example_seg.nii.gz"
    if not real.exists():
        print(f"note: no real example at {real} (set $CURATOR_REAL_DATA to shared/data/real): its rows are left out",
              file=sys.stderr)
    else:
        v = read_volume(real, role="label")
        lines += run(v.array, v.geometry, "real TotalSegmentator example_seg", mesh=False)
        lines += run(v.array, v.geometry, "real TotalSegmentator example_seg", mesh=True)
    print(f"numpy {np.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}; "
          "CPU seconds (time.process_time, best of 3; the per-class loop once), one thread")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
