"""Stored image dtype, intensity statistics and normalisation parameters.

Images are stored in physical units (HU for CT) in at most 2 bytes per voxel: ``int16``
(or ``uint16``) when the source holds integers that fit — an integer dtype, or a float one
whose every value is a whole number (a float32 CT in HU) — else ``float16`` (scaled by a
power of two when the values exceed float16's range; the scale is recorded). The
normalisation SAT uses is stored as parameters and applied on the fly by the loader:
``(clip(value · scale, low, high) − mean) / std`` — CT clipped to [−500, 1000], other
modalities to their 0.5th–99.5th percentiles, z-scored over the cropped volume. PET may take its
own percentiles or a fixed window (``pet_percentiles``, ``pet_clip``).

>>> import numpy as np
>>> storage_dtype(np.dtype(np.int16), -1024.0, 3071.0)
(dtype('int16'), 1.0)
>>> ct = np.array([-1024.0, 40.0, 3071.0], np.float32)       # a float32 CT in whole HU
>>> storage_dtype(ct.dtype, -1024.0, 3071.0, whole=whole_numbers(ct))
(dtype('int16'), 1.0)
>>> storage_dtype(ct.dtype, -1024.0, 3071.0, whole=whole_numbers(ct + 0.5))
(dtype('float16'), 1.0)
>>> x = np.array([-1000, 0, 40, 2000], np.int16)
>>> n = normalisation(x, "CT", (-500.0, 1000.0), (0.5, 99.5))
>>> n["kind"], n["clip"]
('ct', [-500.0, 1000.0])
>>> [round(float(v), 2) for v in normalise(x, n)]
[-1.17, -0.25, -0.18, 1.59]
"""

from __future__ import annotations

from typing import Any

import fastremap
import numpy as np
from numpy.typing import NDArray

from curator.errors import InputError

F16_MAX = 65504.0
PERCENTILES = (0.5, 1.0, 50.0, 99.0, 99.5)


# in the cache key of a case whose float image may hold whole numbers only (stored int16 since
# 2026-12: float16 rounded its HU above 2048); see ``whole_rule_of``
WHOLE_FLOAT_RULE = "whole-float-as-integer"
INTEGER_RANGE = (-32768.0, 65535.0)  # int16's low end to uint16's high end


def storage_dtype(src: np.dtype[Any], lo: float, hi: float, *, whole: bool = False) -> tuple[np.dtype[Any], float]:
    """``(dtype, scale)`` for a resampled image whose source dtype is ``src`` and range ``[lo, hi]``;
    ``whole``: a float source holds whole numbers only (:func:`whole_numbers`), stored as an
    integer source is (linear and cubic resampling round to the integer dtype)."""
    if src.kind in "iub" or whole:
        if lo >= -32768 and hi <= 32767:
            return np.dtype(np.int16), 1.0
        if lo >= 0 and hi <= 65535:
            return np.dtype(np.uint16), 1.0
    peak = max(abs(lo), abs(hi), 1e-30)
    scale = 1.0 if peak < F16_MAX / 2 else float(2.0 ** np.ceil(np.log2(peak / (F16_MAX / 2))))
    return np.dtype(np.float16), scale


def whole_numbers(a: NDArray[Any], slab: int = 8) -> bool:
    """True when every value of ``a`` is a whole number (always for an integer dtype; never with
    a NaN). An even sample is looked at first, so a float image with fractions (most MR) costs
    little; a whole one is checked ``slab`` planes of its last axis at a time (no full copy)."""
    if a.dtype.kind in "iub":
        return True
    if a.dtype.kind != "f" or a.size == 0:
        return False
    s = strided_sample(a, 65536)
    if not np.array_equal(s, np.rint(s)):
        return False
    for k in range(0, a.shape[-1], slab):
        part = np.asarray(a[..., k:k + slab])
        if not np.array_equal(part, np.rint(part)):
            return False
    return True


def whole_rule_of(dtype: str | None, lo: float | None, hi: float | None) -> str | None:
    """The rule a case's cache key carries (``WHOLE_FLOAT_RULE``) unless ingest's facts of its
    image — ``cases.dtype``, ``intensity_min``, ``intensity_max`` — show that its store cannot have
    changed with it: an integer source, or a float one whose minimum or maximum is a fraction while
    both lie within float16's unscaled range (no far fill value is clipped, so that fraction
    reaches preprocess and the image stays float16). Unknown facts carry the rule.

    >>> whole_rule_of("int16", -1024.0, 3071.0) is None, whole_rule_of("float32", 0.0, 811.25) is None
    (True, True)
    >>> whole_rule_of("float32", -1024.0, 3071.0), whole_rule_of("float32", -3.4e38, 811.25)
    ('whole-float-as-integer', 'whole-float-as-integer')
    """
    try:
        kind = np.dtype(dtype).kind if dtype else ""
    except TypeError:
        kind = ""
    if kind in ("i", "u", "b"):
        return None
    ends = [v for v in (lo, hi) if v is not None and np.isfinite(v)]
    if kind == "f" and len(ends) == 2 and max(abs(v) for v in ends) < F16_MAX / 2 \
            and any(not float(v).is_integer() for v in ends):
        return None
    return WHOLE_FLOAT_RULE


def far_outliers(a: NDArray[Any], factor: float = 1024.0) -> tuple[float, float] | None:
    """For a float image whose minimum or maximum lies ``factor`` times beyond all its other
    values — a fill value such as −3.4e38 outside the field of view, however many voxels hold
    it — the range ``(lo, hi)`` to clip to (the extremes of the other values); None otherwise.

    Stored as float16 with one scale for the whole image, such a fill sets the scale and every
    tissue value rounds to zero. Only a range that needs a scale (beyond ±32,752) is examined.
    """
    if a.dtype.kind != "f" or a.size == 0:
        return None
    lo, hi = float(np.min(a)), float(np.max(a))
    if max(abs(lo), abs(hi)) < F16_MAX / 2:
        return None  # stored unscaled: float16's relative precision holds whatever the range
    inner = (a > lo) & (a < hi)
    if not inner.any():
        return None
    in_lo = float(np.min(a, where=inner, initial=np.inf))
    in_hi = float(np.max(a, where=inner, initial=-np.inf))
    limit = factor * max(abs(in_lo), abs(in_hi), 1e-30)
    edges = (in_lo if abs(lo) > limit else lo, in_hi if abs(hi) > limit else hi)
    return None if edges == (lo, hi) else edges


def strided_sample(a: NDArray[Any], limit: int) -> NDArray[Any]:
    """A deterministic, evenly strided sample of at most ``limit`` values of ``a`` (flattened)."""
    step = max(1, -(-a.size // limit))
    if a.flags.c_contiguous or a.ndim <= 1:
        return a.reshape(-1)[::step]
    # the same C-order positions, gathered without a C-order copy of a Fortran-ordered array
    return a[np.unravel_index(np.arange(0, a.size, step), a.shape)]


def histogram(values: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``(value, count)`` of every 16-bit integer value (fastremap's counting unique: no large
    temporaries, no copy of a contiguous array in either memory order)."""
    keys = values.ravel(order="K").view(np.uint16)
    present, n = fastremap.unique(keys, return_counts=True)
    counts = np.zeros(65536, dtype=np.int64)
    counts[present] = n
    vals = np.arange(65536, dtype=np.float64)
    if values.dtype == np.int16:  # two's complement: put negative values first
        counts = np.concatenate([counts[32768:], counts[:32768]])
        vals -= 32768
    return vals, counts


def _hist_stats(values: NDArray[Any], pcts: tuple[float, ...]) -> dict[str, float]:
    """Exact percentiles/mean/std of 16-bit integers through a histogram (O(n), no sort)."""
    vals, counts = histogram(values)
    n = int(counts.sum())
    # np.sum, not `@`: BLAS threading changes the last bits, and results must be reproducible
    mean = float(np.sum(counts * vals)) / n
    var = float(np.sum(counts * (vals - mean) ** 2)) / n
    cum = np.cumsum(counts)
    nz = np.flatnonzero(counts)
    out = {"mean": mean, "std": var ** 0.5, "min": float(vals[nz[0]]), "max": float(vals[nz[-1]])}
    for p in pcts:  # numpy's "inverted_cdf" definition
        # the first value whose count reaches p % (at least one value: p0 is the minimum)
        out[f"p{p:g}"] = float(vals[min(int(np.searchsorted(cum, max(p / 100 * n, 1), "left")), 65535)])
    return out


def stats(values: NDArray[Any], scale: float = 1.0, pcts: tuple[float, ...] = PERCENTILES,
          limit: int = 4_000_000) -> dict[str, float] | None:
    """Percentiles, mean, std, min and max of ``values`` (stored units × ``scale``); ``None`` if empty."""
    if values.size == 0:
        return None
    if values.dtype in (np.int16, np.uint16):
        out = _hist_stats(values, pcts)
    else:
        s = strided_sample(values, limit).astype(np.float64)
        out = {"mean": float(s.mean()), "std": float(s.std()), "min": float(s.min()), "max": float(s.max())}
        for p, v in zip(pcts, np.percentile(s, pcts, method="inverted_cdf"), strict=True):
            out[f"p{p:g}"] = float(v)
    return {k: v * scale if k != "std" else v * abs(scale) for k, v in out.items()}


def normalisation(image: NDArray[Any], modality: str, ct_clip: tuple[float, ...],
                  mr_percentiles: tuple[float, ...], scale: float = 1.0, *,
                  pet_percentiles: tuple[float, ...] = (), pet_clip: tuple[float, ...] = ()) -> dict[str, Any]:
    """Parameters of SAT's normalisation for this (cropped) image, stored in the case store.

    CT takes the fixed window ``ct_clip`` (kind ``ct``); PET ``pet_clip`` when given (kind
    ``fixed``: a hot lesion keeps its contrast to the liver), else its ``pet_percentiles``
    (``mr_percentiles`` when not given); other modalities ``mr_percentiles`` (kind ``percentile``).
    Percentile 0 and 100 are the image's exact minimum and maximum (no clip at that end).
    """
    mod = modality.upper()
    if mod == "CT":
        lo, hi = float(ct_clip[0]), float(ct_clip[1])
        kind = "ct"
    elif mod == "PET" and pet_clip:
        lo, hi = float(pet_clip[0]), float(pet_clip[1])
        kind = "fixed"
    else:
        pcts = tuple(pet_percentiles) if mod == "PET" and pet_percentiles else tuple(mr_percentiles)
        lo, hi = _percentile_window(image, scale, pcts)
        kind = "percentile"
    if image.dtype in (np.int16, np.uint16) and scale == 1.0 and image.size:
        vals, counts = histogram(image)
        c = np.clip(vals, lo, hi)
        n = float(counts.sum())
        mean = float(np.sum(counts * c)) / n
        std = (float(np.sum(counts * (c - mean) ** 2)) / n) ** 0.5
    else:
        clipped = np.clip(strided_sample(image, 8_000_000).astype(np.float64) * scale, lo, hi)
        mean = float(clipped.mean()) if clipped.size else 0.0
        std = float(clipped.std()) if clipped.size else 1.0
    return {"kind": kind, "clip": [lo, hi], "mean": mean, "std": std if std > 1e-6 else 1.0, "scale": scale}


def _percentile_window(image: NDArray[Any], scale: float, pcts: tuple[float, ...]) -> tuple[float, float]:
    """``pcts``' percentiles of the image in physical units; 0 and 100 exactly its minimum and
    maximum (a float image's percentiles come from an even sample, which can miss the hottest voxels)."""
    st = stats(image, scale, pcts=pcts) or {}
    lo, hi = st.get(f"p{pcts[0]:g}", 0.0), st.get(f"p{pcts[1]:g}", 1.0)
    if image.size and pcts[0] == 0:
        lo = float(np.min(image)) * scale
    if image.size and pcts[1] == 100:
        hi = float(np.max(image)) * scale
    return lo, hi


FLAT = 0.99  # a window that clips this share of the body's voxels to one of its bounds is warned of


def window_issue(image: NDArray[Any], body: NDArray[np.bool_] | None, norm: dict[str, Any],
                 modality: str, limit: int = 4_000_000) -> InputError | None:
    """A ``normalisation_no_contrast`` warning when the window ``norm`` leaves (nearly) no contrast
    inside the body: 99 % or more of its voxels lie beyond one bound (clipped to it); none for an
    empty body (``body_mask_empty`` is said). A PET
    stored in Bq/mL under ``pet_clip: [0, 20]`` (a window in SUV) became an all-zero network input,
    its std of 0 stored as 1, silently (tester 27).

    >>> pet = np.full((10, 10, 4), 2000.0, np.float32); pet[4:6, 4:6, :] = 60000.0   # Bq/mL
    >>> body = np.ones(pet.shape, bool)
    >>> window_issue(pet, body, normalisation(pet, "PET", (), (0.5, 99.5), pet_clip=(0.0, 20.0)), "PET").kind
    'normalisation_no_contrast'
    >>> window_issue(pet / 5000, body, normalisation(pet / 5000, "PET", (), (0.5, 99.5), pet_clip=(0.0, 20.0)),
    ...              "PET") is None
    True
    """
    if body is None or not body.any():
        return None  # body_mask_empty says it
    inside = image[body]
    v = strided_sample(inside, limit).astype(np.float64) * norm.get("scale", 1.0)
    lo, hi = (float(x) for x in norm["clip"])
    at_lo, at_hi = float(np.mean(v < lo)), float(np.mean(v > hi))  # beyond: a body at the bound is not clipped
    if max(at_lo, at_hi) < FLAT:
        return None
    flat = float(np.std(np.clip(v, lo, hi))) <= 1e-6 * max(abs(lo), abs(hi), 1.0)
    kind, mod = norm["kind"], modality.upper()
    setting = {"ct": "stages.preprocess.ct_clip", "fixed": "stages.preprocess.pet_clip"}.get(
        kind, "stages.preprocess.pet_percentiles (else mr_percentiles)" if mod == "PET" else
        "stages.preprocess.mr_percentiles")
    p = np.percentile(v, (0.5, 50.0, 99.5), method="inverted_cdf")
    what = (f"clips {100 * at_hi:.1f} % of the body's voxels to its upper bound {hi:.6g}" if at_hi >= at_lo else
            f"clips {100 * at_lo:.1f} % of the body's voxels to its lower bound {lo:.6g}")
    detail = (f"the {mod} intensity window [{lo:.6g}, {hi:.6g}] ({setting}) {what}; the image's values there run "
              f"{float(v.min()):.6g}..{float(v.max()):.6g} (0.5th / 50th / 99.5th percentile {p[0]:.6g} / "
              f"{p[1]:.6g} / {p[2]:.6g}), so the normalised network input is (nearly) constant inside the body "
              + ("(std 0, stored as 1: all zeros)" if norm["std"] == 1.0 and flat else "(no contrast left)"))
    if kind == "fixed":
        remedy = ("pet_clip is in the PET images' own units, one window for every PET of the pipeline: SUV "
                  "(e.g. [0, 20]) for images stored as SUV, Bq/mL (thousands: about 5000 Bq/mL per SUV) for the "
                  "others — is this image in the other unit? Use stages.preprocess.pet_percentiles (each image's "
                  "own window, e.g. [0.5, 100]) instead, give pet_clip in the images' units, or take the "
                  "dataset's SUV image (or convert the PET to SUV before ingest); then run preprocess again")
    elif kind == "ct":
        remedy = ("check that the CT is in HU (an undeclared offset: ingest's ct_intensity_offset row says which "
                  "`fixes: {intensity_offset: ...}` to declare) and that stages.preprocess.ct_clip fits it")
    else:
        remedy = ("check the image (a mask, a constant or a map of differences?); if it is right, widen the "
                  "percentiles (" + setting + ")")
    return InputError("normalisation_no_contrast", detail, remedy=remedy)


def normalise(stored: NDArray[Any], norm: dict[str, Any]) -> NDArray[np.float32]:
    """Network input from stored values: ``(clip(x · scale, low, high) − mean) / std`` as float32."""
    x = stored.astype(np.float32)
    if norm.get("scale", 1.0) != 1.0:
        x *= np.float32(norm["scale"])
    lo, hi = norm["clip"]
    np.clip(x, lo, hi, out=x)
    x -= np.float32(norm["mean"])
    x /= np.float32(norm["std"])
    return x
