"""The demo's synthetic downloads: four datasets in their native layouts, with planted
cross-dataset duplicates (the same scan re-cropped, offset, resampled, flipped, converted
to DICOM) and a few broken inputs."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from curator.io.volume import Geometry
from curator.testing.layouts import (
    PLANTED_PHI,
    save_nifti,
    write_dicom_series,
    write_kits_case,
    write_msd_task,
    write_totalseg_case,
)
from curator.testing.perturb import crop, flip_axis, resample_nearest
from curator.testing.phantoms import Subject, grid, remap, render, structure_masks

SHAPE = (72, 56, 36)
SPACING = (5.0, 5.0, 8.0)
TS_STRUCTURES = ["spleen", "kidney_right", "kidney_left", "liver", "pancreas", "aorta"]

DEMO_TOTALSEG_YAML = """\
name: DemoTotalSeg
version: "1.0"
title: Demo dataset in the TotalSegmentator layout (one mask file per structure)
modality: CT
region: abdomen
licence: CC-BY-4.0
citation_key: curatordemo
citation: |
  @misc{curatordemo, title={curator demo phantoms}, year={2026}}
layout:
  - image: "{case}/ct.nii.gz"
    label: "{case}/segmentations/{structure}.nii.gz"
patterns:
  case: "s\\\\d{4}"
labels:
  encoding: per_structure
  structures:
    spleen: spleen
    kidney_right: right kidney
    kidney_left: left kidney
    liver: liver
    pancreas: pancreas
    aorta: aorta
"""

DEMO_DICOM_YAML = """\
name: DemoPancreasDICOM
version: "1.0"
title: Demo dataset in the Pancreas-CT layout (DICOM series + NIfTI labels)
modality: CT
region: abdomen
licence: CC-BY-4.0
citation_key: curatordemo
citation: |
  @misc{curatordemo, title={curator demo phantoms}, year={2026}}
layout:
  - image: "PANCREAS_{case}/"
    label: "TCIA_pancreas_labels/label{case}.nii.gz"
    format: dicom
patterns:
  case: "\\\\d{4}"
labels:
  encoding: label_map
  values:
    1: pancreas
"""


@dataclass
class DemoData:
    root: Path
    sources: list[dict[str, Any]] = field(default_factory=list)
    registry: list[Path] = field(default_factory=list)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (case a, case b, how)
    broken: list[str] = field(default_factory=list)


def _scan(seed: int, orientation: str = "LPS", spacing: tuple[float, float, float] = SPACING,
          shape: tuple[int, int, int] = SHAPE, tumor: bool = True) -> tuple[Subject, Geometry,
                                                                             NDArray[Any], NDArray[Any]]:
    s = Subject.random(seed, tumor=tumor, cyst=tumor)
    g = grid(shape, spacing, orientation, center=(0.0, -10.0, 20.0))
    img, lab = render(s, g, "CT", seed=seed)
    return s, g, np.rint(img).astype(np.int16), lab


def build_demo_data(root: Path, seed: int = 7) -> DemoData:
    """Write the four synthetic downloads under ``root``; returns what was planted."""
    root.mkdir(parents=True, exist_ok=True)
    demo = DemoData(root)
    base = seed * 100

    # 1. MSD Task09 Spleen: dataset.json + imagesTr/labelsTr/imagesTs
    msd = root / "Task09_Spleen"
    train, test = [], []
    scans = {}
    for i in range(1, 6):
        _, g, img, lab = _scan(base + i, "LPS")
        scans[f"spleen_{i}"] = (g, img, lab)
        train.append((f"spleen_{i}", img, remap(lab, {"spleen": 1}), g))
    _, g, img, _ = _scan(base + 6, "LPS")
    test.append(("spleen_6", img, g))
    write_msd_task(msd, "Spleen", train, test, {"0": "background", "1": "spleen"}, {"0": "CT"})
    # broken: a case listed in dataset.json whose image download was cut short
    good = (msd / "imagesTr" / "spleen_5.nii.gz").read_bytes()
    (msd / "imagesTr" / "spleen_9.nii.gz").write_bytes(good[: len(good) // 3])
    (msd / "labelsTr" / "spleen_9.nii.gz").write_bytes((msd / "labelsTr" / "spleen_5.nii.gz").read_bytes())
    ds = json.loads((msd / "dataset.json").read_text())
    ds["training"].append({"image": "./imagesTr/spleen_9.nii.gz", "label": "./labelsTr/spleen_9.nii.gz"})
    (msd / "dataset.json").write_text(json.dumps(ds, indent=1))
    demo.broken.append("MSD_Spleen__spleen_9 (truncated gzip)")
    demo.sources.append({"dataset": "MSD_Spleen", "root": str(msd)})

    # 2. KiTS23: dataset/case_XXXXX/{imaging,segmentation}.nii.gz, slice axis first (IPL)
    kits = root / "kits23"
    meta = []
    kits_codes = {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2, "kidney_cyst": 3}
    for i in range(5):
        _, g, img, lab = _scan(base + 10 + i, "IPL", spacing=(8.0, 5.0, 5.0), shape=(36, 56, 72))
        case = f"case_{i:05d}"
        write_kits_case(kits, case, img, remap(lab, kits_codes), g)
        meta.append({"case_id": case, "gender": "female" if i % 2 else "male", "age_at_nephrectomy": 40 + 5 * i,
                     "body_mass_index": 22.5 + i, "tumor_histologic_subtype": "clear_cell_rcc"})
    # planted duplicate: MSD spleen_2's scan, re-cropped to the body, +1024 offset, as a KiTS case
    g, img, lab = scans["spleen_2"]
    g2, img2 = crop(g, img, (slice(6, 66), slice(4, 52), slice(0, 36)))
    _, lab2 = crop(g, lab, (slice(6, 66), slice(4, 52), slice(0, 36)))
    write_kits_case(kits, "case_00005", (img2.astype(np.int32) + 1024).astype(np.int32),
                    remap(lab2, kits_codes), g2)
    demo.duplicates.append(("MSD_Spleen__spleen_2", "KiTS23__case_00005", "re-cropped, +1024 offset"))
    meta.append({"case_id": "case_00005", "gender": "male", "age_at_nephrectomy": 61, "body_mass_index": 27.0})
    # broken: a segmentation on another grid
    _, g, img, lab = _scan(base + 16, "IPL", spacing=(8.0, 5.0, 5.0), shape=(36, 56, 72))
    write_kits_case(kits, "case_00006", None, remap(lab, kits_codes)[:, :50, :].copy(), crop(
        g, lab, (slice(0, 36), slice(0, 50), slice(0, 72)))[0])
    save_nifti(kits / "dataset" / "case_00006" / "imaging.nii.gz", img, g, np.int16)
    demo.broken.append("KiTS23__case_00006 (label shape differs from image)")
    (kits / "dataset" / "kits23.json").write_text(json.dumps(meta, indent=1))
    demo.sources.append({"dataset": "KiTS23", "root": str(kits)})

    # 3. TotalSegmentator layout: sNNNN/ct.nii.gz + segmentations/<structure>.nii.gz
    ts = root / "TotalSegmentator"
    for i in range(4):
        s, g, img, _ = _scan(base + 20 + i, "RAS", tumor=False)
        masks = structure_masks(s, g)
        write_totalseg_case(ts, f"s{i:04d}", img, {n: masks[n] for n in TS_STRUCTURES}, g)
    # planted duplicate: KiTS case_00001's scan resampled to 4 mm in-plane and flipped left-right
    s = Subject.random(base + 11)
    _, g, img, lab = _scan(base + 11, "IPL", spacing=(8.0, 5.0, 5.0), shape=(36, 56, 72))
    g3, img3 = resample_nearest(g, img, (8.0, 4.0, 4.0))
    g3, img3 = flip_axis(g3, img3, 2)
    masks = structure_masks(s, g3)
    write_totalseg_case(ts, "s0004", img3, {n: masks[n] for n in TS_STRUCTURES}, g3)
    demo.duplicates.append(("KiTS23__case_00001", "DemoTotalSeg__s0004", "resampled to 4 mm, flipped"))
    # broken: a 4-D image where a 3-D CT is expected
    s, g, img, _ = _scan(base + 25, "RAS", tumor=False)
    img4 = nib.Nifti1Image(np.stack([img, img], axis=-1), g.matrix)
    (ts / "s0005").mkdir(parents=True, exist_ok=True)
    (ts / "s0005" / "ct.nii.gz").write_bytes(gzip.compress(img4.to_bytes(), mtime=0))
    masks = structure_masks(s, g)
    for n in TS_STRUCTURES:
        save_nifti(ts / "s0005" / "segmentations" / f"{n}.nii.gz", masks[n].astype(np.uint8), g, np.uint8)
    demo.broken.append("DemoTotalSeg__s0005 (4-D image)")
    ts_yaml = root / "DemoTotalSeg.yaml"
    ts_yaml.write_text(DEMO_TOTALSEG_YAML)
    demo.sources.append({"dataset": str(ts_yaml), "root": str(ts)})

    # 4. DICOM series (Pancreas-CT layout) with identifiers planted in every header
    dcm = root / "Pancreas-CT"
    for i in range(1, 4):
        _, g, img, lab = _scan(base + 30 + i, "LPS")
        write_dicom_series(dcm / f"PANCREAS_{i:04d}" / "1.2.3" / "1.2.3.4", img, g, phi=PLANTED_PHI,
                           uid_seed=f"{seed}/PANCREAS_{i:04d}")
        save_nifti(dcm / "TCIA_pancreas_labels" / f"label{i:04d}.nii.gz", remap(lab, {"pancreas": 1}), g,
                   np.uint8)
    # planted duplicate: TotalSegmentator s0002's scan converted to DICOM
    s = Subject.random(base + 22, tumor=False, cyst=False)
    _, g, img, lab = _scan(base + 22, "RAS", tumor=False)
    g_lps, img_lps = flip_axis(*flip_axis(g, img, 0), 1)
    write_dicom_series(dcm / "PANCREAS_0004" / "1.2.3" / "1.2.3.9", img_lps, g_lps, phi=PLANTED_PHI,
                       uid_seed=f"{seed}/PANCREAS_0004")
    lab_lps = flip_axis(*flip_axis(g, lab, 0), 1)[1]
    save_nifti(dcm / "TCIA_pancreas_labels" / "label0004.nii.gz", remap(lab_lps, {"pancreas": 1}), g_lps,
               np.uint8)
    demo.duplicates.append(("DemoTotalSeg__s0002", "DemoPancreasDICOM__0004", "converted to DICOM"))
    # broken: a series with a missing slice
    _, g, img, lab = _scan(base + 35, "LPS")
    write_dicom_series(dcm / "PANCREAS_0005" / "1.2.3" / "1.2.3.5", img, g, phi=PLANTED_PHI, skip_slices=(17,),
                       uid_seed=f"{seed}/PANCREAS_0005")
    save_nifti(dcm / "TCIA_pancreas_labels" / "label0005.nii.gz", remap(lab, {"pancreas": 1}), g, np.uint8)
    demo.broken.append("DemoPancreasDICOM__0005 (DICOM series with a missing slice)")
    dcm_yaml = root / "DemoPancreasDICOM.yaml"
    dcm_yaml.write_text(DEMO_DICOM_YAML)
    demo.sources.append({"dataset": str(dcm_yaml), "root": str(dcm)})
    demo.registry = [ts_yaml, dcm_yaml]
    return demo
