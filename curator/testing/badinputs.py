"""A generated corpus of broken inputs, each planted where a real download could hold it.

:func:`write_corpus` writes several small "datasets" (NIfTI pairs, DICOM series, an MSD
index, a dataset YAML escaping its root, ...) and returns the pipeline sources plus the
problem kind every planted input must produce.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import yaml

from curator.testing.layouts import save_nifti, write_dicom_series
from curator.testing.phantoms import Subject, grid, remap, render

SHAPE, SPACING = (16, 14, 8), (20.0, 20.0, 30.0)


@dataclass
class Corpus:
    sources: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # "<source>:<relative path>" or yaml name -> kind
    ok_cases: list[str] = field(default_factory=list)


def _spec(name: str, layout: list[dict[str, Any]], labels: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": name, "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC0-1.0",
            "citation": "@misc{bad, title={bad inputs}}", "layout": layout, "labels": labels, **kw}


def _scan(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    g = grid(SHAPE, SPACING, "LPS")
    img, lab = render(Subject.random(seed), g, "CT", seed=seed)
    return g, np.rint(img).astype(np.int16), remap(lab, {"liver": 1, "spleen": 2})


def _raw_nifti(path: Path, a: np.ndarray, affine: np.ndarray | None = None, **header: Any) -> None:
    """A NIfTI written as given (``affine=None`` + ``pixdim=`` keeps a broken pixdim)."""
    img = nib.Nifti1Image(a, affine)
    for k, v in header.items():
        if k == "pixdim":
            img.header["pixdim"][1:4] = v
        else:
            img.header[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = img.to_bytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)


def _nifti_pairs(root: Path, c: Corpus, src: str) -> None:
    im, lb = root / "images", root / "labels"
    g, img, lab = _scan(1)
    save_nifti(im / "ok_000.nii.gz", img, g)
    save_nifti(lb / "ok_000.nii.gz", lab, g)
    c.ok_cases.append(f"{src}__ok_000")
    bad: dict[str, str] = {}

    def pair(case: str, kind: str, *, label: bool = True, where: str = "images") -> None:
        if label and not (lb / f"{case}.nii.gz").exists():
            save_nifti(lb / f"{case}.nii.gz", lab, g)
        bad[f"{where}/{case}.nii.gz"] = kind

    good = (im / "ok_000.nii.gz").read_bytes()
    rng = np.random.default_rng(0)
    noisy = rng.integers(-1000, 1000, SHAPE).astype(np.int16)
    _raw_nifti(im / "noisy.nii.gz", noisy, g.matrix)
    (im / "truncated.nii.gz").write_bytes((im / "noisy.nii.gz").read_bytes()[:2000])
    (im / "noisy.nii.gz").unlink()
    pair("truncated", "truncated_file")
    (im / "empty.nii.gz").write_bytes(b"")
    pair("empty", "empty_file")
    (im / "wrong_ext.nii.gz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(600))
    pair("wrong_ext", "wrong_extension")
    nan = img.astype(np.float32)
    nan[3, 3, 3] = np.nan
    _raw_nifti(im / "nan.nii.gz", nan, g.matrix)
    pair("nan", "non_finite_values")
    inf = img.astype(np.float32)
    inf[2, 2, 2] = np.inf
    _raw_nifti(im / "inf.nii.gz", inf, g.matrix)
    pair("inf", "non_finite_values")
    _raw_nifti(im / "fourd.nii.gz", np.stack([img, img, img], axis=-1), g.matrix)
    pair("fourd", "not_3d")
    _raw_nifti(im / "zero_spacing.nii.gz", img, None, pixdim=[1.0, 0.0, 1.0], sform_code=0, qform_code=0)
    pair("zero_spacing", "invalid_spacing")
    _raw_nifti(im / "neg_spacing.nii.gz", img, None, pixdim=[1.0, -2.0, 1.0], sform_code=0, qform_code=0)
    pair("neg_spacing", "invalid_spacing")
    skew = np.diag([*SPACING, 1.0])
    skew[0, 1] = 9.0
    _raw_nifti(im / "skew.nii.gz", img, skew)
    pair("skew", "bad_direction")
    save_nifti(im / "shape_mm.nii.gz", img, g)
    save_nifti(lb / "shape_mm.nii.gz", lab[:, :, :5].copy(), grid((16, 14, 5), SPACING, "LPS"))
    bad["labels/shape_mm.nii.gz"] = "shape_mismatch"
    save_nifti(im / "geom_mm.nii.gz", img, g)
    save_nifti(lb / "geom_mm.nii.gz", lab, grid(SHAPE, SPACING, "LPS", center=(7.0, 0.0, 0.0)))
    bad["labels/geom_mm.nii.gz"] = "geometry_mismatch"
    save_nifti(im / "float_label.nii.gz", img, g)
    _raw_nifti(lb / "float_label.nii.gz", lab.astype(np.float32) * 0.5, g.matrix)
    bad["labels/float_label.nii.gz"] = "label_not_integer"
    save_nifti(im / "undeclared.nii.gz", img, g)
    und = lab.copy()
    und[0, 0, 0] = 7
    save_nifti(lb / "undeclared.nii.gz", und, g)
    bad["labels/undeclared.nii.gz"] = "label_values_undeclared"
    huge = bytearray(gzip.decompress(good))
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(huge[:348])))
    hdr.set_data_shape((900, 900, 900))
    huge[:348] = hdr.binaryblock
    (im / "huge_header.nii").write_bytes(bytes(huge))
    bad["images/huge_header.nii"] = "header_size_mismatch"
    short = bytearray(gzip.decompress(good))  # a header declaring two rows less than its data holds
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(short[:348])))
    hdr.set_data_shape((SHAPE[0] - 2, *SHAPE[1:]))
    short[:348] = hdr.binaryblock
    (im / "short_header.nii.gz").write_bytes(gzip.compress(bytes(short), mtime=0))
    pair("short_header", "header_size_mismatch")
    save_nifti(im / "label_image.nii.gz", img, g)
    _raw_nifti(lb / "label_image.nii.gz", rng.integers(-1000, 3000, SHAPE).astype(np.int16), g.matrix)
    bad["labels/label_image.nii.gz"] = "label_is_image"
    save_nifti(im / "blank.nii.gz", np.full(SHAPE, -1024, np.int16), g)
    pair("blank", "blank_image")
    (im / "corrupt.nii.gz").write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + bytes(range(256)) * 3, mtime=0))
    pair("corrupt", "corrupt_file")
    os.mkfifo(im / "fifo.nii.gz")
    pair("fifo", "not_a_regular_file")
    os.symlink("loop.nii.gz", im / "loop.nii.gz")
    pair("loop", "symlink_loop")
    outside = root.parent / "outside.nii.gz"
    save_nifti(outside, img, g)
    os.symlink(outside, im / "escape.nii.gz")
    pair("escape", "path_escape")
    if os.geteuid() != 0:  # root reads everything; the kind is only testable as a normal user
        save_nifti(im / "unreadable.nii.gz", img, g)
        os.chmod(im / "unreadable.nii.gz", 0)
        pair("unreadable", "permission_denied")
    save_nifti(lb / "label_only.nii.gz", lab, g)
    bad["labels/label_only.nii.gz"] = "image_missing"
    save_nifti(im / "empty_label.nii.gz", img, g)
    save_nifti(lb / "empty_label.nii.gz", np.zeros(SHAPE, np.uint8), g)
    bad["labels/empty_label.nii.gz"] = "label_empty"
    big = np.zeros((160, 160, 120), np.int16)
    big[10:20, 10:20, 10:20] = 100
    save_nifti(im / "too_large.nii.gz", big, grid(big.shape, (1.0, 1.0, 1.0), "LPS"))
    pair("too_large", "too_large", label=False)
    save_nifti(root / "extra" / "ok_000.nii.gz", img, g)
    bad["extra/ok_000.nii.gz"] = "duplicate_case"
    for rel, kind in bad.items():
        c.expected[f"{src}:{rel}"] = kind
    spec = _spec(src, [{"image": "images/{case}.nii.gz", "label": "labels/{case}.nii.gz"},
                       {"image": "images/{case}.nii", "label": "labels/{case}.nii"},
                       {"image": "extra/{case}.nii.gz"}],
                 {"encoding": "label_map", "values": {1: "liver", 2: "spleen"}})
    _register(root, c, src, spec)


def _dicom(root: Path, c: Corpus, src: str) -> None:
    g, img, _ = _scan(2)
    write_dicom_series(root / "ok_dcm", img, g)
    c.ok_cases.append(f"{src}__ok_dcm")
    write_dicom_series(root / "missing_slice", img, g, skip_slices=(4,))
    c.expected[f"{src}:missing_slice"] = "dicom_missing_slice"
    files = write_dicom_series(root / "uneven", img, g)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        pos = [float(x) for x in ds.ImagePositionPatient]
        pos[2] += 0.0 if k < 4 else 9.0 + k * 1.5
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.save_as(f)
    c.expected[f"{src}:uneven"] = "dicom_uneven_spacing"
    write_dicom_series(root / "two_series", img, g)
    for f in write_dicom_series(root / "two_series_b", img, g):
        f.rename(root / "two_series" / f"B{f.name}")
    (root / "two_series_b").rmdir()
    c.expected[f"{src}:two_series"] = "dicom_multiple_series"
    for f in write_dicom_series(root / "no_pixels", img, g):
        ds = pydicom.dcmread(f)
        del ds.PixelData
        ds.save_as(f)
    c.expected[f"{src}:no_pixels"] = "dicom_no_pixel_data"
    files = write_dicom_series(root / "mixed_sizes", img, g, series_uid="1.2.826.0.1.3680043.8.498.1")
    small = grid((8, 14, 8), SPACING, "LPS")
    write_dicom_series(root / "tmp_small", img[:8], small, series_uid="1.2.826.0.1.3680043.8.498.1")
    os.replace(root / "tmp_small" / files[2].name, files[2])
    for f in (root / "tmp_small").iterdir():
        f.unlink()
    (root / "tmp_small").rmdir()
    c.expected[f"{src}:mixed_sizes"] = "dicom_inconsistent"
    (root / "not_dicom").mkdir()
    (root / "not_dicom" / "README.txt").write_text("scans will be uploaded later")
    c.expected[f"{src}:not_dicom"] = "unknown_format"
    _register(root, c, src, _spec(src, [{"image": "{case}/", "format": "dicom"}], {"encoding": "none"}))


def _msd(root: Path, c: Corpus, src: str) -> None:
    g, img, lab = _scan(3)
    save_nifti(root / "imagesTr" / "x_001.nii.gz", img, g)
    save_nifti(root / "labelsTr" / "x_001.nii.gz", lab, g)
    c.ok_cases.append(f"{src}__x_001")
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "training": [
        {"image": "./imagesTr/x_001.nii.gz", "label": "./labelsTr/x_001.nii.gz"},
        {"image": "./imagesTr/x_002.nii.gz", "label": "./labelsTr/x_002.nii.gz"}], "test": []}))
    c.expected[f"{src}:imagesTr/x_002.nii.gz"] = "file_not_found"
    _register(root, c, src, _spec(src, [{"index": "dataset.json"}],
                                  {"encoding": "label_map", "values": {1: "liver", 2: "spleen"}}))


def _register(root: Path, c: Corpus, src: str, spec: dict[str, Any]) -> None:
    path = root.parent / f"{src}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    c.sources.append({"dataset": str(path), "root": str(root)})


def write_corpus(base: Path) -> Corpus:
    """Write the corpus under ``base``; returns sources and expected kinds."""
    c = Corpus()
    for name, fn in (("BadNifti", _nifti_pairs), ("BadDicom", _dicom), ("BadIndex", _msd)):
        root = base / name
        root.mkdir(parents=True)
        fn(root, c, name)
    (base / "NoMatch").mkdir()
    (base / "NoMatch" / "notes.txt").write_text("nothing here matches")
    _register(base / "NoMatch", c, "NoMatch",
              _spec("NoMatch", [{"image": "imagesTr/{case}.nii.gz"}], {"encoding": "none"}))
    c.expected["NoMatch:."] = "layout_no_match"
    (base / "Escape").mkdir()
    _register(base / "Escape", c, "Escape", _spec("Escape", [{"image": "../../etc/{case}"}], {"encoding": "none"}))
    c.expected["Escape.yaml"] = "path_escape"
    return c
