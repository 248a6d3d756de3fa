"""The body mask does not move with an additive intensity offset, and an empty or whole-field
body mask is a warning naming the case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.preprocess.body import body_mask
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.preprocess.intensity import strided_sample
from curator.release.query import Release
from curator.testing.layouts import write_kits_case
from curator.testing.phantoms import Subject, grid, render
from tests.preprocess.conftest import KITS_YAML, SPACING, _ingest_and_preprocess

SHIFTS = (-2000.0, -500.0, 500.0, 2000.0)


def _bodies(image: np.ndarray, g: Geometry, modality: str, cfg: PreprocessConfig
            ) -> dict[float, tuple[int, tuple[int, ...], int]]:
    """Body voxels, stored grid shape (the crop) and resampled grid's voxels of ``image`` shifted by
    each offset."""
    out = {}
    for shift in (0.0, *SHIFTS):
        prep = preprocess_arrays((image + np.float32(shift)).astype(np.float32), g, [], modality, cfg)
        out[shift] = (int(prep.body_voxels or 0), prep.geometry.shape, int(np.prod(prep.resampled_shape)))
    return out


def test_a_real_mr_has_one_body_whatever_its_offset(real_data: Path) -> None:
    """The TotalSegmentator MR shifted by ±500, ±2000: 0.5 × Otsu gave an empty body at −2000 and
    the whole field of view at +2000. Unshifted (background 0), the mask is the old one."""
    path = real_data / "totalsegmentator" / "example_mr_sm.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    vol = read_volume(path, role="image")
    a = np.asarray(vol.array, dtype=np.float32)
    got = _bodies(a, vol.geometry, "MR", PreprocessConfig.from_dict({}))
    n0, shape0, _ = got[0.0]
    assert 0 < n0
    for shift in SHIFTS:
        n, shape, _ = got[shift]
        assert abs(n - n0) <= 1e-3 * n0 and shape == shape0, (shift, n, n0, shape, shape0)
    # the background is ~0 (its 0.5th percentile −4, Otsu 233): the mask is the old 0.5 × Otsu one to 0.1 %
    before = body_mask(a, "MR", threshold=0.5 * float(threshold_otsu(strided_sample(a, 2_000_000).astype(np.float32))))
    assert np.count_nonzero(body_mask(a, "MR") ^ before) <= 1e-3 * np.count_nonzero(before)


@pytest.mark.parametrize("modality", ["MR", "PET"])
def test_a_phantom_has_one_body_whatever_its_offset(modality: str) -> None:
    g = grid((96, 80, 16), (4.0, 4.0, 9.0), "RAS")
    img, _ = render(Subject.random(seed=4), g, modality="MR", seed=4)
    got = _bodies(img.astype(np.float32), g, modality, PreprocessConfig.from_dict({"target_spacing_mm": [4, 4, 9]}))
    n0, shape0, total = got[0.0]
    assert 0 < n0 < 0.9 * total
    for shift in SHIFTS:
        assert abs(got[shift][0] - n0) <= 1e-3 * n0 and got[shift][1] == shape0, (shift, got[shift], got[0.0])


def test_an_empty_body_mask_is_a_warning_and_a_whole_field_one_info_naming_the_case(tmp_path: Path) -> None:
    """A CT stored +1024 without its offset declared (air at 24 > −500 HU: the whole field of view is
    body: info, as every case of a dataset cropped to the patient is) and one shifted −1024 twice
    (tissue at −984: nothing is body: a warning) are reported; a CT in HU is not."""
    g = Geometry.from_affine((40, 40, 12), np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0]))
    hu = np.full(g.shape, -1000, np.int16)
    hu[6:34, 8:32, :] = 40
    seg = np.zeros(g.shape, np.uint8)
    seg[12:20, 12:20, 3:9] = 1
    for case, shift in (("case_00000", 0), ("case_00001", 1024), ("case_00002", -1024)):
        write_kits_case(tmp_path / "src", case, (hu + shift).astype(np.int16), seg, g)
    release = _ingest_and_preprocess(tmp_path, {"src": KITS_YAML.replace(
        "fixes: {intensity_offset: {value: -1024}}\n", "")}, "t")  # the offset not declared
    rel = Release(release)
    probs = rel.sql("select case_id, kind, severity, message from problems where stage = 'preprocess' "
                    "order by case_id").fetchall()
    assert [(p[0], p[1], p[2]) for p in probs] == [
        ("TinyKits__case_00001", "body_mask_whole_field", "info"),
        ("TinyKits__case_00002", "body_mask_empty", "warning")], probs
    assert "100.0 % of the field of view" in probs[0][3] and "-500 HU" in probs[0][3]
    assert all("What to do:" in p[3] and "intensity_offset" in p[3].split("What to do:")[1] for p in probs)
    body = dict(rel.sql("select case_id, body_voxels from preprocessed").fetchall())
    assert body["TinyKits__case_00002"] == 0 and body["TinyKits__case_00000"] == 28 * 24 * 12


def test_a_pet_body_keeps_its_low_uptake_fat() -> None:
    """Whole-body FDG in a field of view the body mostly fills: air ~0.02, a fat rim 0.35, soft
    tissue 0.9-1.8, liver 2.6 (Otsu ~1). Half of Otsu put the fat (and low-uptake arms) outside
    the body, and the store's crop cut them off; a quarter keeps them."""
    rng = np.random.default_rng(0)
    img = np.abs(rng.normal(0.02, 0.02, (64, 64, 12))).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    img[r < 31] = 0.35
    img[r < 27] = 0.9
    img[r < 20] = 1.8
    img[(r < 12) & (xx > 32)] = 2.6
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    body = r < 31
    pet, mr = body_mask(img, "PET"), body_mask(img, "MR")
    assert np.array_equal(pet[..., 0], body)  # the fat rim is body
    assert np.count_nonzero(mr[..., 0]) < 0.8 * body.sum()  # MR's half cuts it off
