"""A float image of whole numbers (a float32 CT in HU, a MET_DOUBLE MHA) is stored as an integer
image is: int16, every HU kept. float16 rounded HU above 2048 (3071 -> 3072, 2501 -> 2500) with no
problem row (tester 31 #2). Only the cases whose store can change are preprocessed again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.preprocess import intensity
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.store import CaseStore
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import Subject, grid, remap, render

METAL = ((slice(10, 13), slice(10, 13), slice(4, 6)), 3071.0), ((slice(20, 23), slice(10, 13), slice(4, 6)), 2501.0)
YAML = """\
name: Floats
version: "1"
modality: CT
region: abdomen
licence: CC-BY-4.0
citation: "@misc{floats}"
layout:
  - image: "{case}/img.nii.gz"
    label: "{case}/seg.nii.gz"
patterns: {case: "c\\\\d"}
labels:
  encoding: label_map
  values: {1: kidney}
"""


def _ct(seed: int = 0) -> tuple[np.ndarray, np.ndarray, object]:
    g = grid((40, 32, 10), (8.0, 8.0, 10.0), "RAS")
    img, lab = render(Subject.random(seed), g, "CT", seed=seed)
    hu = np.rint(img).astype(np.float32)
    for box, value in METAL:
        hu[box] = value
    return hu, remap(lab, {"kidney_left": 1, "kidney_right": 1}), g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_float_ct_of_whole_hu_is_stored_int16_exactly(dtype: type) -> None:
    hu, _, g = _ct()
    cfg = PreprocessConfig.from_dict({"crop": "none", "target_spacing_mm": [8.0, 8.0, 10.0]})
    prep = preprocess_arrays(hu.astype(dtype), g, [], "CT", cfg)
    assert prep.image is not None and prep.image.dtype == np.int16
    assert np.array_equal(prep.image, hu)  # 3071 and 2501 stay (float16: 3072, 2500)
    assert prep.intensity is not None and prep.intensity["max"] == 3071.0
    # resampled (linear): rounded to whole HU, exactly as the same image read as int16
    cfg = PreprocessConfig.from_dict({"crop": "none", "target_spacing_mm": [3.0, 3.0, 4.0]})
    as_int = preprocess_arrays(hu.astype(np.int16), g, [], "CT", cfg, intensity_offset=-1024.0)
    as_float = preprocess_arrays(hu.astype(dtype), g, [], "CT", cfg, intensity_offset=-1024.0)
    assert as_float.image is not None and as_int.image is not None and as_float.image.dtype == np.int16
    assert np.array_equal(as_float.image, as_int.image)


def test_a_float_image_with_fractions_or_beyond_integers_stays_float16() -> None:
    hu, _, g = _ct()
    cfg = PreprocessConfig.from_dict({"crop": "none", "target_spacing_mm": [8.0, 8.0, 10.0]})
    halves = hu.copy()
    halves[0, 0, 0] += 0.5  # one half-HU voxel (a scl_slope of 0.5)
    assert preprocess_arrays(halves, g, [], "CT", cfg).image.dtype == np.float16
    offset = preprocess_arrays(hu, g, [], "CT", cfg, intensity_offset=0.5)  # a fractional offset
    assert offset.image is not None and offset.image.dtype == np.float16
    wide = hu.copy()
    wide[0, 0, 0] = 70000.0  # whole, but beyond uint16
    assert preprocess_arrays(wide, g, [], "CT", cfg).image.dtype == np.float16
    nan = hu.copy()
    nan[0, 0, 0] = np.nan
    assert not intensity.whole_numbers(nan) and intensity.whole_numbers(hu)
    positive = hu - hu.min()  # whole and 0..4095: uint16 range, but int16 holds it (as for integers)
    assert preprocess_arrays(positive, g, [], "CT", cfg).image.dtype == np.int16
    big = positive * 10  # 0..40 950: uint16, as an integer source beyond int16
    out = preprocess_arrays(big, g, [], "CT", cfg)
    assert out.image is not None and out.image.dtype == np.uint16 and np.array_equal(out.image, big)


def _project(root: Path) -> Path:
    """c0: int16 CT; c1: float32 CT of whole HU (metal at 3071 and 2501); c2: float32 with
    fractions (stays float16, so its key is left alone)."""
    hu, seg, g = _ct(3)
    frac = hu + np.float32(0.25)
    for case, img, dtype in (("c0", hu, np.int16), ("c1", hu, np.float32), ("c2", frac, np.float32)):
        save_nifti(root / "floats" / case / "img.nii.gz", img, g, dtype)
        save_nifti(root / "floats" / case / "seg.nii.gz", seg.astype(np.uint8), g, np.uint8)
    (root / "floats.yaml").write_text(YAML)
    cfg = {"workspace": "ws", "registry": [str(root / "floats.yaml")],
           "sources": [{"dataset": str(root / "floats.yaml"), "root": str(root / "floats")}],
           "stages": {"preprocess": {"target_spacing_mm": [8.0, 8.0, 10.0], "crop": "none"},
                      **{s: {"enabled": False} for s in ("dedup", "harmonize", "pseudolabel", "qc")}},
           "executor": {"kind": "local", "workers": 1, "progress": False}}
    (root / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return root / "pipeline.yaml"


def _ran(pipe: Path) -> int:
    res = run_pipeline(PipelineConfig.load(pipe), stages=["ingest", "preprocess"], release=False)
    return next(r.ran for r in res.reports if r.stage == "preprocess")


def test_only_cases_whose_float_image_may_be_whole_key_on_the_rule(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _project(tmp_path / "p")
    assert _ran(pipe) == 3
    stores = tmp_path / "p" / "ws" / "stores"
    got = {c: CaseStore(stores / f"Floats__{c}.zarr").read("image") for c in ("c0", "c1", "c2")}
    assert {c: str(a.dtype) for c, a in got.items()} == {"c0": "int16", "c1": "int16", "c2": "float16"}
    assert np.array_equal(got["c1"], got["c0"])
    assert {float(got["c1"][box].max()) for box, _ in METAL} == {3071.0, 2501.0}
    assert _ran(pipe) == 0
    # a workspace preprocessed before the rule: only the case whose store changes is made again
    copy = tmp_path / "q"
    shutil.copytree(tmp_path / "p", copy)
    text = (copy / "pipeline.yaml").read_text().replace(str(tmp_path / "p"), str(copy))
    (copy / "pipeline.yaml").write_text(text)
    monkeypatch.setattr(intensity, "WHOLE_FLOAT_RULE", "an earlier rule")
    assert _ran(copy / "pipeline.yaml") == 1


def test_the_rule_is_left_out_only_when_ingest_shows_a_fraction_preprocess_keeps() -> None:
    rule = intensity.WHOLE_FLOAT_RULE
    assert intensity.whole_rule_of("int16", -1024.0, 3071.0) is None
    assert intensity.whole_rule_of("uint8", 0.0, 255.0) is None
    assert intensity.whole_rule_of("float32", -1024.25, 3071.0) is None
    assert intensity.whole_rule_of("float64", 0.0, 811.5) is None
    assert intensity.whole_rule_of("float32", -1024.0, 3071.0) == rule  # may be whole
    assert intensity.whole_rule_of("float32", 0.5, 40000.0) == rule  # beyond float16's range: may be clipped
    assert intensity.whole_rule_of("float32", float("nan"), 3.5) == rule  # NaN: a fill may replace it
    assert intensity.whole_rule_of(None, None, None) == rule
