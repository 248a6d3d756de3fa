"""Canonical form and exact hash: orientation, dtype and format do not matter; content does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.dedup.canonical import (
    RAS,
    block_sample,
    body_threshold,
    canonicalize,
    grid_factors,
    ras_view,
)
from curator.dedup.hashing import exact_hash
from curator.testing import perturb as P
from curator.testing.convert import roundtrip


@pytest.mark.parametrize("op", ["flip0", "flip1", "flip2", "perm102", "perm201", "perm120"])
def test_ras_view_undoes_flips_and_permutations(phantoms, op):
    (g, a), _ = phantoms["p11"]
    if op.startswith("flip"):
        g2, a2 = P.flip_axis(g, a, int(op[-1]))
    else:
        g2, a2 = P.permute(g, a, tuple(int(x) for x in op[4:]))
    v1, r1 = ras_view(a, g)
    v2, r2 = ras_view(a2, g2)
    assert np.array_equal(v1, v2)
    assert r1.mismatch(r2) is None
    assert r2.orientation == "RAS"


def test_exact_hash_ignores_orientation_dtype_format_and_header(phantoms, tmp_path: Path):
    (g, a), _ = phantoms["p11"]
    ref = exact_hash(a, g)
    copies = [P.flip_axis(g, a, 0), P.permute(g, a, (2, 0, 1)), P.as_dtype(g, a, np.float32),
              P.as_dtype(g, a, np.int32), P.shift_origin(g, a, (10.0, -3.0, 99.0)),
              roundtrip(g, a, "nrrd", tmp_path), roundtrip(*P.flip_axis(g, a, 1), "dicom", tmp_path / "d"),
              (g, np.asfortranarray(a))]
    assert all(exact_hash(a2, g2) == ref for g2, a2 in copies)


def test_exact_hash_does_not_depend_on_memory_order(phantoms):
    """Readers keep native (Fortran) order; float sums must not change with the layout."""
    (g, a), _ = phantoms["p11"]
    f = a.astype(np.float32) * np.float32(1.1)
    assert exact_hash(np.asfortranarray(f), g) == exact_hash(np.ascontiguousarray(f), g)


def test_exact_hash_sees_one_changed_voxel_and_other_scans(phantoms):
    (g, a), _ = phantoms["p11"]
    b = a.copy()
    b[10, 20, 5] += 1
    assert exact_hash(b, g) != exact_hash(a, g)
    (g2, a2), _ = phantoms["p12"]
    assert exact_hash(a2, g2) != exact_hash(a, g)


def test_exact_hash_sees_a_left_right_or_slice_order_mirror_under_a_stale_header(phantoms):
    """The hash projects along the anterior axis only: voxels mirrored along either other axis
    with the header left as it was (left/right swapped, slices reversed) are another scan."""
    from nibabel.orientations import io_orientation, ornt_transform

    (g, a), _ = phantoms["p11"]
    tr = ornt_transform(io_orientation(g.matrix), RAS)
    mirrored = [axis for axis in range(3) if int(tr[axis, 0]) != 1]
    assert len(mirrored) == 2
    for axis in mirrored:
        assert exact_hash(np.flip(a, axis=axis), g) != exact_hash(a, g)


def test_block_sample_is_a_block_mean_for_small_blocks():
    a = np.arange(6 * 4 * 3, dtype=np.int16).reshape(6, 4, 3)
    out = block_sample(a, (2, 2, 1))
    expect = a.reshape(3, 2, 2, 2, 3).mean(axis=(1, 3))
    assert np.allclose(out, expect)


def test_grid_factors_bound_the_grid():
    f = grid_factors((512, 512, 300), (0.8, 0.8, 1.5), 262_144)
    n = np.prod(np.array((512, 512, 300)) // np.array(f))
    assert 0.5 * 262_144 < n <= 1.1 * 262_144
    assert grid_factors((40, 40, 10), (1.0, 1.0, 1.0), 262_144) == (1, 1, 1)


def test_body_threshold_drops_padding_but_not_clipped_air(phantoms):
    (_g, a), _ = phantoms["p11"]
    padded = a.copy()
    padded[:8] = -3024  # outside the field of view
    t_orig = body_threshold(a)
    assert -900 < t_orig < -120  # between air and fat
    assert abs(body_threshold(padded) - t_orig) < 60
    clipped = np.clip(padded, -1000, 1000)  # padding and air collapse onto -1000
    assert abs(body_threshold(clipped) - t_orig) < 60


@pytest.mark.parametrize("make", [
    lambda g, a: P.offset(g, a, 1024),
    lambda g, a: P.clip(g, a, -1000, 1000),
    lambda g, a: P.crop_to_body(g, a, -500),
    lambda g, a: P.add_noise(g, a, 30.0, seed=3),
])
def test_body_mask_is_stable_under_intensity_changes_and_crops(phantoms, make):
    (g, a), _ = phantoms["p12"]
    c1 = canonicalize(a, g)
    g2, a2 = make(g, a)
    c2 = canonicalize(a2, g2)
    v1 = c1.body.sum() * np.prod(c1.spacing)
    v2 = c2.body.sum() * np.prod(c2.spacing)
    assert v2 == pytest.approx(v1, rel=0.03)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.bool_])
def test_exact_hash_is_the_same_for_the_same_values_in_any_dtype(dtype) -> None:
    """8/16-bit scans are summed in int32 (faster), everything else in float64: the same values must
    hash the same in every dtype and memory order, extremes included (a whole plane at the
    maximum: the largest sums, where an int32 overflow would show)."""
    from curator.io.volume import Geometry

    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype is not np.bool_ else None
    lo, hi = (info.min, info.max) if info else (0, 1)
    a = rng.integers(lo, int(hi) + 1, size=(300, 41, 200), dtype=np.int64).astype(dtype)
    a[:, :, 7] = hi
    g = Geometry.from_affine(a.shape, np.diag([-0.8, 0.8, 1.5, 1.0]))
    ref = exact_hash(a.astype(np.int64), g)
    assert exact_hash(a, g) == ref
    assert exact_hash(np.asfortranarray(a), g) == ref
    assert exact_hash(a.astype(np.float64), g) == ref
    b = a.copy()
    b[5, 6, 7] = lo  # one voxel of one line changed
    assert exact_hash(b, g) != ref


@pytest.mark.parametrize("mode", ["nearest", "constant"])
def test_product_lattice_sampling_matches_map_coordinates(mode: str) -> None:
    """The hashes sample their lattices by matrix products of per-axis linear weights: the same
    values as scipy's point-by-point ``map_coordinates(order=1)``, inside and beyond the edges."""
    from scipy import ndimage

    from curator.dedup.hashing import _linear_weights, _trilinear

    v = np.random.default_rng(0).normal(size=(7, 5, 6)).astype(np.float32)
    axes = [np.linspace(-1.7, n + 0.6, 13) for n in v.shape]
    expect = ndimage.map_coordinates(v, np.meshgrid(*axes, indexing="ij"), order=1, mode=mode, cval=0.0)
    got = _trilinear(v, [_linear_weights(x, n, mode) for x, n in zip(axes, v.shape, strict=True)])
    assert np.allclose(got, expect, atol=1e-5)
    assert np.allclose(_linear_weights(np.array([0.0, 2.5, 4.0]), 1, mode).sum(axis=1), [1, 0, 0] if mode == "constant" else 1)


def test_thumbnail_quantiles_are_the_levels_of_a_search_in_grid_order() -> None:
    """Quantiles are looked up in sorted order (64-bit packed keys): the levels must equal a plain
    search of every voxel — negative values, -0.0, ties from a clipping window included."""
    from curator.dedup.thumbnail import quantiles

    a = np.random.default_rng(1).normal(0, 400, (50, 40, 30)).astype(np.float32)
    a = np.clip(a, -300, 500)
    a[0, 0, :5] = -0.0
    flat = a.ravel()
    picked = np.sort(flat[:: max(1, flat.size // 65_536)])
    edges = picked[(np.arange(1, 256) * picked.size) // 256]
    assert np.array_equal(quantiles(a), np.searchsorted(edges, a, side="right").astype(np.uint8))
    assert np.array_equal(quantiles(np.asfortranarray(a)), quantiles(a))


def test_exact_hash_sees_a_constant_offset_whatever_the_line_length() -> None:
    """A CT copy stored with +1024 is not the same voxels. With sums kept modulo 2**16 (16-bit
    lanes, tried for speed) the offset vanished from every 64-voxel line (1024 × 64 = 65536) and
    the copy hashed as identical."""
    from curator.io.volume import Geometry

    a = np.random.default_rng(2).integers(-1000, 1500, size=(20, 64, 10)).astype(np.int16)
    g = Geometry.from_affine(a.shape, np.diag([1.0, 1.0, 2.0, 1.0]))  # axis 1 (64 voxels) is anterior
    for offset in (1024, 2048, -1024):
        assert exact_hash(a + np.int16(offset), g) != exact_hash(a, g)
