"""Dedup cost against the number of scans: one protocol's patients, all on one grid.

Synthetic CT patients (``Subject.random``, 48×48×32 at 6×6×9 mm, the same grid for all) crowd
the global hash: most of their pairs lie within ``global_radius`` bits. For each ``n``: the
candidate pairs the search proposes and the time to verify them (``detect``), with every scan
within the radius verified (``global_neighbours: 0``, the anchor: what the stage did before)
and with each scan's nearest only (the default). One copy is planted per 20 patients (cropped
in-plane, as another dataset publishes a scan): both settings should group each with its
original, and nothing else.

Usage::

    python benchmarks/dedup_scale.py [--sizes 50 100 200] [--anchor-max 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.dedup.detect import DetectSettings, detect, keys_of
from curator.dedup.features import HashSettings, ScanFeatures, scan_features
from curator.dedup.group import components
from curator.dedup.search import SearchSettings, find_candidates
from curator.testing.perturb import crop
from curator.testing.phantoms import Subject, grid, render


def population(n: int) -> tuple[dict[str, ScanFeatures], set[tuple[str, str]]]:
    g = grid((48, 48, 32), (6.0, 6.0, 9.0), "RAS", center=(0.0, -10.0, 20.0))
    feats: dict[str, ScanFeatures] = {}
    copies = set()
    for i in range(n):
        img, _ = render(Subject.random(1000 + i, tumor=False, cyst=False), g, "CT", seed=1000 + i)
        a = np.rint(img).astype(np.int16)
        feats[f"p{i:04d}"] = scan_features(a, g, HashSettings())
        if i % 20 == 7:
            g2, b = crop(g, a, (slice(3, 45), slice(2, 46), slice(0, 32)))
            feats[f"p{i:04d}_copy"] = scan_features(b, g2, HashSettings())
            copies.add((f"p{i:04d}", f"p{i:04d}_copy"))
    return feats, copies


def run(feats: dict[str, ScanFeatures], neighbours: int) -> tuple[int, int, float, set[tuple[str, ...]]]:
    t = time.perf_counter()
    pairs = detect(feats, DetectSettings(search=SearchSettings(global_neighbours=neighbours)))
    seconds = time.perf_counter() - t
    groups = components(sorted(feats), [(p.a, p.b) for p in pairs if p.accepted])
    compared = sum(p.match is not None for p in pairs)
    return len(pairs), compared, seconds, {tuple(g) for g in groups}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--anchor-max", type=int, default=100,
                    help="largest n the anchor is verified at (it is quadratic); its candidates are always counted")
    args = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {len(os.sched_getaffinity(0))} cpus")
    print("| scans | global_neighbours | candidate pairs | copies among them | compared | detect s | copies grouped "
          "| other groups |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        feats, copies = population(n)
        keys = keys_of(feats)
        for k in (0, 8):
            label = k or "all (anchor)"
            cands = {(c.a, c.b) for c in find_candidates(keys, SearchSettings(global_neighbours=k))}
            among = sum(tuple(sorted(c)) in cands for c in copies)
            if k == 0 and n > args.anchor_max:
                print(f"| {len(feats)} | {label} | {len(cands):,} | {among}/{len(copies)} | not verified | | | |",
                      flush=True)
                continue
            cand, compared, seconds, groups = run(feats, k)
            found = sum(any(set(c) <= set(g) for g in groups) for c in copies)
            other = sum(1 for g in groups if not any(set(g) == set(c) for c in copies))
            print(f"| {len(feats)} | {label} | {cand:,} | {among}/{len(copies)} | {compared:,} | {seconds:.1f} | "
                  f"{found}/{len(copies)} | {other} |", flush=True)


if __name__ == "__main__":
    main()
