"""Body mask and crop box.

The body is the largest 6-connected component above a threshold (CT: −500 HU; MR/PET:
half the Otsu threshold of the image), with enclosed air (lungs, bowel gas) filled slice
by slice along the last axis. The crop box is the body's bounding box (or the non-zero
region, as SAT does) grown by a margin and always holding every labelled voxel.

>>> import numpy as np
>>> img = np.full((20, 20, 6), -1000.0, np.float32); img[4:16, 5:15, :] = 40.0; img[8:10, 8:10, :] = -900
>>> body = body_mask(img, "CT")
>>> int(body.sum()), crop_box(body, (1, 1, 0))
(720, (slice(3, 17, None), slice(4, 16, None), slice(0, 6, None)))
"""

from __future__ import annotations

from typing import Any

import cc3d
import numpy as np
from numpy.typing import NDArray
from skimage.filters import threshold_otsu

from curator.preprocess.intensity import strided_sample


def body_threshold(image: NDArray[Any], modality: str, ct_hu: float = -500.0) -> float:
    if modality.upper() == "CT":
        return ct_hu
    sample = strided_sample(image, 2_000_000).astype(np.float32)
    if sample.size == 0 or float(sample.min()) == float(sample.max()):
        return float(sample.min()) if sample.size else 0.0
    return 0.5 * float(threshold_otsu(sample))


def body_mask(image: NDArray[Any], modality: str, ct_hu: float = -500.0) -> NDArray[np.bool_]:
    """Largest connected component above the body threshold, holes filled per slice."""
    mask = image > body_threshold(image, modality, ct_hu)
    if not mask.any():
        return mask
    # Fortran order: the slices along the last axis are contiguous (no copy when the image is
    # Fortran-ordered already, as nibabel's reads are); cc3d takes either order
    mask = largest_component(np.asfortranarray(mask))
    for k in range(mask.shape[2]):
        if mask[:, :, k].any():
            mask[:, :, k] = fill_holes_2d(mask[:, :, k])
    return mask


def largest_component(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The largest 6-connected component of ``mask`` (``mask`` itself when it has only one;
    same result as ``cc3d.largest_k(k=1)`` without its relabelling passes)."""
    lab, n = cc3d.connected_components(mask, connectivity=6, binary_image=True, return_N=True)
    if n <= 1:
        return mask
    counts = np.bincount(lab.ravel(order="K"))
    counts[0] = 0
    return np.asarray(lab == int(np.argmax(counts)))


def fill_holes_2d(sl: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Fill every background region of a 2-D mask that does not touch the slice border."""
    lab, n = cc3d.connected_components(~sl, connectivity=4, return_N=True)
    if n == 0:
        return sl
    if n == 1:  # one background region: a hole only if it touches no border
        return sl if any(e.any() for e in (lab[0], lab[-1], lab[:, 0], lab[:, -1])) else np.ones_like(sl)
    lut = np.ones(n + 1, dtype=bool)
    for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
        lut[edge] = False
    lut[0] = True
    return np.asarray(lut[lab])


def bbox(mask: NDArray[Any]) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels (``None`` when there are none)."""
    out = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def crop_box(mask: NDArray[Any], margin: tuple[int, ...], keep: tuple[slice, ...] | None = None) -> tuple[slice, ...]:
    """Box around ``mask`` grown by ``margin`` voxels, grown further to hold ``keep``, inside the grid."""
    box = union_box(bbox(mask), keep)
    if box is None:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(slice(max(0, s.start - m), min(n, s.stop + m))
                 for s, m, n in zip(box, margin, mask.shape, strict=True))
