"""Multi-index hashing search over 1,000,000 synthetic 64-bit slab hashes vs brute force.

Synthetic collection: ``--n`` slab hashes, ``--slabs`` per scan. A scan's slab hashes
are a random walk (neighbouring slabs differ by a few bits, as real slab hashes do) from a
base code drawn with biased bits (real pHash bits are not uniform). Queries are stored
hashes with 0–3 bits flipped (copies) mixed with fresh random scans (non-copies).

Prints build time, queries/s of :class:`curator.dedup.index.HashIndex` at the stage's
radii, the brute-force anchor (XOR + popcount against every hash, same machine, same run)
and the speed-up; checks that both return the same neighbours.

Usage::

    python benchmarks/dedup_index_bench.py [--n 1000000] [--queries 20000]
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

from curator.dedup.index import HashIndex


def synthetic(n: int, slabs: int, rng: np.random.Generator) -> np.ndarray:
    cases = n // slabs + 1
    p = rng.beta(2, 2, 64)  # per-bit probability of a 1: biased bits
    base = (rng.random((cases, 64)) < p).astype(np.uint64)
    codes = np.zeros((cases, slabs), dtype=np.uint64)
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    cur = (base * weights).sum(axis=1, dtype=np.uint64)
    for s in range(slabs):  # random walk: each slab flips ~4 bits of the previous one
        flips = rng.integers(0, 64, (cases, 4)).astype(np.uint64)
        for f in range(4):
            cur = cur ^ (np.uint64(1) << flips[:, f])
        codes[:, s] = cur
    return codes.ravel()[:n]


def flip_bits(codes: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = codes.copy()
    for j in range(int(k.max(initial=0))):
        pos = rng.integers(0, 64, codes.size).astype(np.uint64)
        out = np.where(k > j, out ^ (np.uint64(1) << pos), out)
    return out


def brute(codes: np.ndarray, queries: np.ndarray, radius: int) -> set[tuple[int, int]]:
    found = set()
    for qi, q in enumerate(queries):
        ii = np.nonzero(np.bitwise_count(codes ^ q) <= radius)[0]
        found.update((qi, int(i)) for i in ii)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--slabs", type=int, default=33)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--brute", type=int, default=200, help="queries timed and checked by brute force")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    codes = synthetic(args.n, args.slabs, rng)
    picks = rng.integers(0, codes.size, args.queries // 2)
    copies = flip_bits(codes[picks], rng.integers(0, 4, picks.size), rng)
    fresh = synthetic(args.queries - picks.size, args.slabs, np.random.default_rng(args.seed + 1))
    queries = np.concatenate([copies, fresh])
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus; "
          f"{codes.size:,} hashes, {queries.size:,} queries")
    t0 = time.perf_counter()
    index = HashIndex(codes)
    print(f"build: {time.perf_counter() - t0:.2f} s")
    sample = queries[: args.brute // 2].tolist() + queries[-(args.brute // 2):].tolist()
    sample_arr = np.asarray(sample, dtype=np.uint64)
    t0 = time.perf_counter()
    ref3 = brute(codes, sample_arr, 3)
    brute_qps = len(sample) / (time.perf_counter() - t0)
    print(f"brute force (anchor): {brute_qps:,.0f} queries/s")
    for radius in (3, 6):
        index.query(queries[:1000], radius)  # warm up
        t0 = time.perf_counter()
        qi, _ii, _ = index.query(queries, radius, max_hits=64)
        dt = time.perf_counter() - t0
        qps = queries.size / dt
        sq, si, _ = index.query(sample_arr, radius)
        ok = set(zip(sq.tolist(), si.tolist(), strict=True)) == (ref3 if radius == 3 else brute(codes, sample_arr, 6))
        found = np.unique(qi[qi < picks.size]).size / picks.size
        print(f"radius {radius}: {qps:,.0f} queries/s ({qps / brute_qps:,.0f}x brute force); {qi.size:,} hits; "
              f"copies found {found:.3f}; same neighbours as brute force on {len(sample)} queries: {ok}")


if __name__ == "__main__":
    main()
