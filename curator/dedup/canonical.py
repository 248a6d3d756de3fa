"""Canonical form of a scan for hashing: RAS axes, a coarse analysis grid, a body mask.

Everything the dedup tiers compare is derived from this form, so a copy that was
flipped or transposed with a correct header, converted to another format or dtype,
offset, clipped or re-cropped gives (nearly) the same canonical content:

* axes are reordered and flipped to RAS with :mod:`nibabel.orientations` (views, no copy);
* the array is block-averaged (integer factors, from a sparse lattice of each block) to
  at most about ``max_voxels`` voxels, as isotropic as the scan allows, in its own memory
  order before reorienting (a 512×512×300 CT in ≈ 0.006 s);
* the body is the largest connected component above a threshold (:func:`body_threshold`)
  computed without isolated padding spikes, so ``-3024`` padding, a clipping window or
  a crop do not move it, and without constant padding inside the range (a CT padded with
  0 HU, :func:`padding_mask`); its :func:`outline` (holes filled in each axial slice: lungs,
  dark organs of an MR) follows the skin rather than an intensity cut through the tissues.

>>> import numpy as np
>>> from curator.io.volume import Geometry
>>> a = np.zeros((20, 20, 10), np.int16); a[4:16, 4:16, 2:8] = 100
>>> c = canonicalize(a[::-1], Geometry.from_affine(a.shape, np.diag([-2.0, 2.0, 3.0, 1.0])), 1000)
>>> c.array.shape, c.spacing, int(c.body.sum())
((10, 10, 10), (4.0, 4.0, 3.0), 216)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from numpy.typing import NDArray
from scipy import ndimage
from skimage.filters import threshold_li

from curator.io.volume import Geometry

RAS = axcodes2ornt("RAS")
_AXIAL_CROSS = np.zeros((3, 3, 3), dtype=bool)  # 4-connectivity within an axial slice, none across
_AXIAL_CROSS[:, :, 1] = ndimage.generate_binary_structure(2, 1)
SPIKE_FRACTION = 0.005  # a single value holding this share of voxels at a histogram end is padding/clipping
THRESHOLD_SAMPLE = 400_000
SEPARATION = 2.5  # background and body medians this many IQRs apart: a real background
PAD_FRACTION = 0.01  # constant padding: at least this share of the analysis grid
ISOLATED_GAP = 0.2  # a spike this far (share of the remaining range) below the rest may be padding


@dataclass(frozen=True)
class Canonical:
    """A scan on its RAS analysis grid.

    ``array`` is float32 ``[x, y, z]`` (R, A, S increasing), ``spacing`` its voxel size
    in mm, ``body`` the body mask (the tissue above the threshold: what verification
    compares), ``outline`` the body with its holes filled in each axial slice (what the
    perceptual hashes are framed and ranked on), ``threshold`` the body threshold in input
    units, ``origin`` the header's world position of voxel 0 (may be stale; used only to
    report where two copies overlap).
    """

    array: NDArray[np.float32]
    spacing: tuple[float, float, float]
    body: NDArray[np.bool_]
    outline: NDArray[np.bool_]
    threshold: float
    factors: tuple[int, int, int]  # native voxels averaged per analysis voxel, per native axis
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # world (RAS mm) centre of voxel 0


def ras_view(array: NDArray[Any], geometry: Geometry) -> tuple[NDArray[Any], Geometry]:
    """``array`` reoriented to (the closest) RAS axes, as a view, and the view's geometry."""
    ornt = io_orientation(geometry.matrix)
    tr = ornt_transform(ornt, RAS)
    view = apply_orientation(array, tr)
    affine = geometry.matrix @ inv_ornt_aff(tr, array.shape)
    return view, Geometry.from_affine(view.shape, affine)


def _has_own_background(rest: NDArray[np.float64], threshold: float) -> bool:
    """Whether the values above a spike still hold a background class far below the body.

    Padding (outside a CT's reconstruction circle) sits below the scan's own air, so once it
    is left out the rest still splits into air and body with a wide gap. A noise-free
    background (synthetic scans) has nothing below the body but fat, close to it.
    """
    low, high = rest[rest < threshold], rest[rest >= threshold]
    if low.size < 0.05 * rest.size or high.size == 0:
        return False
    spread = float(np.subtract(*np.percentile(low, [75, 25])) + np.subtract(*np.percentile(high, [75, 25])))
    return float(np.median(high) - np.median(low)) > SEPARATION * max(spread, 1e-6)


def _li(v: NDArray[np.float64]) -> float:
    return float(threshold_li(v)) if v.size and v[0] < v[-1] else float(v[0] if v.size else 0.0)


def body_threshold(a: NDArray[Any]) -> float:
    """Li's minimum cross-entropy threshold between background and body, ignoring padding.

    Li (unlike Otsu) stays put when a crop removes most of the background or a window piles
    air and fat together (measured on the real CT and MR in ``benchmarks/dedup_eval.py``).
    Padding (e.g. ``-3024`` outside a CT's field of view) piles many voxels on one value far
    below everything else and would pull the threshold under the air; such a spike is left
    out when the rest still has its own background (:func:`_has_own_background`). A spike that touches
    the rest of the histogram (air clipped to a window's lower bound) is always kept: it *is*
    the background.
    """
    v = a.ravel()
    if v.size > THRESHOLD_SAMPLE:
        v = v[:: v.size // THRESHOLD_SAMPLE]
    v = np.sort(v.astype(np.float64))
    if v.size < 16:
        return _li(v)
    lo = v[0]
    n_lo = int(np.searchsorted(v, lo, side="right"))
    rest = v[n_lo:]
    if n_lo > SPIKE_FRACTION * v.size and rest.size >= 16:
        # percentiles, not the minimum: block averaging smears a padding edge into in-between values
        r_lo, r_hi = (float(x) for x in np.percentile(rest, [2, 98]))
        if r_lo - lo > ISOLATED_GAP * ((r_hi - r_lo) or 1.0):
            kept = v[v >= r_lo]
            t = _li(kept)
            if _has_own_background(kept, t):
                return t
    return _li(v)


def _faces(a: NDArray[Any]) -> list[NDArray[Any]]:
    """The six border faces of a 3-D array."""
    return [np.take(a, i, axis=axis) for axis in range(3) for i in (0, -1)]


def padding_mask(a: NDArray[Any], threshold: float) -> NDArray[np.bool_]:
    """Constant padding above ``threshold``: voxels of one exact value, connected to the grid's
    border, holding at least ``PAD_FRACTION`` of the grid, the value strictly inside the
    scan's range — with the one-voxel rim around it, where the grid averaged padding and scan.

    A copy padded with 0 (MONAI's ``SpatialPad``, SimpleITK's resampling default) puts a ring
    of 0 HU around a CT — above the body threshold, so it would join the body and move every
    body-framed hash. No scanned tissue is one exact value over thousands of voxels; a
    clipping window's bound is the range's end, and never counts.
    """
    none = np.zeros(a.shape, dtype=bool)
    lo, hi = float(a.min()), float(a.max())
    candidates: set[float] = set()
    for face in _faces(a):  # a padded face is (nearly) all one value
        values, counts = np.unique(face, return_counts=True)
        v = float(values[np.argmax(counts)])
        if counts.max() >= 0.9 * face.size and threshold < v and lo < v < hi:
            candidates.add(v)
    if len(candidates) != 1:
        return none
    v = candidates.pop()
    flat = a == v
    if flat.sum() < PAD_FRACTION * a.size:
        return none
    lab = cc3d.connected_components(flat.astype(np.uint8), connectivity=6)
    border = np.unique(np.concatenate([f.ravel() for f in _faces(lab)]))
    pad = np.isin(lab, border[border > 0])
    if pad.sum() < PAD_FRACTION * a.size:
        return none
    # and the blocks the analysis grid averaged across the padding's edge (partly padding)
    return np.asarray(ndimage.binary_dilation(pad, iterations=1))


def body_mask(a: NDArray[Any], threshold: float, exclude: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
    """Largest 26-connected component above ``threshold`` and outside ``exclude`` (all such
    voxels when it is tiny)."""
    fg = a > threshold
    if exclude is not None:
        fg &= ~exclude
    if not fg.any():
        return fg
    lab = cc3d.largest_k(fg.astype(np.uint8), k=1, connectivity=26)
    out = np.asarray(lab > 0)
    return out if out.sum() >= 0.2 * fg.sum() else fg


def outline(body: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``body`` with its holes filled in each axial slice: the skin's outline.

    Where the threshold falls inside the tissues' own range (an MR whose dark tissues sit
    between air and the bright ones), a resampled or clipped copy moves the threshold and
    reshapes the tissue mask inside the body, but not its outline — so the hashes are framed
    and ranked on the outline. Verification keeps the tissue mask: over the filled outline,
    two synthetic patients of one protocol correlated like copies (score 0.19 → 0.55).
    """
    return np.asarray(ndimage.binary_fill_holes(body, structure=_AXIAL_CROSS))


def block_sample(a: NDArray[Any], factors: tuple[int, ...], picks: int = 2) -> NDArray[np.float32]:
    """Mean over each block of ``factors`` voxels, estimated from up to ``picks`` evenly spread
    voxels per axis (trailing partial blocks dropped).

    Strided reads skip most rows and planes of a big scan: a 512×512×300 CT is reduced in
    ≈ 0.006 s with 2 picks per axis (8 voxels per 9×9×5 block), 0.06 s with 4 (64 voxels). On
    that CT's copies, 4 picks raised verification's ``detail`` by 0.01–0.03 and left the hashes
    as close; ``benchmarks/dedup_eval.py`` found the same recall with either.
    """
    f = [max(1, min(int(x), n)) for x, n in zip(factors, a.shape, strict=True)]
    n = [s // k for s, k in zip(a.shape, f, strict=True)]
    offsets = [sorted({int(x) for x in np.linspace(0, k - 1, min(k, picks))}) for k in f]
    acc = np.zeros(n, dtype=np.float32)
    count = 0
    for di in offsets[0]:
        for dj in offsets[1]:
            for dk in offsets[2]:
                acc += a[di:: f[0], dj:: f[1], dk:: f[2]][: n[0], : n[1], : n[2]]
                count += 1
    acc /= np.float32(count)
    return acc


def grid_factors(shape: tuple[int, ...], spacing: tuple[float, ...], max_voxels: int) -> tuple[int, int, int]:
    """Integer block factors that bring a scan to about ``max_voxels`` voxels, as isotropic as it allows."""
    sp = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(shape, dtype=np.float64) * sp
    iso = float(np.cbrt(np.prod(extent) / max_voxels))
    f = np.ones(3, dtype=int)
    for _ in range(12):  # axes already coarser than iso leave room for the others
        f = np.maximum(1, np.rint(iso / sp)).astype(int)
        f = np.minimum(f, np.asarray(shape))
        n = float(np.prod(np.asarray(shape) // f))
        if n <= max_voxels * 1.1:
            break
        iso *= (n / max_voxels) ** (1 / 3)
    return (int(f[0]), int(f[1]), int(f[2]))


def canonicalize(array: NDArray[Any], geometry: Geometry, max_voxels: int = 262_144) -> Canonical:
    """The canonical form of a scan (see module docstring)."""
    factors = grid_factors(array.shape, geometry.spacing, max_voxels)
    small = block_sample(array, factors)
    m = geometry.matrix.copy()
    f = np.asarray(factors, dtype=np.float64)
    m[:3, 3] = geometry.voxel_to_world((f - 1) / 2)[0]  # centre of the first block
    m[:3, :3] = m[:3, :3] @ np.diag(f)
    view, g = ras_view(small, Geometry.from_affine(small.shape, m))
    sub = np.ascontiguousarray(view, dtype=np.float32)
    thr = body_threshold(sub)
    body = body_mask(sub, thr, padding_mask(sub, thr))
    return Canonical(sub, g.spacing, body, outline(body), thr, factors, g.origin)
