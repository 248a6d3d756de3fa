"""Intensities at the edges: scaled NIfTI integers, scaled stores, percentile 0, the non-zero crop."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from curator.io.formats import read_volume
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.preprocess.intensity import stats


def _ellipse(shape: tuple[int, int, int], a: float, b: float) -> np.ndarray:
    x, y = np.meshgrid(np.arange(shape[0]) - (shape[0] - 1) / 2, np.arange(shape[1]) - (shape[1] - 1) / 2,
                       indexing="ij")
    return np.broadcast_to(((x / a) ** 2 + (y / b) ** 2 < 1)[..., None], shape)


def _save(path: Path, arr: np.ndarray, slope: float | None = None, inter: float | None = None) -> Path:
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    img = nib.Nifti1Image(arr, aff)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    img.set_sform(aff, 1)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_integer_nifti_with_whole_scaling_reads_as_integer_hu(tmp_path: Path, gz: bool) -> None:
    """dcm2niix writes CT as uint16 + scl_inter −1024: HU must stay integers (a float read made the
    store float16, which rounds HU above 2048)."""
    hu = np.full((20, 20, 6), -1000, np.int16)
    hu[5:15, 5:15] = np.arange(2049, 2049 + 600, dtype=np.int16).reshape(10, 10, 6)
    raw = (hu.astype(np.int32) + 1024).astype(np.uint16)
    ext = ".nii.gz" if gz else ".nii"
    vol = read_volume(_save(tmp_path / f"ct{ext}", raw, 1.0, -1024.0), role="image")
    assert vol.array.dtype == np.int16 and np.array_equal(vol.array, hu)
    prep = preprocess_arrays(vol.array, vol.geometry, [], "CT", PreprocessConfig.from_dict({"crop": "none"}))
    assert prep.image is not None and prep.image.dtype == np.int16 and np.array_equal(prep.image, hu)
    halves = read_volume(_save(tmp_path / f"half{ext}", raw, 0.5, -512.0), role="image")  # not whole: float
    assert halves.array.dtype.kind == "f" and np.allclose(halves.array, raw * 0.5 - 512)


def test_ct_body_threshold_applies_in_physical_units_when_the_store_is_scaled(tmp_path: Path) -> None:
    """A float CT padded with −32768 outside the scan's circle is stored as float16 × 2: the body
    (−500 HU) must not become "above −1000 HU" and swallow the air."""
    rng = np.random.default_rng(0)
    shape = (96, 96, 8)
    hu = (np.full(shape, -1000.0) + rng.normal(0, 20, shape)).astype(np.float32)
    body = _ellipse(shape, 24, 16)
    hu[body] = 40.0
    got = {}
    for pad in (-2000.0, -32768.0):
        a = hu.copy()
        a[~_ellipse(shape, 46, 46)] = pad
        prep = preprocess_arrays(a, read_volume(_save(tmp_path / "g.nii.gz", a), role="image").geometry, [],
                                 "CT", PreprocessConfig.from_dict({}))
        got[pad] = (prep.attrs["normalisation"]["scale"], int(prep.body.sum()), prep.geometry.shape)
    assert got[-2000.0][0] == 1.0 and got[-32768.0][0] == 2.0
    assert got[-2000.0][1] == got[-32768.0][1] == int(body.sum())
    assert got[-2000.0][2] == got[-32768.0][2]


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32])
def test_percentile_zero_is_the_minimum(dtype: type) -> None:
    a = np.arange(100, 900, dtype=dtype).reshape(8, 10, 10)
    s = stats(a, pcts=(0.0, 50.0, 100.0))
    assert s is not None and s["p0"] == 100 == s["min"] and s["p100"] == 899 == s["max"]
    assert s["p50"] == np.percentile(a, 50, method="inverted_cdf")


def test_nonzero_crop_keeps_negative_values() -> None:
    """crop: nonzero is the non-zero region (SAT, nnU-Net), not the positive one."""
    shape = (80, 80, 6)
    a = np.zeros(shape, np.int16)
    a[_ellipse(shape, 36, 26)] = -100  # fat: negative, non-zero
    a[_ellipse(shape, 12, 8)] = 40
    from curator.testing.phantoms import grid

    g = grid(shape, (1.0, 1.0, 3.0), "RAS")
    prep = preprocess_arrays(a, g, [], "CT", PreprocessConfig.from_dict({"crop": "nonzero", "crop_margin_mm": 0}))
    assert prep.image is not None and int((prep.image == -100).sum()) == int((a == -100).sum())
    nz = np.argwhere(a != 0)
    assert prep.geometry.shape == tuple(int(n) for n in nz.max(0) - nz.min(0) + 1)


def test_a_far_fill_value_is_clipped_not_allowed_to_take_all_the_precision() -> None:
    """A float image padded with −3.4e38 outside its field of view: stored as float16 with one scale,
    the fill set the scale and every tissue value rounded to 0. The fill is now set to the edge of
    the image's range and named; an ordinary float image is left alone."""
    from curator.preprocess.config import PreprocessConfig
    from curator.preprocess.core import preprocess_arrays
    from curator.testing.phantoms import grid

    g = grid((40, 40, 20), (1.0, 1.0, 3.0), "RAS")
    rng = np.random.default_rng(0)
    img = (300.0 + 200.0 * rng.random(g.shape)).astype(np.float32)
    img[:6] = -3.4e38
    cfg = PreprocessConfig.from_dict({"crop": "none"})
    prep = preprocess_arrays(img, g, [], "MR", cfg)
    assert prep.clipped is not None and prep.clipped[0] == 6 * 40 * 20
    assert 300.0 <= prep.clipped[1] < 301.0 and prep.clipped[2] <= 500.0
    stored = prep.image.astype(np.float64) * prep.attrs["normalisation"].get("scale", 1.0)
    assert np.allclose(stored[6:], img[6:], rtol=2e-3)  # float16 precision, not zeros
    plain = preprocess_arrays(img[6:].copy(), grid((34, 40, 20), (1.0, 1.0, 3.0), "RAS"), [], "MR", cfg)
    assert plain.clipped is None


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_a_float_image_with_an_offset_is_shifted_once_and_left_untouched(method: str) -> None:
    """The lazy ``(image + offset) / scale`` shifted a float32 image in place: the caller's array
    changed, and the planes two consecutive slabs share were shifted twice."""
    from curator.preprocess.config import PreprocessConfig
    from curator.preprocess.core import preprocess_arrays
    from curator.testing.phantoms import grid

    g = grid((24, 24, 70), (1.0, 1.0, 1.3), "RAS")
    rng = np.random.default_rng(1)
    as_int = rng.integers(0, 2000, g.shape).astype(np.int16)
    as_float = as_int.astype(np.float32)
    keep = as_float.copy()
    cfg = PreprocessConfig.from_dict({"crop": "none", "image_interpolation": method})
    want = preprocess_arrays(as_int, g, [], "CT", cfg, intensity_offset=-1024.0).image
    got = preprocess_arrays(as_float, g, [], "CT", cfg, intensity_offset=-1024.0).image
    assert np.array_equal(as_float, keep)
    # a float image of whole numbers is stored as the integer one is (int16, rounded after resampling)
    assert got.dtype == want.dtype == np.int16 and np.array_equal(got, want)
