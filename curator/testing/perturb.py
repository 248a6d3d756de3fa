"""Geometry-correct perturbations of a scan: what public datasets do to each other's scans.

Every function takes ``(geometry, array)`` and returns a new ``(geometry, array)``; the
header stays correct (the voxels keep their world position) unless the function says
otherwise (:func:`stale_origin`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from curator.io.volume import Geometry

Arr = NDArray[Any]


def crop(g: Geometry, a: Arr, box: tuple[slice, slice, slice]) -> tuple[Geometry, Arr]:
    """Crop with the origin moved to the new first voxel (a correct header)."""
    starts = [s.start or 0 for s in box]
    out = a[box].copy()
    m = g.matrix.copy()
    m[:3, 3] = g.voxel_to_world(np.array(starts, dtype=np.float64))[0]
    return Geometry.from_affine(out.shape, m), out


def stale_origin(g: Geometry, a: Arr, box: tuple[slice, slice, slice]) -> tuple[Geometry, Arr]:
    """Crop but keep the old origin: the header is now wrong by the cropped offset."""
    out = a[box].copy()
    return Geometry.from_affine(out.shape, g.matrix), out


def flip_axis(g: Geometry, a: Arr, axis: int) -> tuple[Geometry, Arr]:
    """Reverse one array axis and fix the header (orientation code changes, world does not)."""
    out = np.flip(a, axis=axis).copy()
    m = g.matrix.copy()
    n = a.shape[axis]
    m[:3, 3] = m[:3, 3] + m[:3, axis] * (n - 1)
    m[:3, axis] = -m[:3, axis]
    return Geometry.from_affine(out.shape, m), out


def permute(g: Geometry, a: Arr, order: tuple[int, int, int]) -> tuple[Geometry, Arr]:
    """Transpose the array axes and the affine's columns together."""
    out = np.transpose(a, order).copy()
    m = g.matrix.copy()
    m[:3, :3] = m[:3, list(order)]
    return Geometry.from_affine(out.shape, m), out


def resample_nearest(g: Geometry, a: Arr, spacing: tuple[float, float, float]) -> tuple[Geometry, Arr]:
    """Nearest-neighbour resampling to ``spacing`` over the same physical extent."""
    return _resample(g, a, spacing, order=0)


def resample_linear(g: Geometry, a: Arr, spacing: tuple[float, float, float]) -> tuple[Geometry, Arr]:
    return _resample(g, a, spacing, order=1)


def _resample(g: Geometry, a: Arr, spacing: tuple[float, float, float], order: int) -> tuple[Geometry, Arr]:
    old = np.array(g.spacing)
    new = np.asarray(spacing, dtype=np.float64)
    extent = old * np.array(a.shape)
    shape = tuple(max(1, round(float(e))) for e in extent / new)
    # voxel centres of the new grid in old index coordinates (same first-voxel corner)
    coords = [(np.arange(n) + 0.5) * (ns / os_) - 0.5 for n, ns, os_ in zip(shape, new, old, strict=True)]
    mesh = np.meshgrid(*coords, indexing="ij")
    out = ndimage.map_coordinates(a.astype(np.float32), mesh, order=order, mode="nearest")
    if np.issubdtype(a.dtype, np.integer):
        out = np.rint(out).astype(a.dtype)
    m = g.matrix.copy()
    d = g.direction
    m[:3, :3] = d @ np.diag(new)
    m[:3, 3] = g.voxel_to_world(np.array([c[0] for c in coords]))[0]
    return Geometry.from_affine(shape, m), out.astype(a.dtype, copy=False)


def offset(g: Geometry, a: Arr, value: float) -> tuple[Geometry, Arr]:
    return g, (a.astype(np.int32) + int(value)) if np.issubdtype(a.dtype, np.integer) else a + value


def clip(g: Geometry, a: Arr, lo: float, hi: float) -> tuple[Geometry, Arr]:
    return g, np.clip(a, lo, hi).astype(a.dtype)


def add_noise(g: Geometry, a: Arr, sigma: float, seed: int = 0) -> tuple[Geometry, Arr]:
    rng = np.random.default_rng(seed)
    return g, (a.astype(np.float32) + rng.normal(0, sigma, a.shape).astype(np.float32))


def as_dtype(g: Geometry, a: Arr, dtype: Any) -> tuple[Geometry, Arr]:
    return g, a.astype(dtype)
