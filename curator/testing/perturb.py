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


def resample(g: Geometry, a: Arr, spacing: tuple[float, float, float], order: int = 1) -> tuple[Geometry, Arr]:
    """Resample to ``spacing`` over the same physical extent (memory-light: no coordinate meshes).

    Smooths first when the new grid is coarser (as resampling tools with anti-aliasing do).
    """
    old = np.array(g.spacing)
    new = np.asarray(spacing, dtype=np.float64)
    shape = tuple(max(1, round(e)) for e in old * np.array(a.shape) / new)
    zoom = np.array(a.shape, dtype=np.float64) / np.array(shape)
    src = a.astype(np.float32)
    sigma = np.where(zoom > 1, zoom / 2.355, 0.0)
    if np.any(sigma > 0):
        src = ndimage.gaussian_filter(src, sigma, mode="nearest")
    start = (zoom - 1) / 2  # first new voxel centre, in old index coordinates
    out = ndimage.affine_transform(src, zoom, offset=start, output_shape=shape, order=order, mode="nearest")
    if np.issubdtype(a.dtype, np.integer):
        out = np.rint(out).astype(a.dtype)
    m = g.matrix.copy()
    m[:3, :3] = g.direction @ np.diag(old * zoom)
    m[:3, 3] = g.voxel_to_world(start)[0]
    return Geometry.from_affine(shape, m), out


def shift_origin(g: Geometry, a: Arr, mm: tuple[float, float, float]) -> tuple[Geometry, Arr]:
    """A wrong origin: the header's translation moved by ``mm`` (voxels unchanged)."""
    m = g.matrix.copy()
    m[:3, 3] = m[:3, 3] + np.asarray(mm, dtype=np.float64)
    return Geometry.from_affine(a.shape, m), a


def body_box(a: Arr, threshold: float, margin: int = 2) -> tuple[slice, slice, slice]:
    """Bounding box (+ ``margin`` voxels) of the voxels above ``threshold``."""
    idx = np.nonzero(a > threshold)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))  # type: ignore[return-value]
                 for i, n in zip(idx, a.shape, strict=True))


def crop_to_body(g: Geometry, a: Arr, threshold: float, axes: tuple[int, ...] = (0, 1)) -> tuple[Geometry, Arr]:
    """Crop ``axes`` to the body's bounding box (what 'cropped to the body' releases do)."""
    box = body_box(a, threshold)
    full = tuple(box[i] if i in axes else slice(0, a.shape[i]) for i in range(3))
    return crop(g, a, full)  # type: ignore[arg-type]


def keep_fraction(g: Geometry, a: Arr, axis: int, fraction: float, where: float = 0.5) -> tuple[Geometry, Arr]:
    """Keep ``fraction`` of the slices along ``axis`` (at least one), centred at ``where`` (0 = start, 1 = end)."""
    n = a.shape[axis]
    k = max(1, int(np.ceil(n * fraction)))
    start = round((n - k) * where)
    box = [slice(0, s) for s in a.shape]
    box[axis] = slice(start, start + k)
    return crop(g, a, tuple(box))  # type: ignore[arg-type]


def second_sequence(a: Arr, seed: int = 0, labels: NDArray[Any] | None = None,
                    values: dict[int, float] | None = None, noise: float = 0.05) -> Arr:
    """Another contrast of the same anatomy (e.g. T2 beside T1), as a different series of one patient.

    The anatomy is kept (smoothed intensities pass through a non-monotone transfer curve, so
    tissues swap brightness), label structures can be given new mean values, and the scanner
    noise is drawn afresh: what two sequences of one acquisition session share, and no more.
    """
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(a.astype(np.float32), 1.0)
    knots = np.percentile(s, [0, 20, 40, 60, 80, 100])
    spread = float(knots[-1] - knots[0]) or 1.0
    levels = np.array([0.0, 0.8, 0.3, 1.0, 0.45, 0.7]) * spread  # not monotone: contrast changes
    out = np.interp(s, knots, levels).astype(np.float32)
    if labels is not None and values:
        for v, level in values.items():
            m = labels == v
            if m.any():
                out[m] += np.float32(level - float(np.median(out[m])))
    return out + rng.normal(0, noise * spread, out.shape).astype(np.float32)
