"""Label-map generators and realistic label errors (for QC tests and benchmarks).

:func:`many_class_map` paints a TotalSegmentator-sized label map (100+ classes of very
different sizes inside a body outline); the error functions take one binary mask and
return a corrupted copy — organ partly erased, spurious distant blob, massive dilation,
fragmentation, field of view cut — each drawing its parameters from an explicit
``numpy.random.Generator``.

>>> import numpy as np
>>> lab = many_class_map((64, 64, 40), n_classes=12, seed=0)
>>> int(lab.max()) <= 12 and len(np.unique(lab)) > 5
True
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


def _ellipsoid_into(out: NDArray[np.integer], code: int, center: NDArray[np.float64],
                    radii: NDArray[np.float64], rot: NDArray[np.float64],
                    spacing: NDArray[np.float64] | None = None) -> None:
    """Paint an ellipsoid; ``center`` in voxels, ``radii`` in voxels (or in mm with ``spacing``,
    the rotation then acting in physical space)."""
    sp = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
    r = np.ceil(radii.max() / sp).astype(int) + 1
    lo = np.maximum(np.floor(center - r).astype(int), 0)
    hi = np.minimum(np.ceil(center + r).astype(int) + 1, out.shape)
    if np.any(hi <= lo):
        return
    g = np.stack(np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, center, sp, strict=True)],
                             indexing="ij"), axis=-1)
    q = ((g @ rot) / radii) ** 2
    inside = q.sum(axis=-1) <= 1.0
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][inside] = code


def random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return np.asarray(q * np.sign(np.diag(r)), dtype=np.float64)


def many_class_map(shape: tuple[int, int, int], n_classes: int = 117, seed: int = 0,
                   min_radius: float = 2.0) -> NDArray[np.uint8]:
    """A label map with ``n_classes`` ellipsoids (sizes spanning ~2 orders of magnitude, like organs,
    vessels and bones) inside an elliptic body outline that fills most of each slice."""
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if n_classes < 256 else np.uint16
    out = np.zeros(shape, dtype=dtype)
    s = np.asarray(shape, dtype=np.float64)
    body = s * np.array([0.42, 0.32, 0.5])
    big = max(min_radius * 2, float(min(s[0], s[1])) / 5)
    radii_all = sorted((float(np.exp(rng.uniform(np.log(min_radius), np.log(big)))) for _ in range(n_classes)),
                       reverse=True)  # large structures first, so small ones (vessels, glands) stay visible
    for code, radius in enumerate(radii_all, start=1):
        radii = radius * rng.uniform(0.6, 1.6, 3)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        center = s / 2 + d * rng.uniform(0, 0.8) * (body - radii.clip(max=body * 0.5))
        _ellipsoid_into(out, code, center, radii, random_rotation(rng))
    return out


# -- realistic label errors ---------------------------------------------------------------------
def erase_part(mask: NDArray[np.bool_], rng: np.random.Generator, fraction: tuple[float, float] = (0.5, 0.8)
               ) -> NDArray[np.bool_]:
    """Erase the part of the mask beyond a random plane (``fraction`` of its voxels removed)."""
    idx = np.argwhere(mask).astype(np.float64)
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    proj = (idx - idx.mean(axis=0)) @ d
    cut = np.quantile(proj, 1.0 - rng.uniform(*fraction))
    out = mask.copy()
    gone = idx[proj > cut].astype(int)
    out[tuple(gone.T)] = False
    return out


def add_blob(mask: NDArray[np.bool_], rng: np.random.Generator, spacing: tuple[float, float, float],
             size: tuple[float, float] = (0.1, 0.3), distance_mm: float = 50.0) -> NDArray[np.bool_]:
    """Add a spurious ellipsoid of ``size`` × the mask's volume, ``distance_mm`` or more away from it
    (as far as the array allows when it is too small for that)."""
    from scipy.spatial import cKDTree

    sp = np.asarray(spacing, dtype=np.float64)
    idx = np.argwhere(mask)
    vol = len(idx) * float(np.prod(sp))
    r_mm = (3 * vol * rng.uniform(*size) / (4 * np.pi)) ** (1 / 3)
    pts = idx[rng.choice(len(idx), size=min(len(idx), 20000), replace=False)] * sp
    tree = cKDTree(pts)
    u = rng.uniform(0.8, 1.25, 3)
    radii_mm = r_mm * u / float(np.prod(u)) ** (1 / 3)  # an ellipsoid of the drawn volume
    reach = radii_mm.max() / sp  # voxels the blob may extend from its centre along each axis
    lo, hi = reach + 2, np.asarray(mask.shape) - 3 - reach  # not touching the array's edge
    hi = np.maximum(hi, lo)
    cand = rng.uniform(lo, hi, size=(4000, 3))
    dist, _ = tree.query(cand * sp)
    ok = cand[dist >= distance_mm + r_mm]
    c = ok[rng.integers(len(ok))] if len(ok) else cand[np.argmax(dist)]
    blob = np.zeros(mask.shape, dtype=np.uint8)
    _ellipsoid_into(blob, 1, c, radii_mm, random_rotation(rng), spacing=sp)
    return np.asarray(mask | blob.astype(bool))


def dilate(mask: NDArray[np.bool_], spacing: tuple[float, float, float], mm: float) -> NDArray[np.bool_]:
    """Grow the mask by ``mm`` millimetres (exact Euclidean distance, anisotropy respected)."""
    dist = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return np.asarray(dist <= mm)


def fragment(mask: NDArray[np.bool_], rng: np.random.Generator, spacing: tuple[float, float, float],
             cuts: int = 4, gap_mm: float = 4.0) -> NDArray[np.bool_]:
    """Cut the mask into pieces with ``cuts`` random slabs ``gap_mm`` thick through it."""
    idx = np.argwhere(mask).astype(np.float64)
    sp = np.asarray(spacing)
    world = idx * sp
    out = mask.copy()
    for _ in range(cuts):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        proj = (world - world.mean(axis=0)) @ d
        at = rng.uniform(np.quantile(proj, 0.2), np.quantile(proj, 0.8))
        gone = idx[np.abs(proj - at) < gap_mm / 2].astype(int)
        out[tuple(gone.T)] = False
    return out


def cut_field_of_view(labels: NDArray[np.integer], mask: NDArray[np.bool_], rng: np.random.Generator,
                      fraction: tuple[float, float] = (0.2, 0.5), axis: int | None = None
                      ) -> tuple[NDArray[np.integer], tuple[slice, ...]]:
    """Crop the whole label map so the scan ends inside the structure ``mask``: returns the cropped
    map and the crop box. ``fraction`` of the structure's extent along ``axis`` is cut away."""
    ax = int(rng.integers(3)) if axis is None else axis
    idx = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
    lo, hi = int(idx.min()), int(idx.max()) + 1
    keep = round((hi - lo) * (1 - rng.uniform(*fraction)))
    box = [slice(None)] * 3
    box[ax] = slice(0, lo + keep) if rng.random() < 0.5 else slice(hi - keep, labels.shape[ax])
    return labels[tuple(box)], tuple(box)
