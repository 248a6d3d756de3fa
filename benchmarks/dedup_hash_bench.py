"""Cost of hashing a scan for dedup, as a share of the time it takes to read it (target <= 10%).

For each file: ``curator.io.read_volume`` (the anchor) and ``curator.dedup.features.scan_features``
(exact hash + canonical grid + global and slab hashes + thumbnail), timed alternately in the
same run, best of ``--repeat``. Files: the real CT/MR samples, a large synthetic CT
(512×512×300, 0.8×0.8×1.5 mm, int16) and a brain-MR-sized synthetic MR (240×240×156, 1 mm,
int16: the size of a BraTS volume), both written as .nii.gz.

Usage::

    python benchmarks/dedup_hash_bench.py [--data ../shared/data/real] [--repeat 3] [--big /tmp/big_ct.nii.gz]
        [--mid /tmp/mid_mr.nii.gz]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_eval import SOURCES, default_data

from curator.dedup.features import HashSettings, scan_features
from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import Subject, grid, render


def big_ct(path: Path, shape: tuple[int, int, int] = (128, 128, 75), spacing: tuple[float, float, float] = (3.2, 3.2, 6.0),
           modality: str = "CT") -> Path:
    """A phantom 4× the size of ``shape`` per axis (default a 512×512×300 CT): rendered on a coarse
    grid, interpolated up, fresh noise (fast to make)."""
    if path.exists():
        return path
    g = grid(shape, spacing, "LPS", center=(0.0, -10.0, 20.0))
    img, _ = render(Subject.random(1), g, modality, seed=1)
    up = ndimage.zoom(img, (4, 4, 4), order=1)
    up += np.random.default_rng(1).normal(0, 12, up.shape).astype(np.float32)
    m = g.matrix.copy()
    m[:3, :3] = m[:3, :3] / 4
    m[:3, 3] = g.voxel_to_world(np.array([-0.375, -0.375, -0.375]))[0]
    save_nifti(path, np.rint(up).astype(np.int16), Geometry.from_affine(up.shape, m), np.int16)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(default_data()))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big", default="", help="where to keep the synthetic 512x512x300 CT (default: a temp file)")
    ap.add_argument("--mid", default="", help="where to keep the synthetic 240x240x156 MR (default: a temp file)")
    args = ap.parse_args()
    data = Path(args.data)
    settings = HashSettings()
    with tempfile.TemporaryDirectory() as tmp:
        big = big_ct(Path(args.big) if args.big else Path(tmp) / "big_ct.nii.gz")
        files = [(name, data / rel, mod) for name, (rel, mod) in SOURCES.items() if (data / rel).exists()]
        if len(files) < len(SOURCES):  # said, or the "largest share" below would be of the synthetic files alone
            missing = [name for name, (rel, _) in SOURCES.items() if not (data / rel).exists()]
            print(f"note: {len(missing)} of {len(SOURCES)} real sample files are not under {data} and are left out "
                  f"({', '.join(missing)}); pass --data shared/data/real", file=sys.stderr)
        mid = big_ct(Path(args.mid) if args.mid else Path(tmp) / "mid_mr.nii.gz", (60, 60, 39), (4.0, 4.0, 4.0), "MR")
        files.append(("synthetic 240x240x156 MR", mid, "MR"))
        files.append(("synthetic 512x512x300 CT", big, "CT"))
        print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus")
        print("| scan | shape | read s | hash s | hash / read |")
        print("|---|---|---|---|---|")
        ratios = []
        for name, path, modality in files:
            t_read, t_hash = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                vol = read_volume(path, role="image")
                t_read.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                scan_features(vol.array, vol.geometry, settings)
                t_hash.append(time.perf_counter() - t0)
            r, h = min(t_read), min(t_hash)
            ratios.append(h / r)
            print(f"| {name} | {vol.shape} | {r:.3f} | {h:.3f} | {100 * h / r:.1f}% |")
        print(f"\nlargest share: {100 * max(ratios):.1f}% (synthetic MR: {100 * ratios[-2]:.1f}%, "
              f"large CT: {100 * ratios[-1]:.1f}%)")


if __name__ == "__main__":
    main()
