"""Benchmark (b): random 128³ and 205³ patch reads, p50/p95, warm and cold.

Anchors, measured in the same run on the same case: nnU-Net v2's ``.b2nd`` of that case
(its own preprocessing output from ``benchmarks/preprocess.py``: float32, LZ4HC, read as
nnU-Net does — ``blosc2.open(mmap_mode="r")`` then slicing, one thread) and loading the
store's image from ``.nii.gz`` and cropping. Also shown: the same store read through plain
zarr-python and tensorstore, and other store layouts (the inner chunk/codec choice).
Cold reads evict the files from the page cache (``posix_fadvise``) and reopen before each read.

Run (after benchmarks/preprocess.py):  python benchmarks/patch_read.py [-n 200 --reps 3] [--case kits_00008]
It reads nnU-Net's ``.b2nd`` with python-blosc2, which curator does not depend on: ``pip install blosc2``
in curator's environment first (BENCHMARKS.md used 4.14.1).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_cases import drop_cache
from curator.store import CaseStore
from curator.store_reader import ShardReader

Reader = Callable[[tuple[slice, ...]], object]


def boxes(shape: tuple[int, ...], size: int, n: int, seed: int) -> list[tuple[slice, ...]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = [int(rng.integers(0, max(1, s - size + 1))) for s in shape]
        out.append(tuple(slice(a, min(a + size, s)) for a, s in zip(start, shape, strict=True)))
    return out


def timeit(open_reader: Callable[[], Reader], bxs: list[tuple[slice, ...]], files: list[Path],
           cold: bool) -> tuple[float, float]:
    q = np.percentile(read_times(open_reader, bxs, files, cold), [50, 95])
    return float(q[0]) * 1000, float(q[1]) * 1000


def read_times(open_reader: Callable[[], Reader], bxs: list[tuple[slice, ...]], files: list[Path],
               cold: bool) -> list[float]:
    times = []
    reader = open_reader()
    if not cold:
        for b in bxs[:3]:
            reader(b)
    for b in bxs:
        if cold:
            drop_cache(files)
            reader = open_reader()
        t = time.perf_counter()
        reader(b)
        times.append(time.perf_counter() - t)
    return times


def interleaved(readers: dict[str, tuple[Callable[[], Reader], list[tuple[slice, ...]], list[Path]]],
                reps: int, cold: bool) -> tuple[dict[str, tuple[float, float]], list[float]]:
    """Each reader over its boxes, ``reps`` rounds taking turns (same machine load for all);
    pooled p50/p95 per reader and each round's p50 ratio of the second reader to the first."""
    times: dict[str, list[float]] = {k: [] for k in readers}
    ratios = []
    for _ in range(reps):
        p50 = {}
        for name, (open_reader, bxs, files) in readers.items():
            t = read_times(open_reader, bxs, files, cold)
            times[name] += t
            p50[name] = float(np.median(t))
        first, second = list(p50)[:2]
        ratios.append(p50[second] / p50[first])
    pooled = {k: (float(np.percentile(v, 50)) * 1000, float(np.percentile(v, 95)) * 1000) for k, v in times.items()}
    return pooled, ratios


def store_variant(src: CaseStore, work: Path, chunks: tuple[int, ...], cname: str, sharded: bool) -> Path:
    """The same image re-written with another inner chunk / codec / sharding."""
    name = f"v_{'x'.join(map(str, chunks))}_{cname}_{'shard' if sharded else 'plain'}"
    path = work / name
    if not path.exists():
        img = src.read("image")
        g = zarr.open_group(str(path), mode="w")
        a = g.create_array("image", shape=img.shape, dtype=img.dtype, chunks=chunks,
                           shards=(256, 256, 256) if sharded else None, fill_value=0,
                           compressors=zarr.codecs.BloscCodec(cname=cname, clevel=1, shuffle="shuffle"))
        a[...] = img
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/curator-bench")
    ap.add_argument("--case", default="kits_00008")
    ap.add_argument("-n", type=int, default=40, help="reads per measurement")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds of nnU-Net vs curator reads")
    a = ap.parse_args()
    try:
        import blosc2
    except ImportError:
        raise SystemExit("patch_read.py reads nnU-Net's .b2nd with blosc2, which curator does not install: "
                         "`pip install blosc2` in this environment (BENCHMARKS.md used 4.14.1)") from None

    blosc2.set_nthreads(1)
    work = Path(a.work)
    store_path = work / f"ws_{a.case}" / "stores" / f"{a.case}.zarr"
    b2nd = work / "nnunet_out" / f"{a.case}.b2nd"
    if not b2nd.exists():
        raise SystemExit(f"{b2nd} is missing: run benchmarks/preprocess.py --work {work} --cases {a.case} first")
    store = CaseStore(store_path)
    img = store.read("image")
    nii = work / "patch_read" / f"{a.case}.nii.gz"
    nii.parent.mkdir(parents=True, exist_ok=True)
    if not nii.exists():
        nib.save(nib.Nifti1Image(img, store.geometry.matrix), str(nii))
    nn_shape = blosc2.open(str(b2nd), mode="r", mmap_mode="r").shape
    print(f"case {a.case}: store {img.shape} {img.dtype}; nnU-Net .b2nd {nn_shape} float32")

    def nn_reader() -> Reader:
        arr = blosc2.open(str(b2nd), mode="r", mmap_mode="r", dparams={"nthreads": 1})
        return lambda b: np.asarray(arr[(slice(0, 1), *b)])

    def cu_reader(path: Path = store_path) -> Callable[[], Reader]:
        return lambda: CaseStore(path).reader("image").read

    def zarr_reader(path: Path = store_path) -> Callable[[], Reader]:
        def open_() -> Reader:
            arr = zarr.open_array(str(path / "image"), mode="r")
            return lambda b: arr[b]

        return open_

    def shard_reader(path: Path) -> Callable[[], Reader]:
        return lambda: ShardReader(path / "image").read

    def ts_reader() -> Reader:
        import tensorstore as ts

        arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store_path / "image")}}).result()
        return lambda b: arr[b].read().result()

    def nii_reader() -> Reader:
        return lambda b: np.asarray(nib.load(str(nii)).dataobj[b])

    variants = {f"curator {c[0]}³ {cn} " + ("sharded (fast reader)" if sh else "unsharded (zarr-python)"):
                store_variant(store, work / "patch_read", c, cn, sh)
                for c, cn, sh in [((32, 32, 32), "lz4", True), ((32, 32, 32), "zstd", True),
                                  ((64, 64, 64), "zstd", True), ((64, 64, 64), "lz4", False)]}
    rows = []
    for size in (128, 205):
        bx = boxes(img.shape, size, a.n, seed=size)
        bx_nn = boxes(nn_shape[1:], size, a.n, seed=size)
        for cold in (False, True):
            res, ratios = interleaved({"nnU-Net .b2nd (blosc2)": (nn_reader, bx_nn, [b2nd]),
                                       "curator store (fast reader)": (cu_reader(), bx, [store_path])}, a.reps, cold)
            res["curator store via zarr-python"] = timeit(zarr_reader(), bx, [store_path], cold)
            try:
                res["curator store via tensorstore"] = timeit(ts_reader, bx, [store_path], cold)
            except ImportError:
                pass
            for name, path in variants.items():
                res[name] = timeit(shard_reader(path), bx, [path], cold)
            res[".nii.gz load + crop"] = timeit(nii_reader, bx[: max(3, a.n // 8)], [nii], cold)
            for name, (p50, p95) in res.items():
                rows.append((size, "cold" if cold else "warm", name, p50, p95))
            anchor = res["nnU-Net .b2nd (blosc2)"][0]
            ours = res["curator store (fast reader)"][0]
            print(f"{size}³ {'cold' if cold else 'warm'}: curator p50 {ours:.1f} ms, .b2nd {anchor:.1f} ms "
                  f"-> {ours / anchor:.2f}x of .b2nd (per round: {', '.join(f'{r:.2f}' for r in ratios)}); .nii.gz {res['.nii.gz load + crop'][0]:.0f} ms "
                  f"-> {res['.nii.gz load + crop'][0] / ours:.0f}x faster than .nii.gz", flush=True)
    print("\n| patch | cache | reader | p50 ms | p95 ms |\n|---|---|---|---|---|")
    for size, cache, name, p50, p95 in rows:
        print(f"| {size}³ | {cache} | {name} | {p50:.1f} | {p95:.1f} |")
    sizes = {"curator store (image)": sum(f.stat().st_size for f in (store_path / "image").rglob("*") if f.is_file()),
             "nnU-Net .b2nd (data)": b2nd.stat().st_size}
    print("\n" + "; ".join(f"{k}: {v / 1e6:.1f} MB" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
