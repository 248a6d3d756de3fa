"""One case end to end, without files: ensemble → streamed statistics → pseudo label + attention.

:func:`infer_case` takes a :class:`~curator.pseudolabel.reader.SlabReader` (the image on
the model grid), the loaded models and the target terms (those the dataset does not
annotate), and returns the label plane and attention bits on the store grid plus per-term
summaries. Every model's probability of a term is used for the label assignment (an
annotated organ still competes for its voxels); only targets get pseudo labels and
attention.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from curator.errors import CuratorError
from curator.pseudolabel.core import AttentionParams, AttentionStream, TermSummary, ensemble_stats
from curator.pseudolabel.etta import EttaConfig, adapted
from curator.pseudolabel.loading import LoadedModel
from curator.pseudolabel.reader import SlabReader, to_model_index, to_source_grid
from curator.pseudolabel.window import axis_map, sliding_window

log = logging.getLogger("curator")
SUB_SLAB_VOXELS = 1 << 22  # voxels per term whose ensemble statistics are held at once (16 rows of 512²)


@dataclass
class CaseLabels:
    """Outputs of one case on the store grid."""

    targets: list[str]
    plane: NDArray[np.uint8]  # code k+1 = targets[k]
    words: list[NDArray[Any]]  # attention: bit k % 64 of words[k // 64] = targets[k] (core.attention_words)
    summaries: dict[str, TermSummary]
    peak_slice: dict[str, int | None]  # store-grid index along the last axis
    model_voxel_ml: float
    etta: list[dict[str, Any]] = field(default_factory=list)

    def voxels(self, term: str) -> int:
        return int((self.plane == self.targets.index(term) + 1).sum())


def ensemble_terms(models: Sequence[LoadedModel]) -> list[str]:
    out: list[str] = []
    for m in models:
        out += [t for t in m.terms if t not in out]
    return out


def _etta_patches(reader: SlabReader, patch: tuple[int, int, int], n: int, seed: int) -> torch.Tensor:
    """``n`` patches (stored axes) from the central slab of the volume, positions drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    X, Y, Z = reader.shape
    z0 = max(0, (Z - patch[2]) // 2)
    slab = reader.slab(z0, z0 + patch[2])
    slab = np.pad(slab, [(0, max(0, patch[0] - X)), (0, max(0, patch[1] - Y)), (0, 0)], mode="edge")
    out = []
    for _ in range(n):
        x = int(rng.integers(0, slab.shape[0] - patch[0] + 1))
        y = int(rng.integers(0, slab.shape[1] - patch[1] + 1))
        out.append(slab[x:x + patch[0], y:y + patch[1]])
    return torch.from_numpy(np.stack(out)[:, None].copy())


# ETTA adapts the process's one cached copy of each model in place: its cases run one at a time per
# process (threads of a Dask worker started without `--resources GPU=1` ran several at once)
_ETTA_LOCK = threading.Lock()
_DEFAULT_PARAMS = AttentionParams()
_DEFAULT_ETTA = EttaConfig()


def infer_case(reader: SlabReader, models: Sequence[LoadedModel], targets: Sequence[str], *,
               patch: Sequence[int], params: AttentionParams = _DEFAULT_PARAMS, overlap: float = 0.5,
               batch: int = 4, amp: bool = True, orientation: str | None = None,
               etta: EttaConfig = _DEFAULT_ETTA, blend: str = "float32") -> CaseLabels:
    """Pseudo label plane, attention bits and summaries for ``targets`` (see module docstring).

    When the device runs out of memory (``torch.OutOfMemoryError``: a big volume, a large
    ``batch``) the case starts again with half the batch, down to one window at a time (the
    batch only says how many windows run at once); out of memory at one window is a ``gpu_out_of_memory``
    :class:`~curator.errors.CuratorError` naming the settings that lower the need.
    """
    b = max(1, int(batch))
    while True:
        try:
            return _infer_case(reader, models, targets, patch=patch, params=params, overlap=overlap, batch=b,
                               amp=amp, orientation=orientation, etta=etta, blend=blend)
        except torch.OutOfMemoryError as e:
            # leave the except block before freeing: the traceback holds the buffers' frames
            why = str(e).split("\n")[0][:300]
        _release(models)
        if b == 1:
            device = models[0].device if models else "?"
            raise CuratorError("gpu_out_of_memory", f"{device} ran out of memory on this case even with one "
                               f"window at a time ({why})",
                               remedy="lower stages.pseudolabel.patch, set blend: float16 (half the blending "
                               "buffers), etta.patches or the ensemble's size, run one case per GPU (a Dask "
                               "worker with --nthreads 1), or use device: cpu")
        log.warning("%s ran out of memory at batch %d; the case starts again at batch %d",
                    models[0].device, b, b // 2)
        b //= 2


def _release(models: Sequence[LoadedModel]) -> None:
    """Drop what a failed attempt left (its tensors may sit in reference cycles) and hand the CUDA
    caching allocator's free blocks back: the retry then allocates afresh, with less fragmentation
    (torch docs, ``torch.cuda.empty_cache``)."""
    gc.collect()
    if any(m.device.type == "cuda" for m in models):
        torch.cuda.empty_cache()


def _infer_case(reader: SlabReader, models: Sequence[LoadedModel], targets: Sequence[str], *,
                patch: Sequence[int], params: AttentionParams, overlap: float, batch: int, amp: bool,
                orientation: str | None, etta: EttaConfig, blend: str) -> CaseLabels:
    terms = ensemble_terms(models)
    targets = [t for t in targets if t in terms]
    voxel_ml = float(np.prod(reader.spacing)) / 1000.0
    stream = AttentionStream(reader.shape, terms, targets, params, voxel_ml)
    pp = (int(patch[0]), int(patch[1]), int(patch[2]))
    reports: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if etta.enabled:
            stack.enter_context(_ETTA_LOCK)
            for m in models:  # each member's patches as it normalises them (the same positions)
                xb = _etta_patches(reader.for_intensity(m.spec.intensity), pp, etta.patches,
                                   etta.seed).to(models[0].device)
                orient = axis_map(orientation, m.spec.orientation)

                def fwd(x: torch.Tensor, m: LoadedModel = m, orient: Any = orient) -> torch.Tensor:
                    perm, flips = orient
                    y = x.permute(0, 1, 2 + perm[0], 2 + perm[1], 2 + perm[2])
                    return m.forward(y.flip([2 + a for a in flips]) if flips else y)  # no mirroring

                reports.append(stack.enter_context(adapted(m.net, fwd, xb, m.spec.activation, etta)))
        step = max(1, SUB_SLAB_VOXELS // (reader.shape[0] * reader.shape[1]))
        for z0, z1, probs in sliding_window(reader, models, pp, overlap=overlap, batch=batch, amp=amp,
                                            orientation=orientation, blend=blend):
            for s0 in range(z0, z1, step):  # statistics a few rows at a time: bounded memory
                s1 = min(z1, s0 + step)
                rows = slice(s0 - z0, s1 - z0)
                stats = {t: ensemble_stats([p[m.terms.index(t), :, :, rows] for p, m in zip(probs, models, strict=True)
                                            if t in m.terms]) for t in terms}
                stream.push(s0, s1, stats)
                del stats
    summaries = stream.finish()
    lut = np.zeros(len(terms) + 1, dtype=np.uint8)
    for k, t in enumerate(targets, start=1):
        lut[terms.index(t) + 1] = k
    plane = to_source_grid(lut[stream.label], reader.src_shape)
    words = [to_source_grid(w, reader.src_shape) for w in stream.words]
    peaks = {t: (None if s.peak_slice is None else
                 to_model_index(s.peak_slice, reader.shape[2], reader.src_shape[2])) for t, s in summaries.items()}
    return CaseLabels(list(targets), plane, words, summaries, peaks, voxel_ml, reports)


