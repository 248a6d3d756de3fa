"""Sliding-window inference of a demo model on a 512×512×600 volume: peak memory and throughput (CPU).

    python benchmarks/pseudolabel_infer.py [--shape 512 512 600] [--model demo_unet] [--overlap 0.25] [--blend float16]

The volume is a Zarr array (64³ chunks, int16 HU, as a case store holds it) filled with
tiled demo phantoms on the model's 5 mm grid (so no resampling happens and every voxel
is inferred). Measured in one run: wall time, voxels/s and mm³/s, and the process's peak
resident memory (``ru_maxrss``) against the anchor the issue names: one full-resolution
float32 C×D×H×W copy per model (what a non-streaming ensemble would hold), and the 4 GB
limit.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.pseudolabel.core import AttentionParams
from curator.pseudolabel.infer import infer_case
from curator.pseudolabel.loading import load_model
from curator.pseudolabel.models import load_ensemble_file
from curator.pseudolabel.reader import SlabReader
from curator.testing.phantoms import Subject, grid, render


def build_volume(path: Path, shape: tuple[int, int, int]) -> zarr.Array:
    arr = zarr.create_array(str(path), shape=shape, dtype="int16", chunks=(64, 64, 64), fill_value=0)
    tile_shape = (72, 56, 60)
    g = grid(tile_shape, (5.0, 5.0, 5.0), "RAS", center=(0.0, -10.0, 20.0))
    tiles = [np.rint(render(Subject.random(s), g, "CT", seed=s)[0]).astype(np.int16) for s in range(4)]
    for z in range(0, shape[2], tile_shape[2]):
        slab = np.zeros((shape[0], shape[1], min(tile_shape[2], shape[2] - z)), np.int16)
        for i, x in enumerate(range(0, shape[0], tile_shape[0])):
            for j, y in enumerate(range(0, shape[1], tile_shape[1])):
                t = tiles[(i + j + z) % 4]
                slab[x:x + tile_shape[0], y:y + tile_shape[1]] = t[: shape[0] - x, : shape[1] - y, : slab.shape[2]]
        arr[:, :, z:z + slab.shape[2]] = slab
    return arr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 600])
    ap.add_argument("--model", default="demo_unet", help="a demo model, or `demo` for the three-model ensemble")
    ap.add_argument("--patch", type=int, nargs=3, default=[96, 96, 96])
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blend", choices=["float32", "float16"], default="float32",
                    help="dtype of the blending buffers (stages.pseudolabel.blend)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    specs = load_ensemble_file("demo")
    if args.model != "demo":  # one member; "demo" = the whole three-model ensemble
        specs = [s for s in specs if s.name == args.model]
    spec = specs[0]
    models = [load_model(s, "cpu") for s in specs]
    with tempfile.TemporaryDirectory() as tmp:
        arr = build_volume(Path(tmp) / "image.zarr", shape)  # type: ignore[arg-type]
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reader = SlabReader(arr, {}, dict(spec.intensity), (5.0, 5.0, 5.0), tuple(spec.spacing_mm or (5.0,) * 3))
        t0 = time.perf_counter()
        res = infer_case(reader, models, list(spec.terms), patch=tuple(args.patch), params=AttentionParams(),
                         overlap=args.overlap, batch=args.batch, amp=False, orientation="RAS", blend=args.blend)
        secs = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = int(np.prod(shape))
    full_copy_mb = len(spec.terms) * n * 4 / 2**20  # per model
    out = {"shape": list(shape), "spacing_mm": list(spec.spacing_mm or ()), "model": args.model, "n_models": len(models),
           "blend": args.blend, "patch": args.patch, "overlap": args.overlap, "batch": args.batch, "threads": args.threads,
           "seconds": round(secs, 1), "voxels_per_s": round(n / secs), "mm3_per_s": round(n * 125.0 / secs),
           "peak_rss_mb": round(peak_mb), "rss_before_inference_mb": round(rss0),
           "anchor_full_float32_copy_per_model_mb": round(full_copy_mb),
           "peak_vs_anchor": round(peak_mb / (full_copy_mb * len(models)), 3), "under_4_gb": peak_mb < 4096,
           "pseudo_voxels": {t: res.voxels(t) for t in res.targets},
           "attention_voxels": {t: s.attention_voxels for t, s in res.summaries.items()}, "torch": torch.__version__}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
