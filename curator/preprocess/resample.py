"""Reorientation and resampling that keep every voxel where it was in physical space.

A grid is resampled along its own (reoriented) axes: output voxel ``x`` samples input
position ``(x + 0.5) · r − 0.5 + (n_in − n_out · r) / 2`` with ``r = target / source
spacing`` and ``n_out = round(n_in / r)`` — the output's extent is centred on the input's
(its edges coincide when ``n_out = n_in / r`` exactly; otherwise the remainder is split
between both ends, so no end samples beyond the data and a single slice stays where it
was). The output affine is ``A_in @ T`` with that same map ``T``, so world coordinates are
exact: the spacing is exactly the target and any residual obliquity stays in the direction
cosines.

Linear interpolation is separable and runs slab by slab along the last axis, so memory
stays near one float32 slab of the input plus the output (512 × 512 × 1000 CT: see
``benchmarks/preprocess.py``).

>>> import numpy as np
>>> from curator.io.volume import Geometry
>>> g = Geometry.from_affine((10, 10, 4), np.diag([2.0, 2.0, 6.0, 1.0]))
>>> out, r = target_grid(g, (1.0, 1.0, 3.0))
>>> out.shape, out.spacing
((20, 20, 8), (1.0, 1.0, 3.0))
>>> a = np.arange(400, dtype=np.float32).reshape(10, 10, 4)
>>> resample_image(a, r, out.shape, "linear", np.dtype(np.float32)).shape
(20, 20, 8)
"""

from __future__ import annotations

from typing import Any

import nibabel.orientations as nio
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from curator.io.volume import Geometry

SLAB = 16  # output planes per slab along the last axis


def reorient(array: NDArray[Any], geometry: Geometry, codes: str = "RAS") -> tuple[NDArray[Any], Geometry]:
    """Flip/transpose ``array`` so its axes point along ``codes`` (a view; no interpolation)."""
    start = nio.io_orientation(geometry.matrix)
    ornt = nio.ornt_transform(start, nio.axcodes2ornt(tuple(codes.upper())))
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, geometry
    out = nio.apply_orientation(array, ornt)
    affine = geometry.matrix @ nio.inv_ornt_aff(ornt, array.shape)
    return out, Geometry.from_affine(out.shape, affine)


def target_grid(geometry: Geometry, spacing: tuple[float, ...]) -> tuple[Geometry, tuple[float, float, float]]:
    """The grid of spacing ``spacing`` covering ``geometry``'s extent, and the per-axis ratios."""
    src = np.asarray(geometry.spacing)
    ratios = np.asarray(spacing, dtype=np.float64) / src
    shape = tuple(max(1, round(n / r)) for n, r in zip(geometry.shape, ratios, strict=True))
    t = np.eye(4)
    t[:3, :3] = np.diag(ratios)
    t[:3, 3] = [first_position(n, m, r) for n, m, r in zip(geometry.shape, shape, ratios, strict=True)]
    r3 = (float(ratios[0]), float(ratios[1]), float(ratios[2]))
    return Geometry.from_affine(shape, geometry.matrix @ t), r3


def _centring(n_in: int, n_out: int, r: float) -> float:
    """Shift (input voxels) that centres the output extent (n_out · r input voxels) on the input's
    (n_in); a remainder below 1e-9 voxel is float noise and taken as 0."""
    rest = (n_in - n_out * r) / 2.0
    return rest if abs(rest) > 1e-9 else 0.0


def first_position(n_in: int, n_out: int, r: float) -> float:
    """Input index position of output voxel 0."""
    return 0.5 * r - 0.5 + _centring(n_in, n_out, r)


def _positions(n_in: int, n_out: int, r: float) -> NDArray[np.float64]:
    return np.clip((np.arange(n_out) + 0.5) * r - 0.5 + _centring(n_in, n_out, r), 0, n_in - 1)


def _linear_weights(n_in: int, n_out: int, r: float) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    x = _positions(n_in, n_out, r)
    i0 = np.minimum(np.floor(x).astype(np.intp), max(n_in - 2, 0))
    return i0, (x - i0).astype(np.float32)


def nearest_index(n_in: int, n_out: int, r: float) -> NDArray[np.intp]:
    # (x + 0.5)·r is the position + 0.5 computed in one product, so ties (whole numbers at ratios
    # like 2/3) break the same way everywhere: a regular pattern of repeated input slices
    edge = (np.arange(n_out) + 0.5) * r + _centring(n_in, n_out, r)
    return np.clip(np.floor(edge).astype(np.intp), 0, n_in - 1)


def _lerp(a: NDArray[np.float32], i0: NDArray[np.intp], w: NDArray[np.float32], axis: int) -> NDArray[np.float32]:
    i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
    shape = [1, 1, 1]
    shape[axis] = len(i0)
    wb = w.reshape(shape)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i1, axis=axis)
    hi -= lo
    hi *= wb
    lo += hi
    return lo


def _cast(x: NDArray[np.floating[Any]], dtype: np.dtype[Any]) -> NDArray[Any]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def fortran_like(a: Any) -> bool:
    """True when the first axis varies fastest in memory (nibabel's and SimpleITK's reads):
    such arrays are processed through their C-ordered transpose, never copied to C order."""
    base = getattr(a, "a", a)  # a lazy wrapper (``_Shifted``) exposes its array as ``a``
    st: tuple[int, ...] = getattr(base, "strides", None) or ()
    return len(st) == 3 and abs(st[0]) < abs(st[2])


def _identity(i0: NDArray[np.intp], w: NDArray[np.float32], n_in: int) -> bool:
    return len(i0) == n_in and not w.any() and bool(np.array_equal(i0, np.arange(n_in)))


def resample_image(a: NDArray[Any], ratios: tuple[float, ...], out_shape: tuple[int, ...], method: str,
                   dtype: np.dtype[Any], clipped: list[int] | None = None) -> NDArray[Any]:
    """Resample an image (``linear``, ``cubic`` B-spline, or ``nearest``) into ``dtype``.

    The output keeps the input's memory order (Fortran in, Fortran out) so no full-volume
    transposing copy is ever made. ``linear`` and ``nearest`` stay inside the input's range;
    ``cubic`` overshoots next to sharp edges (ringing around metal), and an integer ``dtype``
    clips what falls beyond its range: their number is appended to ``clipped``.
    """
    if method == "nearest":
        idx = [nearest_index(n, m, r) for n, m, r in zip(a.shape, out_shape, ratios, strict=True)]
        got = _take_nearest(a, idx)
        return _cast(got, dtype) if dtype != got.dtype else got
    fortran = fortran_like(a)
    out = np.empty(out_shape, dtype=dtype, order="F" if fortran else "C")
    if method == "cubic":
        n = _cubic(a, ratios, out)
        if clipped is not None:
            clipped.append(n)
        return out
    weights = [_linear_weights(n, m, r) for n, m, r in zip(a.shape, out_shape, ratios, strict=True)]
    wz = weights[2]
    nz = a.shape[2]
    for k0 in range(0, out_shape[2], SLAB):
        k1 = min(k0 + SLAB, out_shape[2])
        z0 = int(wz[0][k0])
        z1 = min(int(wz[0][k1 - 1]) + 2, nz)
        s = np.asarray(a[:, :, z0:z1], dtype=np.float32)
        local = [weights[0], weights[1], (wz[0][k0:k1] - z0, wz[1][k0:k1])]
        # through the C-ordered transpose when Fortran-ordered (np.take writes C order); y, x, z
        # is the fastest order in both layouts (measured); identity axes (same spacing) are skipped
        s = s.T if fortran else s
        for ax in (1, 0, 2):
            i0, w = local[ax]
            if not _identity(i0, w, s.shape[2 - ax if fortran else ax]):
                s = _lerp(s, i0, w, 2 - ax if fortran else ax)
        res = _cast(s, dtype)
        out[:, :, k0:k1] = res.T if fortran else res
    return out


def _take_nearest(a: NDArray[Any], idx: list[NDArray[np.intp]]) -> NDArray[Any]:
    """``a[np.ix_(*idx)]`` in ``a``'s memory order (identity axes are plain slices)."""
    if not isinstance(a, np.ndarray):  # a lazy wrapper: gather only the voxels needed
        return np.asarray(a[np.ix_(*idx)])
    keys = tuple(slice(None) if len(i) == n and np.array_equal(i, np.arange(n)) else i
                 for i, n in zip(idx, a.shape, strict=True))
    if fortran_like(a):
        return _take_nearest_c(a.T, keys[::-1]).T
    return _take_nearest_c(a, keys)


def _take_nearest_c(a: NDArray[Any], keys: tuple[Any, ...]) -> NDArray[Any]:
    """Index axis by axis, outermost first (whole planes, then rows, then elements)."""
    out = a
    for ax, k in enumerate(keys):
        if not isinstance(k, slice):
            out = np.take(out, k, axis=ax)
    return out if out is not a else a.copy()


def _cubic(a: NDArray[Any], ratios: tuple[float, ...], out: NDArray[Any], margin: int = 8) -> int:
    """Cubic B-spline slab by slab (``margin`` extra planes make the slab seams negligible); the
    number of voxels beyond an integer ``out``'s range, clipped to it."""
    n_out = 0
    info = np.iinfo(out.dtype) if out.dtype.kind in "iu" else None
    r = np.asarray(ratios)
    nz = a.shape[2]
    zpos = _positions(nz, out.shape[2], ratios[2])
    for k0 in range(0, out.shape[2], SLAB):
        k1 = min(k0 + SLAB, out.shape[2])
        z0 = max(int(np.floor(zpos[k0])) - margin, 0)
        z1 = min(int(np.ceil(zpos[k1 - 1])) + margin + 1, nz)
        s = np.asarray(a[:, :, z0:z1], dtype=np.float32)
        offset = np.array([first_position(n, m, q) for n, m, q in zip(a.shape, out.shape, ratios, strict=True)])
        offset[2] += k0 * r[2] - z0
        res = ndimage.affine_transform(s, r, offset=offset, output_shape=(out.shape[0], out.shape[1], k1 - k0),
                                       order=3, mode="nearest", output=np.float32)
        if info is not None:
            n_out += int(np.count_nonzero((res < info.min - 0.5) | (res > info.max + 0.5)))
        out[:, :, k0:k1] = _cast(res, out.dtype)
    return n_out


def resample_labels(a: NDArray[Any], ratios: tuple[float, ...], out_shape: tuple[int, ...],
                    method: str = "nearest") -> NDArray[Any]:
    """Resample an integer label plane; never blends codes (``smooth``: one-hot linear + argmax)."""
    if method == "nearest":
        idx = [nearest_index(n, m, r) for n, m, r in zip(a.shape, out_shape, ratios, strict=True)]
        return _take_nearest(a, idx)
    return _labels_smooth(a, ratios, out_shape)


TIE = 1e-4  # weights this close are a tie (exact halves at even ratios, thirds in float32 sums)


def _labels_smooth(a: NDArray[Any], ratios: tuple[float, ...], out_shape: tuple[int, ...]) -> NDArray[Any]:
    """Each code's mask is resampled linearly inside its own bounding box; a voxel takes the code
    whose weight is largest, and background when the background weight (1 − Σ weights) wins.

    A tie (code against background, or two codes) takes the nearest source voxel's value. At an
    even downsampling (0.5 → 1 mm) every boundary sample sits halfway between two source voxels:
    giving ties to background shrank a 5 mm ball by 9 % and a 0.13 ml lesion by 58 %, where the
    nearest sample is as likely to fall inside as outside."""
    weights = [_linear_weights(n, m, r) for n, m, r in zip(a.shape, out_shape, ratios, strict=True)]
    lab = np.zeros(out_shape, dtype=a.dtype)
    best = np.zeros(out_shape, dtype=np.float32)
    total = np.zeros(out_shape, dtype=np.float32)
    tied = np.zeros(out_shape, dtype=bool)  # the best weight is shared by two codes
    for code, sl in enumerate(ndimage.find_objects(a), start=1):
        if sl is None:
            continue
        obox, ibox, local = [], [], []
        for ax, s in enumerate(sl):
            i0, w = weights[ax]
            lo = int(np.searchsorted(i0, s.start - 1, "left"))
            hi = int(np.searchsorted(i0, s.stop - 1, "right"))
            if hi <= lo:
                break
            a0, a1 = int(i0[lo]), min(int(i0[hi - 1]) + 2, a.shape[ax])
            obox.append(slice(lo, hi))
            ibox.append(slice(a0, a1))
            local.append((i0[lo:hi] - a0, w[lo:hi]))
        else:
            m = (a[tuple(ibox)] == code).astype(np.float32)
            for ax, (i0l, wl) in enumerate(local):
                m = _lerp(m, i0l, wl, ax)
            ob = tuple(obox)
            total[ob] += m
            b = best[ob]
            t = tied[ob]
            t[(m > 0) & (np.abs(m - b) <= TIE)] = True
            sel = m > b + TIE
            t[sel] = False
            np.maximum(b, m, out=b)
            lab[ob][sel] = code
    background = 1.0 - total
    lab[best < background - TIE] = 0
    ties = ((best > 0) & (np.abs(best - background) <= TIE)) | (tied & (best > background + TIE))
    if ties.any():
        idx = [nearest_index(n, m, r) for n, m, r in zip(a.shape, out_shape, ratios, strict=True)]
        at = np.nonzero(ties)
        lab[at] = np.asarray(a)[idx[0][at[0]], idx[1][at[1]], idx[2][at[2]]]
    return lab
