"""Benchmark (c): DataLoader patches/s with 2 workers — curator's PatchDataset vs nnU-Net v2's
``nnUNetDataLoader`` (no augmentation, its ``NonDetMultiThreadedAugmenter`` with 2 processes).

Same cases (``bench_cases.py`` without ``big``), same patch size (128³), batch size 2, the same
foreground oversampling (0.33, nnU-Net's default). curator reads a release built by the real
pipeline (ingest → harmonize → preprocess → release); nnU-Net reads its own preprocessed ``.b2nd`` from
``benchmarks/preprocess.py``.

Run (after benchmarks/preprocess.py):  python benchmarks/dataloader.py --nnunet-python /work/venv-nnunet/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_cases import DATASET, build

PATCH, BATCH, WORKERS, FG = 128, 2, 2, 0.33
# label values loaded as the six masks (TotalSegmentator v2's first values; KiTS's 1-3 share them)
NAMES = {1: "spleen", 2: "right kidney", 3: "left kidney", 5: "liver", 6: "stomach", 7: "pancreas"}

NNUNET = r"""
import json, sys, time, os
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
folder, plans, raw, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ids = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".b2nd") and not f.endswith("_seg.b2nd") and f != "big.b2nd")
lm = PlansManager(plans).get_label_manager(load_json(raw + "/dataset.json"))
ds = nnUNetDatasetBlosc2(folder, ids)
dl = nnUNetDataLoader(ds, %d, (%d,) * 3, (%d,) * 3, lm, oversample_foreground_percent=%f, transforms=None)
mt = NonDetMultiThreadedAugmenter(dl, None, %d, 6, None, pin_memory=False, wait_time=0.002)
for _ in range(3): next(mt)
t = time.perf_counter()
for _ in range(n): b = next(mt)
print(json.dumps({"patches_per_s": n * %d / (time.perf_counter() - t), "shape": list(b["data"].shape),
                  "cases": ids}))
mt._finish()
""" % (BATCH, PATCH, PATCH, FG, WORKERS, BATCH)  # noqa: UP031 - the code holds braces


def curator_release(work: Path) -> Path:
    """ingest → harmonize → preprocess → release over the benchmark cases (``big`` excluded)."""
    rel = work / "pipeline" / "releases" / "bench" / "0.1.0"
    if rel.exists():
        return rel
    from curator.config import PipelineConfig
    from curator.pipeline import run_pipeline

    raw = build(work / "raw")
    spec = yaml.safe_load((work / "raw" / "bench.yaml").read_text())
    spec["exclude"] = ["._*", ".*", "big*"]
    # the six loaded values under taxonomy names (harmonize maps them to terms; the rest stay unmapped)
    spec["labels"]["values"].update(NAMES)
    (work / "pipeline").mkdir(parents=True, exist_ok=True)
    (work / "pipeline" / "bench.yaml").write_text(yaml.safe_dump(spec))
    cfg = {"workspace": "ws", "sources": [{"dataset": str(work / "pipeline" / "bench.yaml"), "root": str(raw)}],
           "executor": {"kind": "local", "workers": 2, "progress": False},
           # the stages a loader needs (the others disabled: a release refuses tables left out of date)
           "stages": {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")},
           "release": {"root": "releases", "collection": "bench", "version": "0.1.0"}}
    (work / "pipeline" / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(work / "pipeline" / "pipeline.yaml"))
    return rel


def curator_rate(release: Path, n: int) -> float:
    import torch

    from curator.torch import PatchDataset

    terms = ["spleen", "kidney_right", "kidney_left", "liver", "stomach", "pancreas"]
    ds = PatchDataset(release, terms=terms, patch_size=(PATCH,) * 3, foreground_fraction=FG,
                      samples_per_epoch=(n + 8) * BATCH, balance=False, repeat=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS, prefetch_factor=3)
    it = iter(loader)
    for _ in range(3):
        next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * BATCH / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnunet-python", required=True)
    ap.add_argument("--work", default="/tmp/curator-bench")
    ap.add_argument("-n", type=int, default=40, help="batches to time")
    a = ap.parse_args()
    work = Path(a.work)
    rel = curator_release(work)
    plans = work / "nnunet_pre" / DATASET / "nnUNetPlans.json"
    res = subprocess.run([a.nnunet_python, "-c", NNUNET, str(work / "nnunet_out"), str(plans),
                          str(work / "raw" / DATASET), str(a.n)], check=False, capture_output=True, text=True,
                         env=dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work),
                                  nnUNet_results=str(work)))
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    nn = json.loads(res.stdout.strip().splitlines()[-1])
    from curator.release.query import Release

    mine = sorted(c.split("__", 1)[-1] for c in Release(rel).table("cases")["case_id"].to_list())
    if nn["cases"] != mine:  # the two loaders must draw from the same cases, or the ratio means nothing
        raise SystemExit(f"the two sides hold different cases: nnU-Net's {work / 'nnunet_out'} has "
                         f"{len(nn['cases'])} ({', '.join(nn['cases']) or 'none'}), curator's release {len(mine)} "
                         f"({', '.join(mine)}); run benchmarks/preprocess.py --work {work} --cases "
                         f"{' '.join(mine)} (its other outputs are kept) and remove any other case's .b2nd")
    print(f"cases on both sides ({len(mine)}): {', '.join(mine)}")
    cu = curator_rate(rel, a.n)
    print(f"nnU-Net nnUNetDataLoader (no augmentation, 2 processes): {nn['patches_per_s']:.1f} patches/s "
          f"(batch {nn['shape']})")
    print(f"curator PatchDataset (torch DataLoader, 2 workers, normalised + masks): {cu:.1f} patches/s")
    print(f"ratio curator / nnU-Net: {cu / nn['patches_per_s']:.2f}x")


if __name__ == "__main__":
    main()
