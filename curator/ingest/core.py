"""Pure per-case computations of ingest (arrays in, records out; no I/O)."""

from __future__ import annotations

import hashlib
from typing import Any

import fastremap
import numpy as np
from numpy.typing import NDArray

from curator.errors import GeometryError, LabelError
from curator.io.volume import Geometry

PERCENTILE_SAMPLE = 4_000_000


def voxel_checksum(a: NDArray[Any]) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes."""
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _sample(flat: NDArray[Any]) -> NDArray[np.float64]:
    """A systematic subsample of at most ~``PERCENTILE_SAMPLE`` voxels, for percentiles."""
    return flat[::max(1, flat.size // PERCENTILE_SAMPLE)].astype(np.float64)


def intensity_summary(a: NDArray[Any]) -> dict[str, float]:
    """min/max/mean/std over every voxel; percentiles over a systematic subsample of big arrays."""
    flat = a.reshape(-1)
    p01, p50, p99 = np.percentile(_sample(flat), [1, 50, 99])
    mean = float(np.mean(flat, dtype=np.float64))
    # two-pass std in float64, in slices to bound memory on 512×512×1000 volumes
    ss = 0.0
    block = 1 << 24
    for i in range(0, flat.size, block):
        d = flat[i:i + block].astype(np.float64) - mean
        ss += float(np.sum(d * d))  # not np.dot: BLAS threading changes the last bits
    return {"intensity_min": float(flat.min()), "intensity_max": float(flat.max()), "intensity_mean": mean,
            "intensity_std": float(np.sqrt(ss / max(1, flat.size))), "intensity_p01": float(p01),
            "intensity_p50": float(p50), "intensity_p99": float(p99)}


CT_AIR_HU = -1000.0
CT_LOW_END_LIMIT_HU = -500.0  # a CT's 0.5th percentile lies at air (-1000 HU) or below (padding)
CT_COMMON_OFFSETS = (1000.0, 1024.0)  # stored without the rescale intercept, or with air at 0


CT_AIR_BAND_HU = (-1100.0, -900.0)  # air in Hounsfield units, its -1024 floor included
# an MR or PET holding this share of its voxels in the air band is a CT in HU (a head-and-neck CT
# holds 30-60 %, a tightly cropped abdomen still several %; an MR or PET holds none: their
# intensities start near 0, and a z-scored one spans a few units)
CT_LIKE_AIR_SHARE = 0.05


def air_share(a: NDArray[Any]) -> float:
    """The share of the voxels (over the summary's subsample) within :data:`CT_AIR_BAND_HU`.

    >>> round(air_share(np.r_[np.full(30, -1000), np.full(70, 40)]), 2), air_share(np.arange(0, 500))
    (0.3, 0.0)
    """
    s = _sample(a.reshape(-1))
    return float(np.count_nonzero((s >= CT_AIR_BAND_HU[0]) & (s <= CT_AIR_BAND_HU[1])) / max(1, s.size))


AIR_WINDOW = 100.0  # the air peak is looked for this far above the low end (lung starts ~150 above air)
AIR_BIN = 4.0


def low_end(a: NDArray[Any]) -> float:
    """The 0.5th percentile of the voxel values (over the same subsample as the summary's)."""
    return float(np.percentile(_sample(a.reshape(-1)), 0.5))


def air_peak(a: NDArray[Any], low: float) -> float | None:
    """The most common value (``AIR_BIN`` wide bins) within ``AIR_WINDOW`` above the 0.5th
    percentile ``low``, the image's minimum left out: air outside the patient. A real CT's 0.5th
    percentile sits on its floor — the scanner's −1024 HU, or a padding value — not on air, whose
    peak is near −1000 HU (−997..−999 in the TotalSegmentator and dcmqi CTs); the 24 HU between
    them is what tells a file stored +1024 from one stored +1000. ``None`` when nothing but the
    minimum lies there (a synthetic image whose air is one value).

    >>> hu = np.r_[np.full(300, -1024), np.arange(-1010, -989), np.full(50, -998), np.full(900, 40)]
    >>> air_peak(hu + 1024, low_end(hu + 1024))
    26.0
    """
    s = _sample(a.reshape(-1))
    v = s[(s > s.min()) & (s >= low) & (s <= low + AIR_WINDOW)]
    if v.size == 0:
        return None
    counts, edges = np.histogram(v, bins=np.arange(low, low + AIR_WINDOW + AIR_BIN, AIR_BIN))
    i = int(np.argmax(counts))
    inside = v[(v >= edges[i]) & (v <= edges[i + 1])]  # the peak's bin: its median, a value the image holds
    return float(np.median(inside))


def ct_intensity_issue(low: float, vmin: float, vmax: float, air: float | None = None) -> tuple[str, float] | None:
    """Whether a CT's intensities are not Hounsfield units, from its 0.5th percentile ``low``,
    minimum and maximum, and its air peak ``air`` (:func:`air_peak`; all after any declared
    intensity offset):

    * ``("ct_intensity_8bit", 0)`` — every value in 0..255: an 8-bit (windowed) export;
    * ``("ct_intensity_offset", x)`` — the low end far above air: stored with about +x, measured
      at the air peak (at ``low`` without one), snapped to a common offset when within 60 of one
      (the nearer of 1000 and 1024);
    * ``None`` — plausible.

    The uint16 CT stored +1024 has its 0.5th percentile on the −1024 HU floor, at 0: from the low
    end alone it read as +1000 (air at 0), 24 HU off; its air peak (about 26) says +1024.

    >>> ct_intensity_issue(1.0, 0.0, 2741.0, air=26.0), ct_intensity_issue(1.0, 0.0, 2741.0)
    (('ct_intensity_offset', 1024.0), ('ct_intensity_offset', 1000.0))
    >>> ct_intensity_issue(24.0, 24.0, 1717.0), ct_intensity_issue(-1024.0, -3024.0, 1800.0)
    (('ct_intensity_offset', 1024.0), None)
    >>> ct_intensity_issue(0.0, 0.0, 255.0)
    ('ct_intensity_8bit', 0.0)
    """
    if vmin >= 0 and vmax <= 255:
        return "ct_intensity_8bit", 0.0
    if low <= CT_LOW_END_LIMIT_HU:
        return None
    x = (low if air is None else air) - CT_AIR_HU
    near = min(CT_COMMON_OFFSETS, key=lambda c: abs(c - x))
    return "ct_intensity_offset", near if abs(near - x) <= 60 else float(round(x))


def label_counts(a: NDArray[Any]) -> dict[int, int]:
    """Voxel count of every value present (fastremap's C++ unique: ~20x faster than bincount here)."""
    if a.size == 0:
        return {}
    vals, counts = fastremap.unique(a, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, counts, strict=True)}


def value_centroids(a: NDArray[Any], g: Geometry, merge: bool = False) -> dict[int, list[float]]:
    """The centroid (RAS mm) of each non-zero value of a label array on grid ``g``; with
    ``merge``, of every non-zero voxel as value 1 (a structure mask). For ``sources check``'s
    left/right test, which has no store to measure.

    >>> a = np.zeros((4, 1, 1), np.uint8); a[0] = 2; a[3] = 3
    >>> g = Geometry.from_affine(a.shape, [[-2, 0, 0, 10], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    >>> value_centroids(a, g), value_centroids(a, g, merge=True)
    ({2: [10.0, 0.0, 0.0], 3: [4.0, 0.0, 0.0]}, {1: [7.0, 0.0, 0.0]})
    """
    idx = np.nonzero(a)
    if not idx[0].size:
        return {}
    vals = np.ones(idx[0].size, np.int64) if merge else np.asarray(a[idx], np.int64)
    uniq, inv, n = np.unique(vals, return_inverse=True, return_counts=True)
    mean = np.stack([np.bincount(inv, weights=i, minlength=uniq.size) / n for i in idx], axis=1)
    return {int(v): [float(x) for x in w] for v, w in zip(uniq, g.voxel_to_world(mean), strict=True)}


GEOMETRY_REMEDY = ("check the label's header; if the dataset is known to store its labels with a wrong or empty header, "
                   "declare `fixes: {label_geometry: {from: image}}` in the dataset YAML (the label takes its image's "
                   "grid; add `label_flip: {axes: [..]}` or `label_rot90` when its array runs another way — "
                   "docs/registry.md, `fixes`); for a sub-millimetre difference, raise geometry_tolerance_mm")


def check_grid(image: Geometry, label: Geometry, tol_mm: float, path: str) -> bool:
    """Raise when a label is not on its image's grid; ``True`` when it is the same grid with
    axes permuted/flipped (accepted: readers re-index it with ``Volume.on_grid``)."""
    if image.mismatch(label, tol_mm=tol_mm) is None:
        return False
    if image.axis_map(label, tol_mm=tol_mm) is not None:
        return True
    offset = crop_offset(image, label, tol_mm)
    if offset is not None:  # 3D Slicer saves a .seg.nrrd cropped to its segments' extent by default
        raise GeometryError("shape_mismatch", f"the label, shape {label.shape}, is a crop of the image grid, "
                            f"shape {image.shape}, starting at image voxel {offset}: a segmentation saved cropped "
                            "to its segments' extent (as 3D Slicer saves one by default), which is not read",
                            path=path,
                            remedy="export it as a label map on the image's own grid (3D Slicer: Segmentations > "
                            "Export to files with the image as reference volume, or Export visible segments to "
                            "binary labelmap with the image as reference) and point the label pattern at that")
    if sorted(image.shape) != sorted(label.shape):
        raise GeometryError("shape_mismatch", f"label shape {label.shape} differs from image shape {image.shape}",
                            path=path, remedy="check that the label belongs to this image, or resample it "
                            "onto the image grid")
    why = image.mismatch(label, tol_mm=tol_mm)
    raise GeometryError("geometry_mismatch", f"label and image grids differ: {why} "
                        f"(tolerance {tol_mm} mm)", path=path,
                        remedy=GEOMETRY_REMEDY)


def crop_offset(image: Geometry, label: Geometry, tol_mm: float) -> tuple[int, int, int] | None:
    """The image voxel where ``label``'s first voxel lies when ``label`` is a smaller box of the
    image's own grid (same axes and spacing, voxel centres on the image's), else None.

    >>> from curator.io.volume import Geometry
    >>> import numpy as np
    >>> a = np.diag([2.0, 2.0, 3.0, 1.0])
    >>> b = a.copy(); b[:3, 3] = [4.0, 6.0, 9.0]
    >>> crop_offset(Geometry.from_affine((10, 10, 8), a), Geometry.from_affine((3, 2, 2), b), 0.01)
    (2, 3, 3)
    """
    if label.shape == image.shape or not np.allclose(label.matrix[:3, :3], image.matrix[:3, :3], atol=1e-4):
        return None
    ijk = image.world_to_voxel(label.matrix[:3, 3])[0]
    start = np.rint(ijk)
    if np.linalg.norm(image.matrix[:3, :3] @ (ijk - start)) > max(tol_mm, 1e-3):
        return None
    end = start + np.asarray(label.shape)
    if (start < 0).any() or (end > np.asarray(image.shape)).any():
        return None
    return int(start[0]), int(start[1]), int(start[2])


def some(values: list[int], limit: int) -> str:
    """The first ``limit`` of ``values`` and how many were left out.

    >>> some([6, 10, 11, 12], 2)
    '[6, 10] and 2 more'
    >>> some([6], 2)
    '[6]'
    """
    return f"{values[:limit]}" + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_label_map(counts: dict[int, int], declared: set[int], path: str, label: Any = None,
                    image: Any = None) -> list[int]:
    """Undeclared values (returned); raise when the 'label' is really an intensity image: more
    than 256 distinct values, most undeclared, or — given the case's ``image`` voxels — the very
    voxels of the image (a copy of the scan given as its label: 230 values, 7 of them declared,
    passed as a label map whose intensities 7, 8, 9 became prostate zones in a breast MR)."""
    undeclared = sorted(v for v in counts if v not in declared)
    remedy = "check the layout pattern: the label pattern matches image files"
    if len(counts) > 256 and len(undeclared) > 64:
        raise LabelError("label_is_image", f"the label file holds {len(counts)} distinct values "
                         f"(from {min(counts)} to {max(counts)}): it looks like an intensity image",
                         path=path, remedy=remedy)
    if (len(counts) > 16 and label is not None and image is not None and label.shape == image.shape
            and np.array_equal(label, image)):  # one pass, only for a label of many values
        raise LabelError("label_is_image", f"the label file holds the case's image itself ({len(counts)} distinct "
                         "values, every voxel equal to the image's)", path=path,
                         remedy=remedy + " (or a copy of the image stands where its label should)")
    return undeclared
