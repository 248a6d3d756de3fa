"""Benchmark inputs shared by the preprocess benchmarks: one nnU-Net v2 raw dataset that both
curator and nnU-Net read.

Cases (all written RAS-canonical so nnU-Net's (z, y, x) arrays line up with curator's axes):
* ``ts_ct``, ``ts_mr``: the real TotalSegmentator CT and MR samples with their labels;
* ``kits_XXXXX``: CT-like images built on the real KiTS23 label grids (512 × 512 × N, the real
  labels; soft tissue / kidney / tumour / cyst intensities + noise inside a body ellipse);
* ``big`` (``--big``): a 512 × 512 × 1000 CT at 0.8 × 0.8 × 1 mm for the memory bound.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

REAL = Path(os.environ.get("CURATOR_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
if not REAL.is_dir():
    REAL = Path("/work/shared/data/real")
KITS = ("case_00008", "case_00018", "case_00031")
DATASET = "Dataset990_CuratorBench"
YAML = """\
name: CuratorBench
version: "1"
modality: CT
region: abdomen
licence: CC-BY-4.0
citation: "@misc{bench}"
layout:
  - image: "imagesTr/{case}_0000.nii.gz"
    label: "labelsTr/{case}.nii.gz"
labels:
  encoding: label_map
  values: {%s}
"""


def drop_cache(paths: list[Path]) -> None:
    """Evict files from the page cache (posix_fadvise DONTNEED) so the next read is cold."""
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_sform(affine, 1)
    img.header.set_qform(affine, 1)
    nib.save(img, str(path))


def _ct_from_labels(seg: np.ndarray, zooms: tuple[float, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (np.arange(seg.shape[0]) - seg.shape[0] / 2)[:, None] * zooms[0]
    y = (np.arange(seg.shape[1]) - seg.shape[1] / 2)[None, :] * zooms[1]
    body2d = (x / 170.0) ** 2 + (y / 130.0) ** 2 <= 1.0
    img = np.full(seg.shape, -1000, np.int16)
    img[body2d] = 40
    for code, hu in ((1, 160), (2, 85), (3, 8)):
        img[seg == code] = hu
    noise = rng.normal(0, 15, size=seg.shape[:2]).astype(np.int16)
    img[body2d] += noise[body2d][:, None]
    return img


def build(out: Path, big: bool = False) -> Path:
    """Write the raw dataset (idempotent) and return its folder."""
    folder = out / DATASET
    if (folder / "dataset.json").exists() and ((folder / "imagesTr" / "big_0000.nii.gz").exists() or not big):
        return folder
    cases = []
    for name, img_f, seg_f in (("ts_ct", "example_ct_sm", "example_seg"), ("ts_mr", "example_mr_sm", "example_seg_mr")):
        im = nib.as_closest_canonical(nib.load(REAL / "totalsegmentator" / f"{img_f}.nii.gz"))
        sg = nib.as_closest_canonical(nib.load(REAL / "totalsegmentator" / f"{seg_f}.nii.gz"))
        _save(folder / "imagesTr" / f"{name}_0000.nii.gz", np.asarray(im.dataobj).astype(np.int16), im.affine)
        _save(folder / "labelsTr" / f"{name}.nii.gz", np.asarray(sg.dataobj).astype(np.uint8), im.affine)
        cases.append(name)
    for i, c in enumerate(KITS):
        sg = nib.as_closest_canonical(nib.load(REAL / "kits23" / "dataset" / c / "segmentation.nii.gz"))
        seg = np.asarray(sg.dataobj).astype(np.uint8)
        img = _ct_from_labels(seg, sg.header.get_zooms(), i)
        _save(folder / "imagesTr" / f"kits_{c[-5:]}_0000.nii.gz", img, sg.affine)
        _save(folder / "labelsTr" / f"kits_{c[-5:]}.nii.gz", seg, sg.affine)
        cases.append(f"kits_{c[-5:]}")
    if big:
        sg = nib.as_closest_canonical(nib.load(REAL / "kits23" / "dataset" / KITS[0] / "segmentation.nii.gz"))
        small = np.asarray(sg.dataobj).astype(np.uint8)
        idx = np.minimum((np.arange(1000) * small.shape[2] / 1000).astype(int), small.shape[2] - 1)
        seg = np.ascontiguousarray(small[:, :, idx])
        aff = np.diag([0.8, 0.8, 1.0, 1.0])
        _save(folder / "imagesTr" / "big_0000.nii.gz", _ct_from_labels(seg, (0.8, 0.8, 1.0), 9), aff)
        _save(folder / "labelsTr" / "big.nii.gz", seg, aff)
        cases.append("big")
    values = ", ".join(f"{v}: label {v}" for v in range(1, 118))
    (out / "bench.yaml").write_text(YAML % values)
    ds = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{f"label_{v}": v for v in range(1, 118)}},
          "numTraining": len(cases), "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(ds, indent=1))
    return folder


def cases(folder: Path, big: bool = False) -> list[str]:
    names = sorted(p.name[: -len("_0000.nii.gz")] for p in (folder / "imagesTr").glob("*_0000.nii.gz"))
    return [n for n in names if big or n != "big"]
