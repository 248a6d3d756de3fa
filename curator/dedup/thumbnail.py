"""Verification thumbnails: the canonical analysis grid of a scan, its voxels as intensity quantiles.

A thumbnail keeps only what verification needs: the order of the scan's intensities
(each voxel's quantile over the scan, 0..255), the body mask, the voxel size and the
header's world position of voxel 0. Quantiles make two copies of one scan compare equal
under offsets, scaling, dtype changes and clipping windows. The grid holds about
``grid_voxels`` voxels (≈ 64³ by default: a 512×512×300 CT at 0.8×0.8×1.5 mm becomes
56×56×60 voxels of 7.2×7.2×7.5 mm, 167 kB compressed).

>>> import numpy as np
>>> from curator.dedup.canonical import canonicalize
>>> from curator.io.volume import Geometry
>>> a = np.random.default_rng(0).normal(0, 1, (60, 50, 40)).astype(np.float32); a[10:50, 5:45, :] += 8
>>> t = make_thumbnail(canonicalize(a, Geometry.from_affine(a.shape, np.diag([1.0, 1.0, 2.0, 1.0])), 8000))
>>> t.ranks.dtype, t.ranks.size <= 8000 * 1.1, Thumbnail.from_bytes(t.to_bytes()) == t
(dtype('uint8'), True, True)
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from curator.dedup.canonical import Canonical


@dataclass(frozen=True, eq=False)
class Thumbnail:
    ranks: NDArray[np.uint8]  # [x, y, z] RAS: intensity quantile (0..255) over the whole scan
    body: NDArray[np.bool_]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # world (RAS mm) centre of voxel 0, as the header says

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Thumbnail) and self.spacing == other.spacing and self.origin == other.origin
                and np.array_equal(self.ranks, other.ranks) and np.array_equal(self.body, other.body))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, ranks=self.ranks, body=np.packbits(self.body),
                            spacing=np.asarray(self.spacing, dtype=np.float64),
                            origin=np.asarray(self.origin, dtype=np.float64))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Thumbnail:
        with np.load(io.BytesIO(data)) as z:
            sp, o, ranks = z["spacing"], z["origin"], np.asarray(z["ranks"], dtype=np.uint8)
            body = np.unpackbits(z["body"], count=ranks.size).reshape(ranks.shape).astype(bool)
            return cls(ranks, body, (float(sp[0]), float(sp[1]), float(sp[2])), (float(o[0]), float(o[1]), float(o[2])))


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    factor = np.asarray(spacing, dtype=np.float64) / np.asarray(target, dtype=np.float64)
    return tuple(max(1, round(n * f)) for n, f in zip(shape, factor, strict=True))


def grid_after(shape: tuple[int, ...], spacing: tuple[float, ...], origin: tuple[float, ...],
               target: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(spacing, origin) of :func:`resample_to`'s output grid (voxel-centre convention, same extent)."""
    out = resampled_shape(shape, spacing, target)
    zoom = np.asarray(shape, dtype=np.float64) / np.asarray(out)
    sp = np.asarray(spacing) * zoom
    o = np.asarray(origin) + (zoom - 1) / 2 * np.asarray(spacing)
    return tuple(float(x) for x in sp), tuple(float(x) for x in o)


def resample_to(a: NDArray[np.float32], spacing: tuple[float, ...], target: tuple[float, ...],
                order: int = 1) -> NDArray[np.float32]:
    """Resample an array from ``spacing`` to about ``target`` mm (same extent), smoothing first when coarser."""
    shape = resampled_shape(a.shape, spacing, target)
    if shape == a.shape:
        return a
    factor = np.asarray(shape, dtype=np.float64) / np.asarray(a.shape)
    sigma = np.where(factor < 1, (1 / factor) / 2.355, 0.0)  # FWHM of the output voxel
    src = ndimage.gaussian_filter(a, sigma, mode="nearest") if np.any(sigma > 0) else a
    zoom = np.asarray(a.shape, dtype=np.float64) / np.asarray(shape)
    # output voxel centres in input index coordinates (grid mode: same physical extent)
    out = ndimage.affine_transform(src, zoom, offset=(zoom - 1) / 2, output_shape=shape, order=order, mode="nearest")
    return np.asarray(out, dtype=np.float32)


def field_of_view_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[float, float, float]:
    """Extent of a grid along its (RAS) axes, mm."""
    return tuple(float(n * s) for n, s in zip(shape, spacing, strict=True))  # type: ignore[return-value]


def axial_profile(t: Thumbnail, n: int = 8) -> NDArray[np.float32]:
    """A scan's mean intensity quantile along z on an ``n``×``n`` in-plane grid, centred and of
    unit norm (zeros for a flat scan): what the small-scan tier ranks neighbours by. Unchanged
    by resampling, offsets, clipping, noise and header fixes; moved little by a z-crop."""
    proj = t.ranks.astype(np.float32).mean(axis=2)
    out = ndimage.zoom(proj, (n / proj.shape[0], n / proj.shape[1]), order=1, grid_mode=True, mode="nearest")
    out = out - out.mean()
    norm = float(np.linalg.norm(out))
    return np.asarray((out / norm if norm > 1e-6 else out * 0).ravel(), dtype=np.float32)


def make_thumbnail(c: Canonical) -> Thumbnail:
    """The verification thumbnail of a canonical scan (its analysis grid, values as quantiles)."""
    return Thumbnail(quantiles(c.array), c.body.copy(), c.spacing, c.origin)


def quantiles(a: NDArray[np.float32], levels: int = 256, sample: int = 65_536) -> NDArray[np.uint8]:
    """Each voxel's intensity quantile (0..levels-1), from quantile edges of a systematic sample.

    Monotone in the intensity (equal values share a level), so it keeps the order that
    verification compares; a sort of ``sample`` values instead of the whole grid. The levels are
    looked up for the voxels in sorted order (:func:`_sorted_order`), where the binary search
    follows the data: ≈ 2.5× faster than in grid order.
    """
    flat = np.ascontiguousarray(a, dtype=np.float32).ravel()
    step = max(1, flat.size // sample)
    picked = np.sort(flat[::step])
    edges = picked[(np.arange(1, levels) * picked.size) // levels]
    order = _sorted_order(flat)
    out = np.empty(flat.size, dtype=np.uint8)
    out[order] = np.searchsorted(edges, flat[order], side="right")
    return out.reshape(a.shape)


def _sorted_order(v: NDArray[np.float32]) -> NDArray[np.intp]:
    """``np.argsort(v)`` for float32 without NaNs, by numpy's vectorised sort of 64-bit keys: the
    value's bits made order-preserving as an unsigned integer, above the index (argsort itself
    is ≈ 10× slower here)."""
    bits = v.view(np.uint32)
    key = np.where(bits >> 31, ~bits, bits | np.uint32(0x8000_0000)).astype(np.uint64)
    packed = np.sort((key << np.uint64(32)) | np.arange(v.size, dtype=np.uint64))
    return (packed & np.uint64(0xFFFF_FFFF)).astype(np.intp)
