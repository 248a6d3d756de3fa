"""Attention maps and pseudo labels from an ensemble's soft predictions (pure numpy).

AbdomenAtlas-8K (../shared/docs/methods.md; its published code for the thresholds):

* inconsistency = standard deviation of the N models' probabilities (per voxel, per term);
* uncertainty = mean over models of ``-p log p`` (entropy of the sigmoid-style output);
* overlap = some model gives this term > 0.5 and some model gives another term > 0.5 at
  the voxel (per model, as the paper defines it: with softmax outputs two ensemble *means*
  can never both pass 0.5, so the mean would never see two models claiming one voxel);
* each criterion is thresholded (inconsistency > 0.1, uncertainty > 0.05), cleaned by
  erosion then dilation (2 iterations, 26-connectivity), and attention = the sum of the
  kept inconsistency + kept uncertainty + overlap; the attention size is its integral;
* pseudo label = ensemble mean > 0.5 (one label plane: the most probable such term).

:func:`attention_reference` does this on whole arrays (the reference, used by tests and
the benchmark harness); :class:`AttentionStream` does the same slab by slab along the last
axis, so a 512×512×1000 volume never needs a full-resolution float copy per term.

>>> import numpy as np
>>> p = [np.zeros((8, 8, 8), np.float32) for _ in range(3)]
>>> for x in p: x[2:6, 2:6, 2:6] = 0.9
>>> st = ensemble_stats(p)
>>> round(float(st.mean.max()), 4), round(float(st.std.max()), 3)
(0.9, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

F32 = NDArray[np.float32]
Bool = NDArray[np.bool_]


@dataclass(frozen=True)
class AttentionParams:
    """Thresholds of the attention map (defaults: AbdomenAtlas-8K's published code)."""

    threshold: float = 0.5  # pseudo label: ensemble mean above this
    inconsistency: float = 0.1  # std over models above this
    uncertainty: float = 0.05  # mean -p log p above this
    iterations: int = 2  # erosion then dilation, 3×3×3 structuring element


@dataclass(frozen=True)
class Stats:
    mean: F32
    std: F32
    entropy: F32
    peak: F32 | None = None  # the largest of the models' probabilities (None: the mean stands in)

    def claimed(self, threshold: float) -> Bool:
        """Voxels some model gives this term above ``threshold`` (the overlap criterion's test)."""
        return (self.mean if self.peak is None else self.peak) > threshold

    def rows(self, z0: int, z1: int) -> Stats:
        """These statistics for rows [z0, z1) of the last axis."""
        return Stats(self.mean[..., z0:z1], self.std[..., z0:z1], self.entropy[..., z0:z1],
                     None if self.peak is None else self.peak[..., z0:z1])


def entr(p: NDArray[Any]) -> F32:
    """``-p log p`` with 0 at p = 0 (``torch.special.entr``)."""
    p = np.clip(np.asarray(p, dtype=np.float32), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -p * np.log(p)
    out[p <= 0] = 0.0
    return out.astype(np.float32)


def ensemble_stats(probs: Sequence[NDArray[Any]]) -> Stats:
    """Mean, population std, mean ``-p log p`` and maximum over the models' probability arrays
    of one term.

    The mean and std are Welford's running ones: ``E[p²] − E[p]²`` in float32 cancels, and
    gave identical members a std of up to 3.5e-4 instead of 0.
    """
    n = len(probs)
    mean = np.zeros(np.shape(probs[0]), dtype=np.float32)
    m2 = np.zeros_like(mean)  # sum of squared deviations from the running mean
    h = np.zeros_like(mean)
    peak = np.zeros_like(mean)
    for k, p in enumerate(probs, start=1):
        p = np.asarray(p, dtype=np.float32)
        delta = p - mean
        mean += delta / np.float32(k)
        m2 += delta * (p - mean)
        h += entr(p)
        np.maximum(peak, p, out=peak)
    var = np.maximum(m2 / np.float32(n), 0.0)
    return Stats(mean, np.sqrt(var).astype(np.float32, copy=False), (h / n).astype(np.float32, copy=False), peak)


def clean_reference(mask: Bool, iterations: int) -> Bool:
    """Erosion then dilation with a 3×3×3 cube, ``iterations`` times each (whole array)."""
    if iterations <= 0:
        return mask.astype(bool)
    st = ndimage.generate_binary_structure(3, 3)
    er = ndimage.binary_erosion(mask, structure=st, iterations=iterations)
    return ndimage.binary_dilation(er, structure=st, iterations=iterations)


def label_plane(means: Sequence[F32], threshold: float) -> NDArray[np.uint8]:
    """Code k+1 where term k has the largest mean above ``threshold`` (0: none)."""
    stack = np.stack([np.asarray(m, dtype=np.float32) for m in means])
    above = stack > threshold
    best = np.argmax(np.where(above, stack, -1.0), axis=0)
    return np.where(above.any(axis=0), best + 1, 0).astype(np.uint8)


def claims(stats: Sequence[Stats], threshold: float) -> Bool:
    """Per term (first axis): voxels some model gives it above ``threshold``."""
    return np.stack([s.claimed(threshold) for s in stats])


WORD_BITS = 64


def word_dtype(n_bits: int) -> type[np.unsignedinteger[Any]]:
    """The narrowest unsigned integer holding ``n_bits`` attention bits (at most 64)."""
    return np.uint8 if n_bits <= 8 else np.uint16 if n_bits <= 16 else np.uint32 if n_bits <= 32 else np.uint64


def attention_words(shape: tuple[int, ...], n_targets: int) -> list[NDArray[Any]]:
    """Zeroed attention bit arrays for ``n_targets`` targets: target k is bit ``k % 64`` of word
    ``k // 64``; each word as narrow as its bits allow (one uint8 array for up to 8 targets)."""
    n = max(1, n_targets)
    return [np.zeros(shape, dtype=word_dtype(min(WORD_BITS, n - w))) for w in range(0, n, WORD_BITS)]


def attention_bit(words: Sequence[NDArray[Any]], k: int) -> Bool:
    """Target ``k``'s attention mask from its word."""
    w = words[k // WORD_BITS]
    return ((w >> w.dtype.type(k % WORD_BITS)) & w.dtype.type(1)).astype(bool)


@dataclass
class TermSummary:
    """Integrals (ml) and counts of one term's attention map."""

    inconsistency: float = 0.0
    uncertainty: float = 0.0
    overlap: float = 0.0
    attention_voxels: int = 0
    per_slice: list[int] = field(default_factory=list)

    @property
    def attention_size(self) -> float:
        return self.inconsistency + self.uncertainty + self.overlap

    @property
    def peak_slice(self) -> int | None:
        if not self.per_slice or max(self.per_slice) == 0:
            return None
        return int(np.argmax(self.per_slice))


def attention_reference(stats: dict[str, Stats], targets: Sequence[str], params: AttentionParams,
                        voxel_ml: float = 1.0) -> tuple[NDArray[np.uint8], dict[str, Bool], dict[str, TermSummary]]:
    """Whole-array attention: (label plane over ``stats`` order, attention mask and summary per target)."""
    terms = list(stats)
    codes = label_plane([stats[t].mean for t in terms], params.threshold)
    above = claims([stats[t] for t in terms], params.threshold)
    crowded = above.sum(axis=0) >= 2
    masks: dict[str, Bool] = {}
    summaries: dict[str, TermSummary] = {}
    for t in targets:
        i = terms.index(t)
        st = stats[t]
        inc = clean_reference(st.std > params.inconsistency, params.iterations)
        unc = clean_reference(st.entropy > params.uncertainty, params.iterations)
        ovl = above[i] & crowded
        m = inc | unc | ovl
        masks[t] = m
        summaries[t] = TermSummary(float(st.std[inc].sum(dtype=np.float64)) * voxel_ml,
                                   float(st.entropy[unc].sum(dtype=np.float64)) * voxel_ml,
                                   float(ovl.sum()) * voxel_ml, int(m.sum()),
                                   [int(x) for x in m.sum(axis=(0, 1))])
    return codes, masks, summaries


def _open_block(block: NDArray[np.uint8], lo: int, hi: int, s: int, e: int, r: int) -> Bool:
    """Cleaned rows [s, e) (last axis) of ``block`` that holds rows [lo, hi) of the volume."""
    out = np.zeros(block.shape[:2] + (e - s,), dtype=bool)
    if not block.any():
        return out
    # only the in-plane bounding box of the raw mask (+ margin) can hold cleaned voxels
    xy = np.argwhere(block.any(axis=2))
    (x0, y0), (x1, y1) = np.maximum(xy.min(0) - 2 * r, 0), np.minimum(xy.max(0) + 2 * r + 1, block.shape[:2])
    sub = block[x0:x1, y0:y1]
    size = 2 * r + 1
    er = ndimage.minimum_filter(sub, size=size, mode="constant", cval=0)
    a, b = max(lo, s - r), min(hi, e + r)
    dil = ndimage.maximum_filter(er[..., a - lo:b - lo], size=size, mode="constant", cval=0)
    out[x0:x1, y0:y1] = dil[..., s - a:e - a].astype(bool)
    return out


class AttentionStream:
    """Slab-by-slab equivalent of :func:`attention_reference` along the last axis.

    Push consecutive slabs of per-term :class:`Stats` (``push(z0, z1, stats)``), then
    ``finish()``. Keeps a full-size uint8 label plane and the attention bits (``words``, see
    :func:`attention_words`: one uint8 array for up to 8 targets, one uint64 array per 64), plus
    ``2 × iterations`` slices of history for the morphological cleaning.
    """

    def __init__(self, shape: tuple[int, int, int], terms: Sequence[str], targets: Sequence[str],
                 params: AttentionParams, voxel_ml: float = 1.0) -> None:
        self.shape, self.terms, self.targets = shape, list(terms), list(targets)
        self.params, self.voxel_ml = params, voxel_ml
        self.label = np.zeros(shape, dtype=np.uint8)
        self.words = attention_words(shape, len(self.targets))
        self.summary = {t: TermSummary(per_slice=[0] * shape[2]) for t in self.targets}
        self._pending: list[tuple[int, dict[str, Any]]] = []  # (z0, arrays) not yet cleaned
        self._done = 0  # rows [0, _done) are final
        self._next = 0  # next row expected

    def push(self, z0: int, z1: int, stats: dict[str, Stats]) -> None:
        if z0 != self._next:
            raise ValueError(f"slabs must be pushed in order: expected row {self._next}, got {z0}")
        self.label[..., z0:z1] = label_plane([stats[t].mean for t in self.terms], self.params.threshold)
        above = claims([stats[t] for t in self.terms], self.params.threshold)
        crowded = above.sum(axis=0) >= 2
        arrays: dict[str, Any] = {}
        for t in self.targets:
            st = stats[t]
            arrays[t] = (st.std > self.params.inconsistency, st.entropy > self.params.uncertainty,
                         above[self.terms.index(t)] & crowded, st.std.astype(np.float16),
                         st.entropy.astype(np.float16))
        self._pending.append((z0, arrays))
        self._next = z1
        self._flush(final=z1 >= self.shape[2])

    def finish(self) -> dict[str, TermSummary]:
        if self._next < self.shape[2]:
            raise ValueError(f"only rows [0, {self._next}) of {self.shape[2]} were pushed")
        self._flush(final=True)
        return self.summary

    def _flush(self, final: bool) -> None:
        r = self.params.iterations
        end = self._next if final else self._next - 2 * r
        if end <= self._done:
            return
        lo = self._pending[0][0]
        hi = self._next
        s, e = self._done, end
        for k, t in enumerate(self.targets):
            parts = [a[t] for _, a in self._pending]
            inc, unc, ovl, std, ent = (np.concatenate([p[j] for p in parts], axis=-1) for j in range(5))
            rows = slice(s - lo, e - lo)
            if r > 0:
                inc_c = _open_block(inc.astype(np.uint8), lo, hi, s, e, r)
                unc_c = _open_block(unc.astype(np.uint8), lo, hi, s, e, r)
            else:
                inc_c, unc_c = inc[..., rows], unc[..., rows]
            ov = ovl[..., rows]
            m = inc_c | unc_c | ov
            sm = self.summary[t]
            sm.inconsistency += float(std[..., rows][inc_c].sum(dtype=np.float64)) * self.voxel_ml
            sm.uncertainty += float(ent[..., rows][unc_c].sum(dtype=np.float64)) * self.voxel_ml
            sm.overlap += float(ov.sum()) * self.voxel_ml
            sm.attention_voxels += int(m.sum())
            sm.per_slice[s:e] = [int(x) for x in m.sum(axis=(0, 1))]
            word = self.words[k // WORD_BITS]
            word[..., s:e] |= m.astype(word.dtype) << word.dtype.type(k % WORD_BITS)
        self._done = e
        keep_from = self._done - 2 * r
        self._pending = self._trim(keep_from)

    def _trim(self, keep_from: int) -> list[tuple[int, dict[str, Any]]]:
        """Drop history before ``keep_from`` (slabs are cut so only needed rows stay)."""
        out = []
        for z0, arrays in self._pending:
            n = next(iter(arrays.values()))[0].shape[-1] if arrays else 0
            if z0 + n <= keep_from:
                continue
            if z0 < keep_from:
                cut = keep_from - z0
                arrays = {t: tuple(a[..., cut:] for a in v) for t, v in arrays.items()}
                z0 = keep_from
            out.append((z0, arrays))
        return out
