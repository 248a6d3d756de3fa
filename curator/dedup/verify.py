"""Verification of a candidate pair: align two thumbnails, compare their content.

Both thumbnails are brought to a common voxel size (the coarser of the two, per axis),
aligned by masked normalised cross-correlation over their fields of view (Padfield 2012, as
:func:`skimage.registration.phase_cross_correlation` with masks computes it — :func:`masked_ncc`
computes the same values in 0.6 of its time for masks covering the whole grids; this finds crops,
partial z-overlaps and wrong origins alike), and compared over the overlap:

* ``score`` — Spearman rank correlation of the two scans over the voxels inside either
  body (air excluded, so two bodies in air do not look alike);
* ``detail`` — correlation of the fine texture (a band-pass of both) after sub-voxel alignment:
  what two different patients never share;
* ``coverage`` — share of the more contained scan's body that lies in the overlap;
* ``dice`` — agreement of the two body masks inside the overlap;
* ``warp`` — how far the parts of the overlap (up to 3×3×3 blocks) disagree about the
  alignment: each block finds its own sub-voxel shift, one translation and one scale per axis
  are fitted to them (a rewritten spacing is a scale), and ``warp`` is the median distance
  (voxels) of the blocks from that fit. A copy is the same scan moved and maybe rescaled, so
  its parts agree (≤ 0.23 in the suite, ≤ 0.53 for defaced copies); two patients differ by a
  deformation, and even synthetic near-twins whose organ edges coincide within a voxel or two
  (texture ``detail`` 0.69, like a copy) need their parts moved apart (≥ 1.0).

A pair is the same scan when ``score``, ``detail``, ``coverage`` and ``warp`` pass their
thresholds (:class:`VerifySettings`); the thresholds come from ``benchmarks/dedup_eval.py``.

Before aligning, the number of distinct intensity levels inside each body is compared: a
label map has a handful (one per class), a scan and every copy of it many more (resampling
adds levels, clipping removes a few). A pair whose counts differ more than
``1 / MIN_LEVEL_RATIO``-fold is a scan and a label map (or a mask), never one scan: on a
smooth phantom a scan and its own label map correlate as well as two copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sp_fft
from scipy import ndimage
from scipy.stats import spearmanr
from skimage.registration import phase_cross_correlation

from curator.dedup.thumbnail import Thumbnail, grid_after, resample_to

MIN_OVERLAP_VOXELS = 100  # below this, two aligned bodies say too little to confirm a copy
MIN_LEVEL_RATIO = 0.2  # copies in the suite: >= 0.36; scan vs its label map: <= 0.19 (benchmarks/dedup_eval.py)
WARP_BLOCKS = 3  # parts per axis whose own alignments ``warp`` compares
WARP_MIN_SIZE = 5  # voxels per axis of a part (fewer parts along a short axis)
WARP_MIN_BODY = 0.2  # share of a part inside both bodies (air and a defaced corner say nothing)
WARP_MIN_PARTS = 4  # fewer usable parts: warp is not measured


def levels(t: Thumbnail) -> int:
    """Distinct intensity levels (of 256 quantiles) inside the thumbnail's body."""
    return int(np.count_nonzero(np.bincount(t.ranks[t.body].ravel(), minlength=256))) if t.body.any() else 0


@dataclass(frozen=True)
class Match:
    """How well two thumbnails agree once aligned.

    ``offset_mm`` maps a world point of ``b`` (RAS mm, as ``b``'s header says) onto the same
    anatomy in ``a``: ``p_a = p_b + offset_mm`` (non-zero when an origin is stale or wrong).
    """

    score: float  # Spearman correlation over the bodies in the overlap
    detail: float  # correlation of the fine texture (image minus its blur) after sub-voxel alignment
    coverage: float
    dice: float
    voxels: int
    offset_mm: tuple[float, float, float]
    warp: float | None = None  # median disagreement of the parts' alignments (voxels); None: too few parts

    def to_dict(self) -> dict[str, object]:
        return {"score": round(self.score, 4), "detail": round(self.detail, 4), "coverage": round(self.coverage, 4),
                "dice": round(self.dice, 4), "voxels": self.voxels, "offset_mm": [round(x, 1) + 0.0 for x in self.offset_mm],
                "warp": None if self.warp is None else round(self.warp, 3)}


NO_MATCH = Match(0.0, 0.0, 0.0, 0.0, 0, (0.0, 0.0, 0.0))


def common_spacing(a: Thumbnail, b: Thumbnail) -> tuple[float, ...]:
    """The voxel size two thumbnails are compared at: the coarser of the two, per axis."""
    return tuple(float(max(x, y)) for x, y in zip(a.spacing, b.spacing, strict=True))


def _on_grid(t: Thumbnail, common: tuple[float, float, float]) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.float64]]:
    img = resample_to(t.ranks.astype(np.float32), t.spacing, common)
    body = resample_to(t.body.astype(np.float32), t.spacing, common) > 0.5
    _, origin = grid_after(t.ranks.shape, t.spacing, t.origin, common)
    return img, body, np.asarray(origin)


def _overlap(shape_a: tuple[int, ...], shape_b: tuple[int, ...], d: NDArray[np.int64]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices of a and b that overlap when b's voxel v sits on a's voxel v + d."""
    sa, sb = [], []
    for na, nb, di in zip(shape_a, shape_b, d, strict=True):
        lo, hi = max(0, int(di)), min(na, nb + int(di))
        if hi <= lo:
            return None
        sa.append(slice(lo, hi))
        sb.append(slice(lo - int(di), hi - int(di)))
    return tuple(sa), tuple(sb)


def _corr(x: NDArray[np.floating], y: NDArray[np.floating]) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else 0.0


def _highpass(a: NDArray[np.float32]) -> NDArray[np.float32]:
    band = ndimage.gaussian_filter(a, 0.7, mode="nearest") - ndimage.gaussian_filter(a, 2.0, mode="nearest")
    return np.asarray(band, dtype=np.float32)


def _box_sums(stack: NDArray[np.float64], nb: tuple[int, ...]) -> NDArray[np.float64]:
    """For each array of ``stack`` (``k × na``) and every displacement ``d`` (``-(nb-1) .. na-1``
    per axis) of a box of shape ``nb`` over it: the sum over their intersection. From the
    summed-area table ``T`` (sums below each index), axis by axis (a box sum is separable):
    ``T[min(d + m, na)] - T[max(d, 0)]``."""
    k, *na = stack.shape
    out = np.zeros((k, *(n + 1 for n in na)))
    out[:, 1:, 1:, 1:] = stack.cumsum(1).cumsum(2).cumsum(3)
    for axis, (n, m) in enumerate(zip(na, nb, strict=True), start=1):

        def at(s: slice, axis: int = axis) -> tuple[slice, ...]:
            return (slice(None),) * axis + (s,)

        shape = list(out.shape)
        shape[axis] = n + m - 1
        y = np.empty(shape)
        y[at(slice(0, n))] = out[at(slice(1, n + 1))]
        y[at(slice(n, None))] = out[at(slice(n, n + 1))]
        y[at(slice(m - 1, None))] -= out[at(slice(0, n))]  # the box starts at d >= 0
        out = y
    return out


def masked_ncc(a: NDArray[np.floating], b: NDArray[np.floating], overlap_ratio: float) -> NDArray[np.float64]:
    """Normalised cross-correlation of 3-D ``a`` and ``b`` over their overlap for every integer
    displacement ``d`` of ``b``'s voxel 0 in ``a`` (index ``d + nb - 1``); 0 where the overlap
    holds fewer than ``overlap_ratio`` of the largest one's voxels or either side is flat.

    Padfield's masked NCC (what skimage's ``cross_correlate_masked`` computes) for masks that
    cover the whole arrays: the overlap counts and the overlap sums of ``a``, ``a²``, ``b`` and
    ``b²`` are then box sums, and only the cross term needs FFTs — 3 real FFTs where skimage
    takes 12 complex ones (the coarse alignment was 70 % of a comparison). Same values as
    skimage's within float32 rounding (a test).
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = a64.shape, b64.shape
    full = tuple(x + y - 1 for x, y in zip(na, nb, strict=True))
    fast = tuple(sp_fft.next_fast_len(n, real=True) for n in full)
    # float64 throughout: a float32 cross term against float64 box sums turned near-flat overlaps
    # (air) into spurious ±1 correlations
    fa = sp_fft.rfftn(a64, fast)
    fa *= np.conj(sp_fft.rfftn(b64, fast))
    cross = sp_fft.irfftn(fa, fast)
    # circular lag d sits at index d mod fast: roll the negative lags in front
    sab = np.roll(cross, tuple(m - 1 for m in nb), axis=(0, 1, 2))[tuple(slice(0, n) for n in full)]
    lengths = [np.clip(np.arange(-(m - 1), x) + m, 0, x) - np.clip(np.arange(-(m - 1), x), 0, x)
               for x, m in zip(na, nb, strict=True)]
    n = (lengths[0][:, None, None] * lengths[1][None, :, None] * lengths[2][None, None, :]).astype(np.float64)
    sa, sa2 = _box_sums(np.stack([a64, a64 * a64]), nb)
    # b's overlap sums: the same boxes seen from b (a box of a's shape over b, reversed lags)
    sb, sb2 = _box_sums(np.stack([b64, b64 * b64]), na)[:, ::-1, ::-1, ::-1]
    np.fmax(n, np.finfo(np.float64).eps, out=n)
    num = sa * sb
    num /= n
    np.subtract(sab, num, out=num)
    va = sa * sa
    va /= n
    np.subtract(sa2, va, out=va)
    vb = sb * sb
    vb /= n
    np.subtract(sb2, vb, out=vb)
    np.fmax(va, 0.0, out=va)
    np.fmax(vb, 0.0, out=vb)
    va *= vb
    den = np.sqrt(va, out=va)
    out = np.zeros(full)
    # flat overlaps (air, padding) have a spread of rounding errors only: skimage's cut-off, made for
    # its float32 sums, keeps them at 0 here too
    np.divide(num, den, out=out, where=den > 1e3 * np.finfo(np.float32).eps * den.max())
    np.clip(out, -1.0, 1.0, out=out)
    out[n < overlap_ratio * n.max()] = 0.0
    return out


def _coarsened(ia: NDArray[np.float32], ib: NDArray[np.float32]
               ) -> tuple[NDArray[np.float32], NDArray[np.float32], int]:
    """The grids the coarse alignment searches and their step: 2× coarser when the scans are big
    enough (8× fewer voxels, same answer ± 1 voxel)."""
    if min(*ia.shape, *ib.shape) < 16:
        return ia, ib, 1
    return ndimage.gaussian_filter(ia, 0.85)[::2, ::2, ::2], ndimage.gaussian_filter(ib, 0.85)[::2, ::2, ::2], 2


def ncc_peak(a: NDArray[np.floating], b: NDArray[np.floating], overlap_ratio: float) -> NDArray[np.float64]:
    """Where ``b``'s voxel 0 lands in ``a`` at the :func:`masked_ncc` maximum (equal maxima: their mean)."""
    xc = masked_ncc(a, b, overlap_ratio)
    return np.asarray(np.argwhere(xc == xc.max()).mean(axis=0) - (np.asarray(b.shape) - 1))


def _coarse_shift(ia: NDArray[np.float32], ib: NDArray[np.float32], overlap_ratio: float) -> NDArray[np.int64]:
    """Where b's voxel 0 lands in a (whole voxels): masked NCC over the fields of view, on the
    :func:`_coarsened` grids."""
    ca, cb, step = _coarsened(ia, ib)
    return np.asarray(np.rint(ncc_peak(ca, cb, overlap_ratio) * step), dtype=np.int64)


def _refine(ia: NDArray[np.float32], ib: NDArray[np.float32], d: NDArray[np.int64]
            ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Integer and sub-voxel correction of ``d`` by upsampled phase correlation of the overlap."""
    ov = _overlap(ia.shape, ib.shape, d)
    if ov is None:
        return d, np.zeros(3)
    va, vb = ia[ov[0]], ib[ov[1]]
    if min(va.shape) < 5:
        return d, np.zeros(3)
    r, _, _ = phase_cross_correlation(va, vb, upsample_factor=10, normalization=None)
    r = np.asarray(r, dtype=np.float64)
    if np.any(np.abs(r) > 3):  # not a small correction: keep the coarse answer
        return d, np.zeros(3)
    whole = np.rint(r).astype(np.int64)
    return d + whole, r - whole


def _warp(va: NDArray[np.float32], vb: NDArray[np.float32], both: NDArray[np.bool_]) -> float | None:
    """Median distance (voxels) of the parts' own shifts from one translation + scale per axis
    (see module docstring); ``None`` when fewer than ``WARP_MIN_PARTS`` parts hold enough body."""
    n = [max(1, min(WARP_BLOCKS, size // WARP_MIN_SIZE)) for size in va.shape]
    shifts, centres = [], []
    for idx in np.ndindex(*n):
        part = tuple(slice(i * size // k, (i + 1) * size // k) for i, size, k in zip(idx, va.shape, n, strict=True))
        x, y = va[part], vb[part]
        if both[part].mean() < WARP_MIN_BODY or min(x.shape) < 2 or x.std() == 0 or y.std() == 0:
            continue
        r, _, _ = phase_cross_correlation(x, y, upsample_factor=10, normalization=None)
        shifts.append(np.asarray(r, dtype=np.float64))
        centres.append([(sl.start + sl.stop) / 2 for sl in part])
    if len(shifts) < WARP_MIN_PARTS:
        return None
    r, c = np.asarray(shifts), np.asarray(centres, dtype=np.float64)
    residual = np.empty_like(r)
    for k in range(3):
        if np.unique(c[:, k]).size >= 3:  # a scale is measurable along this axis
            design = np.stack([np.ones(len(c)), c[:, k]], axis=1)
            coef = np.linalg.lstsq(design, r[:, k], rcond=None)[0]
            residual[:, k] = r[:, k] - design @ coef
        else:
            residual[:, k] = r[:, k] - np.median(r[:, k])
    return float(np.median(np.linalg.norm(residual, axis=1)))


def compare(a: Thumbnail, b: Thumbnail, overlap_ratio: float = 0.1) -> Match:
    """Align ``b`` onto ``a`` and measure their agreement (see module docstring)."""
    la, lb = levels(a), levels(b)
    if min(la, lb) < MIN_LEVEL_RATIO * max(la, lb):
        return NO_MATCH  # a label map (or mask) against a scan
    common = common_spacing(a, b)
    ia, ma, oa = _on_grid(a, common)  # type: ignore[arg-type]
    ib, mb, ob = _on_grid(b, common)  # type: ignore[arg-type]
    if min(ia.size, ib.size) < MIN_OVERLAP_VOXELS:
        return NO_MATCH
    d, frac = _refine(ia, ib, _coarse_shift(ia, ib, overlap_ratio))
    ov = _overlap(ia.shape, ib.shape, d)
    offset = oa - ob + (d + frac) * np.asarray(common)
    if ov is None:
        return NO_MATCH
    va, vb = ia[ov[0]], ib[ov[1]]
    ba, bb = ma[ov[0]], mb[ov[1]]
    region = ba | bb
    n = int(region.sum())
    body_a, body_b = float(ma.sum()), float(mb.sum())
    if n < MIN_OVERLAP_VOXELS or min(body_a, body_b) == 0:
        return Match(0.0, 0.0, 0.0, 0.0, n, tuple(float(x) for x in offset))  # type: ignore[arg-type]
    # the share of the more contained body that lies in the overlap (each body comes from its own
    # scan's threshold: a z-crop of faint end slices has a body where the original's sees none)
    coverage = max(float(ba.sum()) / body_a, float(bb.sum()) / body_b)
    dice = 2.0 * float((ba & bb).sum()) / float(ba.sum() + bb.sum())
    vb2 = ndimage.shift(vb, frac, order=1, mode="nearest") if np.any(frac != 0) else vb
    x, y = va[region], vb2[region]
    rho = float(spearmanr(x, y).statistic) if x.min() < x.max() and y.min() < y.max() else 0.0
    detail = _corr(_highpass(va)[region], _highpass(vb2)[region])
    return Match(rho if np.isfinite(rho) else 0.0, detail, coverage, dice, n,
                 tuple(float(x) for x in offset), _warp(va, vb2, ba & bb))  # type: ignore[arg-type]


@dataclass(frozen=True)
class VerifySettings:
    """Acceptance thresholds of a verified pair (chosen from ``benchmarks/dedup_eval.py``)."""

    min_score: float = 0.5
    min_detail: float = 0.5
    min_coverage: float = 0.5
    max_warp: float = 0.75  # voxels: copies <= 0.53 (defaced), synthetic near-twins >= 1.0
    overlap_ratio: float = 0.1  # smallest overlap (share of the smaller scan) the alignment may choose


def accepts(m: Match, s: VerifySettings) -> bool:
    """True when an aligned pair is the same scan."""
    return (m.score >= s.min_score and m.detail >= s.min_detail and m.coverage >= s.min_coverage
            and (m.warp is None or m.warp <= s.max_warp))
