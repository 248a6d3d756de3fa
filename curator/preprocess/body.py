"""Body mask and crop box.

The body is the largest 6-connected component above a threshold (CT: −500 HU; MR/PET:
half (PET: a quarter) of the way from the image's low end to its Otsu threshold, :func:`body_threshold`), with
enclosed air (lungs, bowel gas) filled slice by slice along the last axis. The crop box is the body's bounding box (or the non-zero
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

from curator.errors import InputError
from curator.preprocess.intensity import strided_sample

# in MR/PET cases' cache keys: names the threshold rule below (``body_rule_of``)
BODY_RULES = {"MR": "p0.5-otsu-half", "PET": "p0.5-otsu-quarter"}
# the share of the way from the low end to Otsu's threshold: PET's lowest-uptake tissue (fat,
# SUV ~0.3-0.5) lies below half of it in a whole-body FDG scan (air ~0, Otsu ~0.6-1)
FRACTION = {"MR": 0.5, "PET": 0.25}
LOW_PERCENTILE = 0.5  # the image's low end (MR/PET): the background, when it holds 0.5 % of the voxels
NEARLY_ALL = 0.99  # a body mask covering this share of the field of view or more is warned of


def _kind(modality: str) -> str:
    return "PET" if modality.upper() in ("PET", "PT") else "MR"


def body_rule_of(modality: str) -> str | None:
    """The body threshold rule an MR or PET case's cache key carries (None for CT)."""
    return None if modality.upper() == "CT" else BODY_RULES[_kind(modality)]


def body_threshold(image: NDArray[Any], modality: str, ct_hu: float = -500.0) -> float:
    """CT: ``ct_hu``. MR: halfway between the image's 0.5th percentile (its background, when
    the scan holds air) and its Otsu threshold, ``low + (otsu − low) / 2``; PET: a quarter of
    the way, ``low + (otsu − low) / 4`` — at half, a whole-body FDG scan's fat (SUV ~0.35) and
    low-uptake arms fell outside the body (the PET body 72-84 % of its CT's on a tester's
    PET/CT studies, 98-110 % at a quarter), and the store's crop cut them off.

    Measured from the low end, not from 0, so an additive offset moves the threshold with the
    image (``0.5 × otsu`` put it in the background of an MR stored +2000, and above the whole
    body of one stored −2000). For an image whose background is 0 — MR magnitude and PET with
    air around the patient — the percentile is 0 and the threshold is ``0.5 × otsu`` as before
    (the real TotalSegmentator, pyradiomics brain and MONAI MRs: identical masks). A percentile
    rather than the minimum: one dark voxel (Rician noise at −47 in the TotalSegmentator MR, a
    cubic undershoot) does not move it.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = np.abs(rng.normal(0, 10, (40, 40, 4))).astype(np.float32)  # air: Rician-like noise
    >>> a[10:30, 10:30] = rng.normal(400, 60, (20, 20, 4))  # the body: 1600 voxels
    >>> [int(body_mask(a + shift, "MR").sum()) for shift in (0, -2000, 2000)]
    [1600, 1600, 1600]
    """
    if modality.upper() == "CT":
        return ct_hu
    sample = strided_sample(image, 2_000_000).astype(np.float32)
    if sample.size == 0 or float(sample.min()) == float(sample.max()):
        return float(sample.min()) if sample.size else 0.0
    low = float(np.percentile(sample, LOW_PERCENTILE, method="inverted_cdf"))
    return low + FRACTION[_kind(modality)] * (float(threshold_otsu(sample)) - low)


def body_mask(image: NDArray[Any], modality: str, ct_hu: float = -500.0, *,
              threshold: float | None = None) -> NDArray[np.bool_]:
    """Largest connected component above the body threshold (``threshold``, else
    :func:`body_threshold`), holes filled per slice."""
    mask = image > (body_threshold(image, modality, ct_hu) if threshold is None else threshold)
    if not mask.any():
        return mask
    # Fortran order: the slices along the last axis are contiguous (no copy when the image is
    # Fortran-ordered already, as nibabel's reads are); cc3d takes either order
    mask = largest_component(np.asfortranarray(mask))
    for k in range(mask.shape[2]):
        if mask[:, :, k].any():
            mask[:, :, k] = fill_holes_2d(mask[:, :, k])
    return mask


def body_coverage_issue(voxels: int, total: int, modality: str, threshold: float) -> InputError | None:
    """A problem when the body mask is empty or covers (nearly) the whole field of view — an
    intensity offset, a noise floor or a CT not in HU put the threshold beside the body, and the
    crop, ``body_volume_ml``, the statistics inside the body and QC's ``norm_volume`` then
    measure nothing or the field of view, not the patient. ``threshold`` in physical units. The
    stage makes an empty mask a warning and a whole-field one info: a dataset whose field of view
    lies inside the body (prostate, cardiac, knee MR, cropped CT) has one in every case.

    >>> body_coverage_issue(0, 1000, "MR", 116.6).kind, body_coverage_issue(500, 1000, "MR", 116.6)
    ('body_mask_empty', None)
    >>> body_coverage_issue(1000, 1000, "CT", -500.0).kind
    'body_mask_whole_field'
    """
    ct = modality.upper() == "CT"
    at = f"{threshold:.6g} HU (stages.preprocess.body_threshold_hu)" if ct else (
        f"{threshold:.6g}, {'a quarter' if _kind(modality) == 'PET' else 'half'} of the way from the image's 0.5th "
        "percentile to its Otsu threshold")
    if voxels == 0:
        return InputError(
            "body_mask_empty",
            f"no voxel of the image is above the body threshold ({at}): the body mask is empty, so the store "
            "is not cropped to the body, body_volume_ml is 0, the intensity statistics cover the whole image "
            "and QC has no body volume for this case (norm_volume null)",
            remedy=("check the image's values: a CT not stored in HU needs `fixes: {intensity_offset: ...}` in the "
                    "dataset YAML (ingest's ct_intensity_offset row says which), else set "
                    "stages.preprocess.body_threshold_hu; then run preprocess again") if ct else
                   "check the image (constant, inverted or a map of differences?); if it is right, report the case")
    if total and voxels >= NEARLY_ALL * total:
        return InputError(
            "body_mask_whole_field",
            f"the body mask covers {100.0 * voxels / total:.1f} % of the field of view (threshold {at}): either "
            "the image is cropped to the patient (then nothing is wrong), or the threshold fell in the background "
            "and the crop, body_volume_ml, the intensity statistics inside the body and QC's norm_volume measure "
            "the field of view, not the patient",
            remedy=("nothing if the image holds no air outside the patient; otherwise its air is not near −1000: "
                    "declare the CT's offset (`fixes: {intensity_offset: ...}` in the dataset YAML, ingest's "
                    "ct_intensity_offset row says which) or raise stages.preprocess.body_threshold_hu") if ct else
                   ("nothing if the image holds no air outside the patient; otherwise check its background (a noise "
                    "floor, a fill value) and judge the volumes unnormalised (stages.qc.volume_norm: absolute)"))
    return None


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
