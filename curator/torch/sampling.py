"""Which case and where: SAT's dataset balancing and repeat factor, foreground oversampling.

SAT weights each scan of a dataset with ``N`` cases by ``1/√N`` and repeats a scan
``R = (S_roi / (288·288·96)) · (M / 32)`` times (``S_roi``: voxels of the annotated region's
bounding box, ``M``: annotated classes); here ``R`` is floored at 1 and multiplies the weight.

>>> w = case_weights(["a", "a", "a", "a", "b"], [1.0] * 5, balance=True)
>>> [round(x, 3) for x in w]
[0.167, 0.167, 0.167, 0.167, 0.333]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

SAT_PATCH_VOXELS = 288 * 288 * 96
SAT_CLASSES = 32


def repeat_factor(roi_voxels: int, n_terms: int) -> float:
    return max(1.0, roi_voxels / SAT_PATCH_VOXELS * n_terms / SAT_CLASSES)


def case_weights(datasets: Sequence[str], repeats: Sequence[float], balance: bool = True) -> list[float]:
    """Sampling probability of every case (sums to 1)."""
    n = Counter(datasets)
    w = np.asarray([(1.0 / np.sqrt(n[d]) if balance else 1.0) * r for d, r in zip(datasets, repeats, strict=True)])
    total = float(w.sum())
    return [float(x) / total for x in w] if total > 0 else []


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item: the same (seed, epoch, index) always draws the same patch,
    whichever worker or rank draws it."""
    return np.random.default_rng([seed, epoch, index])


def patch_start(rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int],
                centre: NDArray[np.int64] | None) -> tuple[int, ...]:
    """Patch origin: around ``centre`` (a voxel kept inside the patch) or uniform over the image."""
    out = []
    for ax, (n, p) in enumerate(zip(shape, patch, strict=True)):
        if centre is not None:
            c = int(centre[ax])
            lo, hi = c - p + 1, c  # any origin that keeps the voxel inside
            lo, hi = max(lo, min(0, n - p)), min(hi, max(0, n - p))
            out.append(int(rng.integers(min(lo, hi), max(lo, hi) + 1)))
        else:
            out.append(int(rng.integers(min(0, n - p), max(0, n - p) + 1)))
    return tuple(out)
