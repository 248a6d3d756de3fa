"""Verification's masked normalised cross-correlation against scikit-image's, which it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.registration._masked_phase_cross_correlation import cross_correlate_masked

from curator.dedup.verify import _coarse_shift, masked_ncc


def skimage_ncc(a: np.ndarray, b: np.ndarray, ratio: float) -> np.ndarray:
    """skimage's full-mask NCC, indexed like ``masked_ncc`` (displacement of b's voxel 0 in a)."""
    out = cross_correlate_masked(b, a, np.ones(b.shape, bool), np.ones(a.shape, bool), axes=(0, 1, 2), mode="full",
                                 overlap_ratio=ratio)
    return np.asarray(out[::-1, ::-1, ::-1])


@pytest.mark.parametrize(("sa", "sb", "ratio"), [((20, 17, 9), (13, 22, 11), 0.1), ((24, 24, 16), (24, 24, 16), 0.3),
                                                 ((7, 5, 3), (9, 4, 6), 0.1), ((1, 5, 3), (2, 4, 1), 0.0)])
def test_masked_ncc_is_skimages(sa: tuple[int, ...], sb: tuple[int, ...], ratio: float) -> None:
    rng = np.random.default_rng(sum(sa) + sum(sb))
    a = ndimage.gaussian_filter(rng.normal(size=sa), 1.0).astype(np.float32) * 100 + 500
    b = rng.normal(size=sb).astype(np.float32) * 50
    a[: max(1, sa[0] // 4)] = -1024.0  # flat padding: overlaps of it alone have no correlation
    ours, ref = masked_ncc(a, b, ratio), skimage_ncc(a, b, ratio)
    assert ours.shape == ref.shape == tuple(x + y - 1 for x, y in zip(sa, sb, strict=True))
    assert np.abs(ours - ref).max() < 1e-3  # skimage sums in float32: ~1e-4 off where values are large
    # and the exact value, displacement by displacement (ours sums in float64)
    for d in np.ndindex(*ours.shape):
        shift = np.asarray(d) - (np.asarray(sb) - 1)
        lo_a, hi_a = np.maximum(shift, 0), np.minimum(np.asarray(sa), shift + np.asarray(sb))
        x = a[tuple(slice(lo, hi) for lo, hi in zip(lo_a, hi_a, strict=True))].astype(np.float64)
        y = b[tuple(slice(lo - s, hi - s) for lo, hi, s in zip(lo_a, hi_a, shift, strict=True))].astype(np.float64)
        if ours[d] != 0.0:
            assert ours[d] == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1], abs=1e-9)


def test_coarse_shift_finds_a_crop_in_its_scan() -> None:
    rng = np.random.default_rng(7)
    scan = ndimage.gaussian_filter(rng.normal(size=(60, 52, 40)), 2.0).astype(np.float32)
    crop = scan[10:50, 6:40, 8:36]
    assert tuple(_coarse_shift(scan, crop, 0.1)) == (10, 6, 8)
    assert tuple(_coarse_shift(crop, scan, 0.1)) == (-10, -6, -8)
