"""Verification's coarse alignment: curator's masked NCC against scikit-image's, on the candidate
pairs of the dedup suite (the anchor is what ``curator.dedup.verify`` called before).

For every candidate pair the search proposes in the suite's pool (the real scans, their
perturbed copies, the phantoms: ``benchmarks/dedup_eval.py``'s pool), both thumbnails are put
on their common grid and coarsened by verify's own functions; then, alternately and best of
``--repeat``: ``skimage.registration.phase_cross_correlation`` with full masks (the anchor) and
``curator.dedup.verify.ncc_peak`` (``masked_ncc`` + the mean of its equal maxima). Reported:
the total time of each, their ratio, the number of pairs whose coarse shift differs (should be
0) and the largest difference of the two correlation volumes; and the time of the whole
``compare`` per pair.

Usage::

    python benchmarks/dedup_verify_bench.py [--data ../shared/data/real] [--repeat 3] [--sources ct_sm,mr_sm]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import skimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_eval import SOURCES, build_pool, default_data
from skimage.registration import phase_cross_correlation
from skimage.registration._masked_phase_cross_correlation import cross_correlate_masked

from curator.dedup.detect import DetectSettings, keys_of
from curator.dedup.features import HashSettings
from curator.dedup.search import find_candidates
from curator.dedup.verify import (
    MIN_LEVEL_RATIO,
    _coarsened,
    _on_grid,
    common_spacing,
    compare,
    levels,
    masked_ncc,
    ncc_peak,
)


def coarse_inputs(ta, tb):  # type: ignore[no-untyped-def]
    """The grids ``compare``'s coarse alignment searches, made by verify's own functions."""
    common = common_spacing(ta, tb)
    ca, cb, _ = _coarsened(_on_grid(ta, common)[0], _on_grid(tb, common)[0])
    return ca, cb


def skimage_shift(ca: np.ndarray, cb: np.ndarray, ratio: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shift, _, _ = phase_cross_correlation(ca, cb, reference_mask=np.ones(ca.shape, bool),
                                              moving_mask=np.ones(cb.shape, bool), overlap_ratio=ratio)
    return np.asarray(shift) + (np.asarray(ca.shape) - np.asarray(cb.shape)) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(default_data()))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sources", default="", help="comma-separated subset of " + ",".join(SOURCES)
                    + " (default: all, the suite's pool)")
    args = ap.parse_args()
    settings = DetectSettings()
    ratio = settings.verify.overlap_ratio
    with tempfile.TemporaryDirectory() as d:
        sources = args.sources.split(",") if args.sources else list(SOURCES)
        items, _, _ = build_pool(Path(args.data), sources, Path(d), HashSettings(), lambda m: None)
    feats = {it.name: it.features for it in items}
    cands = find_candidates(keys_of(feats, settings.search), settings.search)
    inputs, aligned = [], []
    for c in cands:
        ta, tb = feats[c.a].thumbnail, feats[c.b].thumbnail
        if ta is not None and tb is not None:
            inputs.append(coarse_inputs(ta, tb))
            la, lb = levels(ta), levels(tb)
            aligned.append(min(la, lb) >= MIN_LEVEL_RATIO * max(la, lb))  # compare aligns it
    t_sk, t_ours, differ, worst = [], [], [0, 0], [0.0, 0.0]
    for (ca, cb), used in zip(inputs, aligned, strict=True):
        best_sk = best_ours = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            s_sk = skimage_shift(ca, cb, ratio)
            t1 = time.perf_counter()
            s_ours = ncc_peak(ca, cb, ratio)
            t2 = time.perf_counter()
            best_sk, best_ours = min(best_sk, t1 - t0), min(best_ours, t2 - t1)
        t_sk.append(best_sk)
        t_ours.append(best_ours)
        differ[used] += bool(np.any(s_sk != s_ours))
        ref = cross_correlate_masked(cb, ca, np.ones(cb.shape, bool), np.ones(ca.shape, bool), axes=(0, 1, 2),
                                     mode="full", overlap_ratio=ratio)[::-1, ::-1, ::-1]
        worst[used] = max(worst[used], float(np.abs(ref - masked_ncc(ca, cb, ratio)).max()))
    t0 = time.perf_counter()
    for c in cands:
        ta, tb = feats[c.a].thumbnail, feats[c.b].thumbnail
        if ta is not None and tb is not None:
            compare(ta, tb, ratio)
    t_compare = time.perf_counter() - t0
    shapes = np.array([ca.size + cb.size for ca, cb in inputs])
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"scikit-image {skimage.__version__}; {len(inputs)} candidate pairs (coarse grids of "
          f"{int(np.median(shapes))} voxels per pair, median), best of {args.repeat}")
    print("| coarse alignment | total s | per pair ms | ratio to skimage |")
    print("|---|---|---|---|")
    print(f"| skimage phase_cross_correlation, full masks (anchor) | {sum(t_sk):.2f} | "
          f"{1000 * sum(t_sk) / len(t_sk):.1f} | 1.00 |")
    print(f"| curator masked_ncc | {sum(t_ours):.2f} | {1000 * sum(t_ours) / len(t_ours):.1f} | "
          f"{sum(t_ours) / sum(t_sk):.2f} |")
    n_used = sum(aligned)
    print(f"pairs compare aligns: {n_used}; their coarse shift differs in {differ[1]}, largest NCC difference "
          f"{worst[1]:.2e}")
    print(f"scan vs label-map pairs (rejected on intensity levels before aligning): {len(inputs) - n_used}; "
          f"coarse shift differs in {differ[0]}, largest NCC difference {worst[0]:.2e} (skimage's float32 "
          "sums over flat label regions)")
    print(f"whole compare (with curator's NCC): {t_compare:.2f} s, {1000 * t_compare / len(inputs):.1f} ms per pair; "
          f"with skimage's it would take {t_compare - sum(t_ours) + sum(t_sk):.2f} s")


if __name__ == "__main__":
    main()
