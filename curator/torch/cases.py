"""``CaseDataset``: whole cases from a release, one item per case, for validation and testing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curator.release.query import Release
from curator.torch.dataset import PatchDataset, worker_errors
from curator.torch.sampling import item_rng


class CaseDataset(PatchDataset):
    """Every selected case of ``release`` whole, in case-id order: for a validation loop
    (sliding-window inference over ``image``, metrics against ``masks``) and for testing.

    Cases are selected as :class:`PatchDataset` selects them — ``where``, ``split`` (default
    ``"val"``), ``layers``, the training view (``duplicates``, ``qc_filter``; QC's exclusions are
    not applied to ``test`` cases unless ``qc_filter_test=True``: ``split="test"`` evaluates on the
    whole test set, ``view.test_flagged`` lists the labels QC flagged there), ``labelled_only``,
    ``channels`` — and items hold the same keys over the store's whole grid: ``image`` float32
    ``(C, X, Y, Z)``, ``masks`` uint8 ``(T, X, Y, Z)``, ``present``, ``layers``, ``prompts``, ``case_id``
    (``channel_ids`` with channels), ``start`` (zeros), plus ``affine`` (float64 4×4: the store
    grid's voxel indices to patient RAS millimetres, to save a prediction as NIfTI) and ``spacing``
    (mm, for distance-based metrics). Items differ in shape: use ``batch_size=1``, or
    ``collate_fn=curator.torch.pad_collate``, which pads them to the largest and says each one's
    ``size``. ``transform`` as for :class:`PatchDataset` (seeded per item and epoch). ``max_open``
    defaults to 4: whole cases are read once per pass, so few stores are worth keeping open.
    """

    def __init__(self, release: str | Path | Release, *, terms: Sequence[str], where: str = "true",
                 split: str | Sequence[str] | None = "val", layers: Sequence[str] = ("original", "revised"),
                 normalise: bool = True, max_open: int = 4, duplicates: bool = False, qc_filter: bool = True,
                 labelled_only: bool = True, verify: bool = True, channels: Sequence[str] | None = None,
                 transform: Callable[[dict[str, Any]], Any] | None = None, seed: int = 0,
                 qc_filter_test: bool = False) -> None:
        super().__init__(release, terms=terms, where=where, split=split, layers=layers, patch_size=(1, 1, 1),
                         foreground_fraction=0.0, balance=False, repeat=False, seed=seed, normalise=normalise,
                         max_open=max_open, duplicates=duplicates, qc_filter=qc_filter,
                         labelled_only=labelled_only, verify=verify, channels=channels, transform=transform,
                         qc_filter_test=qc_filter_test)
        self.length = len(self.cases)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not -self.length <= index < self.length:
            raise IndexError(f"case index {index} out of range for {self.length} cases")
        index %= self.length
        case = self.cases[index]
        shape = tuple(case["shape"])
        with worker_errors():
            item = self._item(case, (0, 0, 0), (shape[0], shape[1], shape[2]))
            geometry = self._store(case).geometry
            item["affine"] = torch.from_numpy(np.array(geometry.matrix, dtype=np.float64))
            item["spacing"] = torch.tensor(geometry.spacing, dtype=torch.float64)
            return self._transformed(item, item_rng(self.seed, self.epoch, index))
