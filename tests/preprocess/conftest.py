"""A tiny collection run once per session: ingest → preprocess → release, shared by the
stage, release, loader and export tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from curator.config import PipelineConfig
from curator.io.volume import Geometry
from curator.pipeline import run_pipeline
from curator.testing.layouts import save_nifti, write_kits_case, write_totalseg_case
from curator.testing.phantoms import Subject, grid, remap, render, structure_masks

SPACING = (4.0, 4.0, 5.0)
KITS_YAML = """\
name: TinyKits
version: "1"
modality: CT
region: abdomen
licence: CC-BY-4.0
citation: "@misc{tiny}"
layout:
  - image: "dataset/{case}/imaging.nii.gz"
    label: "dataset/{case}/segmentation.nii.gz"
patterns: {case: "case_\\\\d{5}"}
fixes: {intensity_offset: {value: -1024}}
labels:
  encoding: label_map
  values: {1: kidney, 2: kidney tumor, 3: kidney cyst}
"""
TS_YAML = """\
name: TinyTotalSeg
version: "1"
modality: CT
region: abdomen
licence: CC-BY-4.0
citation: "@misc{tiny}"
layout:
  - image: "{case}/ct.nii.gz"
    label: "{case}/segmentations/{structure}.nii.gz"
patterns: {case: "s\\\\d{4}"}
labels:
  encoding: per_structure
  structures: {liver: liver, spleen: spleen, kidney_left: left kidney, kidney_right: right kidney,
               kidneys: kidney}
"""
MULTISEQ_YAML = """\
name: TinyBrats
version: "1"
modality: MR
sequences: {t1c: MR, t2f: MR}
region: abdomen
licence: CC-BY-4.0
citation: "@misc{tiny}"
layout:
  - image: "{case}/{case}-{sequence}.nii.gz"
    label: "{case}/{case}-seg.nii.gz"
patterns: {case: "study\\\\d"}
labels:
  encoding: label_map
  values: {1: kidney, 2: kidney tumor}
"""


@dataclass
class Tiny:
    root: Path
    release: Path
    workspace: Path
    phantoms: dict[str, tuple[object, object]]  # case id -> (geometry, full label map)


def off(*stages: str) -> dict[str, dict[str, bool]]:
    """``stages:`` settings that disable ``stages`` (a test pipeline that runs only some)."""
    return {name: {"enabled": False} for name in stages}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny")
    phantoms = {}
    for i in range(3):
        g = grid((40, 32, 20), (8.0, 8.0, 10.0), "IPL"[::-1] if i == 0 else "LPS", center=(0.0, -10.0, 20.0))
        img, lab = render(Subject.random(40 + i), g, "CT", seed=i)
        seg = remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2, "kidney_cyst": 3})
        write_kits_case(root / "kits", f"case_{i:05d}", (np.rint(img) + 1024).astype(np.int16), seg, g)
        phantoms[f"TinyKits__case_{i:05d}"] = (g, lab)
    for i in range(2):
        s = Subject.random(50 + i)
        g = grid((40, 32, 20), (8.0, 8.0, 10.0), "RAS", center=(0.0, -10.0, 20.0))
        img, lab = render(s, g, "CT", seed=10 + i)
        m = structure_masks(s, g)
        masks = {k: m[k] for k in ("liver", "spleen", "kidney_left", "kidney_right")}
        masks["kidneys"] = m["kidney_left"] | m["kidney_right"]
        write_totalseg_case(root / "ts", f"s{i:04d}", np.rint(img).astype(np.int16), masks, g)
        phantoms[f"TinyTotalSeg__s{i:04d}"] = (g, lab)
    release = _ingest_and_preprocess(root, {"kits": KITS_YAML, "ts": TS_YAML}, "tiny")
    return Tiny(root, release, root / "ws", phantoms)


def _ingest_and_preprocess(root: Path, datasets: dict[str, str], collection: str,
                           preprocess: dict[str, object] | None = None) -> Path:
    """Run ingest and preprocess over ``root/<name>`` with each dataset YAML of ``datasets``
    (name -> text) on the tests' grid (``preprocess``: more settings); the release's path."""
    for name, text in datasets.items():
        (root / f"{name}.yaml").write_text(text)
    cfg = {"workspace": "ws", "registry": [str(root / f"{name}.yaml") for name in datasets],
           "sources": [{"dataset": str(root / f"{name}.yaml"), "root": str(root / name)} for name in datasets],
           "stages": {"preprocess": {"target_spacing_mm": list(SPACING), **(preprocess or {})},
                      **off("dedup", "harmonize", "pseudolabel", "qc")},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": "releases", "collection": collection, "version": "0.1.0"}}
    (root / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    result = run_pipeline(PipelineConfig.load(root / "pipeline.yaml"), stages=["ingest", "preprocess"])
    assert result.release is not None
    return result.release


@dataclass
class MultiSeq:
    root: Path
    release: Path
    images: dict[str, tuple[object, object]]  # case id -> (geometry, image as written)


@pytest.fixture(scope="session")
def multiseq(tmp_path_factory: pytest.TempPathFactory) -> MultiSeq:
    """A BraTS-like multi-sequence MR collection: studies 0-2 with t1c and t2f on one grid (one case
    per sequence, linked by study_key), study 2 without its t2f; study 0's t2f has its first 12 rows
    zeroed, so its body crop (hence its store grid) differs from its t1c's."""
    root = tmp_path_factory.mktemp("multiseq")
    images = {}
    for i in range(3):
        g = grid((40, 32, 20), (8.0, 8.0, 10.0), "LPS", center=(0.0, -10.0, 20.0))
        s = Subject.random(60 + i)
        t1c, lab = render(s, g, "MR", seed=20 + i)
        t2f, _ = render(s, g, "MR", seed=30 + i)
        t2f = np.float32(2.0) * t2f.max() - t2f  # another contrast: bright where t1c is dark (body only)
        t2f[t1c == 0] = 0
        if i == 0:
            t2f[:12] = 0
        seg = remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2})
        case = f"study{i}"
        save_nifti(root / "brats" / case / f"{case}-seg.nii.gz", seg.astype(np.uint8), g)
        for seq, img in (("t1c", t1c), ("t2f", t2f)):
            if i == 2 and seq == "t2f":
                continue
            save_nifti(root / "brats" / case / f"{case}-{seq}.nii.gz", np.rint(img).astype(np.int16), g)
            images[f"TinyBrats__{case}__{seq}"] = (g, np.rint(img).astype(np.int16))
    return MultiSeq(root, _ingest_and_preprocess(root, {"brats": MULTISEQ_YAML}, "multiseq"), images)


@pytest.fixture(scope="session")
def label_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release of KiTS-layout cases with only their segmentation files (KiTS23's labels
    downloaded without the imaging): every case label-only (``has_image`` false)."""
    root = tmp_path_factory.mktemp("label-only")
    for i in range(2):
        g = grid((40, 32, 20), (8.0, 8.0, 10.0), "LPS", center=(0.0, -10.0, 20.0))
        _, lab = render(Subject.random(70 + i), g, "CT", seed=40 + i)
        seg = remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2, "kidney_cyst": 3})
        write_kits_case(root / "kits", f"case_{i:05d}", None, seg, g)
    return _ingest_and_preprocess(root, {"kits": KITS_YAML}, "labelonly")


ORIENTED_SPACING = (5.0, 7.0, 8.0)  # per array axis, whatever the orientation
ORIENTED_TARGET = [2.0, 3.0, 3.5]  # finer along every axis: ratios 0.4, 3/7, 0.4375 (and permuted for IPL)


def oblique(g: Geometry, degrees: tuple[float, float, float]) -> Geometry:
    """``g`` rotated about its centre by ``degrees`` about x, y and z."""
    rx, ry, rz = np.radians(degrees)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
         @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    m = g.matrix.copy()
    centre = m[:3, :3] @ ((np.asarray(g.shape) - 1) / 2) + m[:3, 3]
    m[:3, :3] = r @ m[:3, :3]
    m[:3, 3] = centre - m[:3, :3] @ ((np.asarray(g.shape) - 1) / 2)
    return Geometry.from_affine(g.shape, m)


@dataclass
class Oriented:
    root: Path
    release: Path
    sources: dict[str, tuple[Geometry, np.ndarray]]  # case id -> (grid, segmentation as written)


@pytest.fixture(scope="session")
def oriented(tmp_path_factory: pytest.TempPathFactory) -> Oriented:
    """KiTS-layout cases on anisotropic grids in LPS, RAS, IPL and oblique, resampled finer along
    every axis (at non-integer ratios): exports whose grid loses nothing of the source's."""
    root = tmp_path_factory.mktemp("oriented")
    grids = {"lps": grid((64, 40, 24), ORIENTED_SPACING, "LPS", center=(0.0, -10.0, 20.0)),
             "ras": grid((64, 40, 24), ORIENTED_SPACING, "RAS", center=(3.0, -7.0, 11.0)),
             "ipl": grid((24, 40, 64), ORIENTED_SPACING[::-1], "IPL", center=(0.0, -10.0, 20.0)),
             "obl": oblique(grid((64, 40, 24), ORIENTED_SPACING, "LPS", center=(1.0, -12.0, 18.0)), (5.0, -3.0, 11.0))}
    sources = {}
    for i, (name, g) in enumerate(grids.items()):
        img, lab = render(Subject.random(80 + i), g, "CT", seed=60 + i)
        seg = remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2, "kidney_cyst": 3}).astype(np.uint8)
        assert all((seg == v).any() for v in (1, 2, 3)), name  # every label is there to be mapped back
        write_kits_case(root / "kits", f"case_{i:05d}", (np.rint(img) + 1024).astype(np.int16), seg, g)
        sources[f"TinyKits__case_{i:05d}"] = (g, seg)
    release = _ingest_and_preprocess(root, {"kits": KITS_YAML}, "oriented", {"target_spacing_mm": ORIENTED_TARGET})
    return Oriented(root, release, sources)
