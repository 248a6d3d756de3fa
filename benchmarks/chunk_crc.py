"""Benchmark: what checking each chunk's CRC32C costs a patch read.

Writes one image twice with curator's store writer — inner codecs ``bytes, blosc, crc32c``
(curator's stores since 2026-12-06) and ``bytes, blosc`` (before: the anchor) — and reads the
same random boxes from both with :class:`ShardReader`, warm (page cache) and interleaved, so
load on the machine hits both alike. Two images: a smooth phantom that compresses well and the
same with per-voxel noise (σ = 15, like CT), whose chunks stay large (the check reads every
byte of a chunk; decoding dominates otherwise). Also times the whole-store chunk check the
release runs (``store_damage(..., chunks=True)``) against the SHA-256 ``curator verify`` takes.

Run:  python benchmarks/chunk_crc.py [--shape 512 512 227] [-n 60] [--reps 5]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.patch_read import boxes
from curator.store import INNER_CHUNKS, codec_for
from curator.store_reader import ShardReader, store_damage, write_sharded


def write(root: Path, data: np.ndarray, crc: bool) -> Path:
    from zarr.codecs import Crc32cCodec

    g = zarr.open_group(str(root), mode="w")
    codecs = (codec_for(data.dtype), Crc32cCodec()) if crc else codec_for(data.dtype)
    g.create_array("image", shape=data.shape, dtype=data.dtype, chunks=INNER_CHUNKS, shards=(256, 256, 256),
                   compressors=codecs, fill_value=0)
    write_sharded(root / "image", data)
    return root / "image"


def phantom(shape: tuple[int, ...], noise: float, seed: int = 0) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    body = (x**2 / 0.8 + y**2 / 0.6) < 1
    img = np.where(body, 40 + 60 * np.sin(6 * x) * np.cos(4 * y) + 30 * z, -1000).astype(np.float32)
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, shape).astype(np.float32)
    return img.astype(np.int16)


def best_times(readers: dict[str, ShardReader], bxs: list[tuple[slice, ...]], reps: int) -> dict[str, list[float]]:
    """Per box, the best of ``reps`` reads by each reader, the readers alternated read by read."""
    out: dict[str, list[float]] = {k: [] for k in readers}
    for b in bxs:
        for r in readers.values():
            r.read(b)  # warm
        for name, r in readers.items():
            best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                r.read(b)
                best = min(best, time.perf_counter() - t)
            out[name].append(best)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 227])
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    shape = tuple(a.shape)
    import google_crc32c
    import numcodecs

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, zarr {zarr.__version__}, numcodecs "
          f"{numcodecs.__version__}, google-crc32c implementation {google_crc32c.implementation}")
    print("| image | stored MB | box | p50 ms unchecked | p50 ms checked | checked / unchecked (median of per-box ratios) |")
    print("|---|---|---|---|---|---|")
    whole = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, noise in (("smooth phantom", 0.0), ("phantom + noise σ 15", 15.0)):
            data = phantom(shape, noise)
            old = write(Path(tmp) / f"old{noise}.zarr", data, crc=False)
            new = write(Path(tmp) / f"new{noise}.zarr", data, crc=True)
            mb = sum(p.stat().st_size for p in new.rglob("*") if p.is_file()) / 1e6
            readers = {"old": ShardReader(old), "new": ShardReader(new)}
            assert readers["new"].crc and not readers["old"].crc
            for size in (128, 205):
                bxs = boxes(shape, size, a.n, seed=size)
                t = best_times(readers, bxs, a.reps)
                ratio = float(np.median(np.array(t["new"]) / np.array(t["old"])))
                print(f"| {label} | {mb:.1f} | {size}³ | {np.median(t['old']) * 1e3:.1f} | "
                      f"{np.median(t['new']) * 1e3:.1f} | {ratio:.3f} |")
            files = sorted(p for p in new.rglob("*") if p.is_file())
            tc = min(_timed(store_damage, new.parent, chunks=True) for _ in range(a.reps))
            ts = min(_timed(_sha256_all, files) for _ in range(a.reps))
            whole.append((label, mb, tc, ts))
    print("\n| image | stored MB | whole-store chunk check s | SHA-256 of the files s | check / SHA-256 |")
    print("|---|---|---|---|---|")
    for label, mb, tc, ts in whole:
        print(f"| {label} | {mb:.1f} | {tc:.3f} | {ts:.3f} | {tc / ts:.2f} |")


def _sha256_all(files: list[Path]) -> list[bytes]:
    return [hashlib.sha256(f.read_bytes()).digest() for f in files]


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
