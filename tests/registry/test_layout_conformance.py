"""One conformance suite that every layout adapter passes.

Each adapter writes a tiny download in a real native layout (written here, from the
layout facts, not from the registry's parsing) together with what it expects; the suite
checks discovery, ingest facts, label counts, determinism and caching.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from curator.io.nifti import write_nifti
from curator.io.volume import Geometry, Volume
from curator.registry import load_dataset_file
from curator.registry.layout import discover
from curator.testing.layouts import save_nifti, write_dicom_series
from curator.testing.phantoms import Subject, grid, remap, render, structure_masks
from curator.testing.pipelines import make_pipeline, run, table


@dataclass
class Expected:
    image: bool
    geometry: Geometry
    counts: dict[tuple[str, int], int] = field(default_factory=dict)  # (label_key, raw value) -> voxels
    sequence: str | None = None
    split: str | None = None


def _scan(seed: int, orientation: str = "RAS", shape: tuple[int, int, int] = (24, 20, 10)):  # type: ignore[no-untyped-def]
    s = Subject.random(seed)
    g = grid(shape, (14.0, 14.0, 25.0), orientation)
    img, lab = render(s, g, "CT", seed=seed)
    return s, g, np.rint(img).astype(np.int16), lab


def _counts(lab: np.ndarray, key: str = "") -> dict[tuple[str, int], int]:
    v, c = np.unique(lab, return_counts=True)
    return {(key, int(a)): int(b) for a, b in zip(v, c, strict=True) if a != 0}


def _base(name: str, layout: list[dict[str, Any]], labels: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{x, title={x}}", "layout": layout, "labels": labels, **extra}


CODES = {"liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 3}
VALUES = {1: "liver", 2: "spleen", 3: "kidney"}


def paired(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    for i in range(3):
        _, g, img, lab = _scan(i)
        m = remap(lab, CODES)
        save_nifti(root / "imagesTr" / f"abd_{i:03d}_0000.nii.gz", img, g)
        save_nifti(root / "labelsTr" / f"abd_{i:03d}.nii.gz", m, g)
        exp[f"Paired__abd_{i:03d}"] = Expected(True, g, _counts(m), split="train")
    _, g, img, _ = _scan(9)
    save_nifti(root / "imagesTs" / "abd_009_0000.nii.gz", img, g)
    exp["Paired__abd_009"] = Expected(True, g, split="test")
    _, g, _, lab = _scan(8)
    m = remap(lab, CODES)
    save_nifti(root / "labelsTr" / "abd_008.nii.gz", m, g)  # label whose image was never published
    exp["Paired__abd_008"] = Expected(False, g, _counts(m), split="train")
    spec = _base("Paired", [{"image": "imagesTr/{case}_0000.nii.gz", "label": "labelsTr/{case}.nii.gz",
                             "split": "train"},
                            {"image": "imagesTs/{case}_0000.nii.gz", "split": "test"}],
                 {"encoding": "label_map", "values": VALUES})
    return spec, exp


def case_folders(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    for i in range(3):
        _, g, img, lab = _scan(10 + i, "IPL", shape=(10, 20, 24))
        m = remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2, "kidney_cyst": 3})
        save_nifti(root / "dataset" / f"case_{i:05d}" / "imaging.nii.gz", img, g)
        save_nifti(root / "dataset" / f"case_{i:05d}" / "segmentation.nii.gz", m, g)
        exp[f"Folders__case_{i:05d}"] = Expected(True, g, _counts(m))
    spec = _base("Folders", [{"image": "dataset/{case}/imaging.nii.gz", "label": "dataset/{case}/segmentation.nii.gz"}],
                 {"encoding": "label_map", "values": {1: "kidney", 2: "kidney tumor", 3: "kidney cyst"}},
                 patterns={"case": r"case_\d{5}"})
    return spec, exp


def per_structure(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    names = ["liver", "spleen", "kidney_left", "kidney_right"]
    for i in range(2):
        s, g, img, _ = _scan(20 + i, "LAS")
        masks = structure_masks(s, g)
        save_nifti(root / f"s{i:04d}" / "ct.nii.gz", img, g)
        counts = {}
        for n in names:
            save_nifti(root / f"s{i:04d}" / "segmentations" / f"{n}.nii.gz", masks[n].astype(np.uint8), g)
            if masks[n].any():
                counts[(n, 1)] = int(masks[n].sum())
        exp[f"PerStructure__s{i:04d}"] = Expected(True, g, counts)
    spec = _base("PerStructure", [{"image": "{case}/ct.nii.gz", "label": "{case}/segmentations/{structure}.nii.gz"}],
                 {"encoding": "per_structure", "structures": {"liver": "liver", "spleen": "spleen",
                                                              "kidney_left": "left kidney",
                                                              "kidney_right": "right kidney"}},
                 patterns={"case": r"s\d{4}"})
    return spec, exp


def dicom_series(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    for i in range(2):
        _, g, img, lab = _scan(30 + i, "LPS")
        write_dicom_series(root / f"PANCREAS_{i:04d}" / "study" / "series", img, g)
        m = remap(lab, {"pancreas": 1})
        save_nifti(root / "labels" / f"label{i:04d}.nii.gz", m, g)
        exp[f"Dicom__{i:04d}"] = Expected(True, g, _counts(m))
    spec = _base("Dicom", [{"image": "PANCREAS_{case}/", "label": "labels/label{case}.nii.gz", "format": "dicom"}],
                 {"encoding": "label_map", "values": {1: "pancreas"}}, patterns={"case": r"\d{4}"})
    return spec, exp


def _itk_pair(root: Path, name: str, ext: str, img: np.ndarray, m: np.ndarray, g: Geometry) -> None:
    for arr, suffix in ((img, ""), (m, "_segmentation")):
        tmp = root / f".tmp{suffix}.nii.gz"
        write_nifti(tmp, Volume(arr, g))
        sitk.WriteImage(sitk.ReadImage(str(tmp)), str(root / f"{name}{suffix}{ext}"))
        tmp.unlink()


def nrrd_mhd(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    root.mkdir(parents=True, exist_ok=True)
    for i, ext in enumerate([".nrrd", ".mhd", ".mha"]):
        _, g, img, lab = _scan(40 + i, "LPS")
        m = remap(lab, {"liver": 1})
        _itk_pair(root, f"Case{i:02d}", ext, img, m, g)
        exp[f"Itk__Case{i:02d}"] = Expected(True, g, _counts(m))
    spec = _base("Itk", [{"image": "{case}" + e, "label": "{case}_segmentation" + e} for e in (".nrrd", ".mhd", ".mha")],
                 {"encoding": "label_map", "values": {1: "liver"}}, patterns={"case": r"Case\d{2}"})
    return spec, exp


def msd_4d(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    training = []
    for i in range(2):
        _, g, img, lab = _scan(50 + i)
        four = np.stack([img, (img // 2).astype(np.int16)], axis=-1)
        import nibabel as nib

        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(four, g.matrix), str(root / "imagesTr" / f"prostate_{i:02d}.nii.gz"))
        m = remap(lab, {"liver": 1, "spleen": 2})
        save_nifti(root / "labelsTr" / f"prostate_{i:02d}.nii.gz", m, g)
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
        for seq in ("T2", "ADC"):
            exp[f"Msd4d__prostate_{i:02d}__{seq}"] = Expected(True, g, _counts(m), sequence=seq, split="train")
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "T2", "1": "ADC"}, "training": training,
                                                   "test": []}))
    (root / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    spec = _base("Msd4d", [{"index": "dataset.json"}], {"encoding": "label_map", "values": {1: "peripheral zone",
                                                                                            2: "transition zone"}},
                 modality="MR", sequences={"T2": "MR", "ADC": "MR"})
    return spec, exp


def multi_sequence(root: Path) -> tuple[dict[str, Any], dict[str, Expected]]:
    exp = {}
    for i in range(2):
        case = f"BraTS-GLI-{i:05d}-000"
        _, g, img, lab = _scan(60 + i, "LPS")
        m = remap(lab, {"liver": 1, "spleen": 2, "kidney_left": 3})
        for j, seq in enumerate(["t1n", "t2f"]):
            save_nifti(root / case / f"{case}-{seq}.nii.gz", img + j, g)
            exp[f"Seq__{case}__{seq}"] = Expected(True, g, _counts(m), sequence=seq)
        save_nifti(root / case / f"{case}-seg.nii.gz", m, g)
    spec = _base("Seq", [{"image": "{case}/{case}-{sequence}.nii.gz", "label": "{case}/{case}-seg.nii.gz"}],
                 {"encoding": "label_map", "values": {1: "necrotic brain tumor core", 2: "brain edema",
                                                      3: "enhancing brain tumor"}},
                 modality="MR", patterns={"case": r"(?P<subject>BraTS-GLI-\d{5})-\d{3}", "sequence": "t1n|t2f"},
                 patient_id="{subject}")
    return spec, exp


ADAPTERS: dict[str, Callable[[Path], tuple[dict[str, Any], dict[str, Expected]]]] = {
    "paired": paired, "case_folders": case_folders, "per_structure": per_structure, "dicom_series": dicom_series,
    "nrrd_mha_mhd": nrrd_mhd, "msd_index_4d": msd_4d, "multi_sequence": multi_sequence,
}


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, dict[str, Expected]]:
    root = tmp_path / "raw"
    spec, exp = ADAPTERS[request.param](root)
    yml = tmp_path / f"{spec['name']}.yaml"
    yml.write_text(yaml.safe_dump(spec, sort_keys=False))
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    return yml, pipe, exp


def test_discovery_finds_exactly_the_expected_cases(adapter: tuple[Path, Path, dict[str, Expected]]) -> None:
    yml, pipe, exp = adapter
    spec = load_dataset_file(yml)
    root = pipe.parent / "raw"
    cases, problems = discover(spec, root)
    assert not problems, problems
    assert sorted(c.case_id for c in cases) == sorted(exp)
    again, _ = discover(spec, root)
    assert [c.case_id for c in again] == [c.case_id for c in cases]  # deterministic


def test_ingest_records_geometry_labels_and_roles(adapter: tuple[Path, Path, dict[str, Expected]]) -> None:
    _, pipe, exp = adapter
    run(pipe, stages=["ingest"])
    cases = {r["case_id"]: r for r in table(pipe, "cases").to_pylist()}
    assert sorted(cases) == sorted(exp)
    raw = table(pipe, "raw_labels").to_pylist()
    for cid, e in exp.items():
        row = cases[cid]
        assert row["has_image"] is e.image and row["label_only"] is (not e.image)
        got = Geometry.from_affine(tuple(row["shape"]), row["affine"])
        assert got.mismatch(e.geometry, tol_mm=1e-3) is None, (cid, got.mismatch(e.geometry))
        assert row["sequence"] == e.sequence
        assert row["official_split"] == e.split
        counts = {(r["label_key"], r["raw_value"]): r["voxels"] for r in raw if r["case_id"] == cid}
        assert counts == e.counts, cid
        if e.image:
            assert len(row["image_sha256"]) == 64 and row["intensity_max"] > row["intensity_min"]
        assert row["patient_id"].startswith("p_")
    problems = table(pipe, "problems__ingest").to_pylist()
    assert all(p["severity"] != "error" for p in problems), problems


def test_rerun_is_cached_and_a_touched_file_reruns_only_its_case(
        adapter: tuple[Path, Path, dict[str, Expected]]) -> None:
    _, pipe, exp = adapter
    first = run(pipe, stages=["ingest"]).reports[0]
    assert first.ran == len(exp) and first.cached == 0
    before = table(pipe, "cases")
    second = run(pipe, stages=["ingest"]).reports[0]
    assert second.ran == 0 and second.cached == len(exp)
    assert table(pipe, "cases").equals(before)
    cases = table(pipe, "cases").to_pylist()
    victim = next(c for c in cases if c["label_paths"])
    f = pipe.parent / "raw" / victim["label_paths"][0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    touched = run(pipe, stages=["ingest"]).reports[0]
    assert touched.ran == 0  # same content: keys are content checksums, not timestamps
    shared = 2 if victim["sequence"] else 1
    f.write_bytes(_changed_copy(f))
    third = run(pipe, stages=["ingest"]).reports[0]
    assert 1 <= third.ran <= shared and third.cached == len(exp) - third.ran


def _changed_copy(path: Path) -> bytes:
    """The same label file with one voxel changed (re-encoded in its own format)."""
    from curator.io import read_volume

    v = read_volume(path, role="label")
    v.array.flat[0] = 1 if v.array.flat[0] == 0 else 0
    if path.name.endswith((".nii.gz", ".nii")):
        from curator.io.nifti import nifti_bytes

        return nifti_bytes(v, compress=path.name.endswith(".gz"))
    tmp = path.with_name("tmp_changed.nii.gz")
    from curator.io.nifti import write_nifti

    write_nifti(tmp, v)
    out_path = path.with_name("tmp_changed" + "".join(path.suffixes))
    sitk.WriteImage(sitk.ReadImage(str(tmp)), str(out_path))
    data = out_path.read_bytes()
    tmp.unlink()
    out_path.unlink()
    return data
