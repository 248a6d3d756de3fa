"""Reading a case's image slab by slab as network input: normalisation + resampling to the model grid.

The store's ``attrs["normalisation"]`` says how stored values relate to network input.
Accepted forms (anything else is a ``normalisation_unknown`` problem)::

    {}                                         stored values are physical (HU for CT)
    {"clip": [lo, hi], "mean": m, "std": s}    network input = (clip(x) - m) / s
    {..., "scale": k}                          physical = stored x * k (preprocess's float16/int16
                                               storage of MR), then as above
    {..., "applied": true}                     stored values already are network input
                                               (physical ≈ x * s + m)

A model may instead declare its own ``intensity: {clip, mean, std}`` on physical values
(the demo models do): then stored values are turned back into physical units first. Or
``intensity: {zscore: image | nonzero}``, nnU-Net's per-image z-score (ZScoreNormalization):
the mean and std of the image's own physical values, over the bounding box of its nonzero
voxels (``image``), or over those voxels with the holes inside them filled (``nonzero``,
nnU-Net's ``use_mask_for_norm``; voxels outside that mask become 0), computed in one pass
when the reader is made (:func:`zscore`).

Resampling to the model's spacing is separable linear interpolation, computed per slab
(rows along the last axis), so the whole volume is never held as float32; label outputs
go back to the store grid by nearest neighbour (:func:`to_source_grid`).

>>> import numpy as np
>>> r = SlabReader(np.arange(24, dtype=np.float32).reshape(2, 3, 4), {}, {})
>>> r.shape, r.slab(1, 3).shape
((2, 3, 4), (2, 3, 2))
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import InputError

F32 = NDArray[np.float32]


def _affine(norm: dict[str, Any]) -> tuple[tuple[float, float] | None, float, float]:
    clip = norm.get("clip")
    lo_hi = (float(clip[0]), float(clip[1])) if clip is not None else None
    return lo_hi, float(norm.get("mean", 0.0)), float(norm.get("std", 1.0)) or 1.0


def check_normalisation(norm: dict[str, Any]) -> None:
    unknown = set(norm) - {"clip", "mean", "std", "scale", "applied", "kind", "modality", "percentiles", "source"}
    if unknown:
        raise InputError("normalisation_unknown", f"the store's normalisation has unknown keys {sorted(unknown)}",
                         remedy="re-run preprocess, or give the models an explicit `intensity:` spec")


def physical(raw: NDArray[Any], norm: dict[str, Any]) -> F32:
    """Stored values → physical values (HU for CT) as float32."""
    x = np.asarray(raw, dtype=np.float32)
    scale = float(norm.get("scale", 1.0))
    if scale != 1.0 and not norm.get("applied"):
        x = x * np.float32(scale)
    if norm.get("applied"):
        _, mean, std = _affine(norm)
        x = x * np.float32(std) + np.float32(mean)
    return x


def network_input(raw: NDArray[Any], norm: dict[str, Any], intensity: dict[str, Any]) -> F32:
    """Stored values → the model's input (see module docstring; a ``zscore`` intensity must be
    resolved to its mean and std first, :func:`zscore`)."""
    if intensity:  # the model's own normalisation of physical values
        x = physical(raw, norm)
        lo_hi, m, s = _affine(intensity)
        if lo_hi:
            x = np.clip(x, *lo_hi)
        return ((x - np.float32(m)) / np.float32(s)).astype(np.float32)
    if norm.get("applied"):
        return np.asarray(raw, dtype=np.float32)
    x = physical(raw, norm)
    clip, mean, std = _affine(norm)
    if clip:
        x = np.clip(x, *clip)
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


ZSCORE_MODES = ("image", "nonzero")


def zscore(array: Any, norm: dict[str, Any], mode: str, rows: int = 64
           ) -> tuple[dict[str, float], NDArray[np.bool_] | None]:
    """nnU-Net's ZScoreNormalization of one image, read ``rows`` z-rows at a time:
    ``({mean, std}, mask)``. ``image``: over the bounding box of the nonzero voxels (nnU-Net
    crops to it first), mask None; ``nonzero``: over the nonzero voxels with their holes filled
    (nnU-Net's ``create_nonzero_mask``), which is the mask outside which the input is 0. Statistics
    in float64, combined slab by slab (Chan et al.), std the population's as numpy's."""
    shape = tuple(int(n) for n in array.shape)
    keep = np.zeros(shape, bool) if mode == "nonzero" else None
    seen = [np.zeros(n, bool) for n in shape]
    count, mean, m2 = 0, 0.0, 0.0
    for z0 in range(0, shape[2], rows):
        x = physical(array[:, :, z0:z0 + rows], norm)
        nz = x != 0
        if keep is not None:
            keep[:, :, z0:z0 + rows] = nz
        seen[0] |= nz.any(axis=(1, 2))
        seen[1] |= nz.any(axis=(0, 2))
        seen[2][z0:z0 + rows] = nz.any(axis=(0, 1))
        v = x[nz].astype(np.float64)
        if v.size:
            count, mean, m2 = _combine((count, mean, m2), (v.size, float(v.mean()), float(((v - v.mean()) ** 2).sum())))
    if keep is not None:
        keep = fill_holes(keep)
        total = int(keep.sum())
    else:
        total = math.prod(int(np.flatnonzero(s)[-1] - np.flatnonzero(s)[0] + 1) if s.any() else 0 for s in seen)
    count, mean, m2 = _combine((count, mean, m2), (total - count, 0.0, 0.0))  # the zeros inside
    std = math.sqrt(m2 / count) if count else 1.0
    return {"mean": mean, "std": max(std, 1e-8)}, keep


def _combine(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """(count, mean, sum of squared deviations) of two groups together."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    if not n:
        return 0, 0.0, 0.0
    d = mb - ma
    return n, ma + d * nb / n, sa + sb + d * d * na * nb / n


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` with every background region that does not reach the border filled (scipy's
    ``binary_fill_holes``, face-connected background), by connected components."""
    import cc3d

    bg = cc3d.connected_components(~mask, connectivity=6)
    faces = np.concatenate([f.ravel() for a in range(3) for f in (np.take(bg, 0, a), np.take(bg, -1, a))])
    outside = np.unique(faces)
    return mask | ((bg != 0) & ~np.isin(bg, outside[outside != 0]))


def _coords(n_dst: int, n_src: int) -> NDArray[np.float64]:
    """Source coordinate of each destination index (grids share their extent)."""
    return (np.arange(n_dst, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5


def _interp(arr: F32, axis: int, n_dst: int, n_src: int, offset: int = 0,
            rows: tuple[int, int] | None = None) -> F32:
    """Linear interpolation along ``axis``; ``arr`` holds source rows from ``offset``."""
    a, b = rows or (0, n_dst)
    c = np.clip(_coords(n_dst, n_src)[a:b], 0, n_src - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w = (c - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = len(w)
    w = w.reshape(shape)
    lo = np.take(arr, i0 - offset, axis=axis)
    hi = np.take(arr, i1 - offset, axis=axis)
    return (lo * (1 - w) + hi * w).astype(np.float32)


def intensity_key(intensity: dict[str, Any]) -> str:
    """``intensity`` by value: ``{clip: [-200, 300], mean: 50}`` and ``{mean: 50.0, clip: [-200.0,
    300.0]}`` are one normalisation (numbers as floats, keys sorted)."""
    def canon(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [canon(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        return v

    return json.dumps({str(k): canon(v) for k, v in intensity.items()}, sort_keys=True)


class SlabReader:
    """Network-input slabs (rows along the last axis) of a stored image on the model's grid."""

    def __init__(self, array: Any, norm: dict[str, Any], intensity: dict[str, Any],
                 src_spacing: tuple[float, ...] | None = None, dst_spacing: tuple[float, ...] | None = None,
                 tolerance: float = 0.1, *, per_member: bool = False) -> None:
        self.array, self.norm, self.intensity = array, norm, intensity
        # True: each model of an ensemble gets its input normalised by its own `intensity` (the
        # stage's reader); False: every model gets this reader's input as it is (the caller's choice)
        self.per_member = per_member
        self._args = (src_spacing, dst_spacing, tolerance)
        self._siblings: dict[str, SlabReader] = {intensity_key(intensity): self}
        self.mask: NDArray[np.bool_] | None = None  # input is 0 outside (zscore: nonzero)
        if intensity.get("zscore"):
            stats, self.mask = zscore(array, norm, str(intensity["zscore"]))
            self.intensity = {k: v for k, v in intensity.items() if k != "zscore"} | stats
        self.src_shape: tuple[int, int, int] = tuple(int(n) for n in array.shape)  # type: ignore[assignment]
        self.resampled = False
        self.shape = self.src_shape
        if src_spacing and dst_spacing:
            ratios = [s / d for s, d in zip(src_spacing, dst_spacing, strict=True)]
            if any(abs(r - 1) > tolerance for r in ratios):
                self.resampled = True
                self.shape = tuple(max(1, int(round(n * r))) for n, r in  # type: ignore[assignment]  # noqa: RUF046 - r may be numpy
                                   zip(self.src_shape, ratios, strict=True))
        self.spacing = tuple(dst_spacing) if self.resampled and dst_spacing else tuple(src_spacing or (1.0,) * 3)
        self._warm: dict[tuple[int, int], F32] = {}

    def for_intensity(self, intensity: dict[str, Any]) -> SlabReader:
        """A reader of the same image on the same grid for a member that normalises it its own way
        (itself when ``intensity`` is its own, by value, or the reader is not ``per_member``); made
        once per normalisation."""
        if not self.per_member:
            return self
        key = intensity_key(intensity)
        if key not in self._siblings:
            self._siblings[key] = SlabReader(self.array, self.norm, dict(intensity), *self._args, per_member=True)
        return self._siblings[key]

    def warm(self, z0: int, z1: int) -> None:
        """Read rows [z0, z1) now (e.g. in a prefetch thread); the next ``slab(z0, z1)`` returns them."""
        self._warm[(z0, z1)] = self.slab(z0, z1)

    def slab(self, z0: int, z1: int) -> F32:
        """Rows [z0, z1) of the model-grid input; rows past the end repeat the last row."""
        if (z0, z1) in self._warm:
            return self._warm.pop((z0, z1))
        n = self.shape[2]
        a, b = min(z0, n - 1), min(z1, n)
        if not self.resampled:
            out = self._input(a, b)
        else:
            c = np.clip(_coords(n, self.src_shape[2])[a:b], 0, self.src_shape[2] - 1)
            s0, s1 = int(np.floor(c.min())), min(int(np.floor(c.max())) + 2, self.src_shape[2])
            raw = self._input(s0, s1)
            out = _interp(raw, 2, n, self.src_shape[2], offset=s0, rows=(a, b))
            out = _interp(out, 0, self.shape[0], self.src_shape[0])
            out = _interp(out, 1, self.shape[1], self.src_shape[1])
        if z1 > b:
            out = np.concatenate([out, np.repeat(out[..., -1:], z1 - max(b, z0), axis=2)], axis=2)
        return out[..., z0 - a:] if z0 > a else out

    def _input(self, a: int, b: int) -> F32:
        """Network input of stored rows [a, b) (normalised as nnU-Net does: before resampling)."""
        out = network_input(self.array[:, :, a:b], self.norm, self.intensity)
        if self.mask is not None:
            out[~self.mask[:, :, a:b]] = 0
        return out


def to_source_grid(arr: NDArray[Any], src_shape: tuple[int, ...]) -> NDArray[Any]:
    """Nearest-neighbour map of a model-grid array back onto the store grid."""
    if tuple(arr.shape) == tuple(src_shape):
        return arr
    idx = [np.clip(np.floor((np.arange(ns) + 0.5) * (nd / ns)).astype(np.int64), 0, nd - 1)
           for ns, nd in zip(src_shape, arr.shape, strict=True)]
    return arr[np.ix_(*idx)]


def to_model_index(i: int, n_src: int, n_dst: int) -> int:
    """The model-grid row nearest to store row ``i`` (and back, with the arguments swapped)."""
    return int(min(n_dst - 1, max(0, np.floor((i + 0.5) * n_dst / n_src))))
