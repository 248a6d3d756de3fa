"""What the pseudolabel stage writes per case: the ``pseudo`` layer, the attention map, table rows.

The attention map lives next to the stage's results, not in the case store (it is a
review aid, not a label): ``<workspace>/stages/pseudolabel/attention/<case_id>.zarr``, a group
of integer arrays ``"0"``, ``"1"``, ... on the store grid; target k (``attrs["bits"][k]``) is
bit ``k % 64`` of array ``k // 64`` (one array up to 64 targets). Read it with
:func:`read_attention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr
import zarr.errors
from numpy.typing import NDArray

from curator.errors import InputError
from curator.io.fsutil import atomic_path, atomic_remove
from curator.pseudolabel.core import WORD_BITS, attention_bit
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore

if TYPE_CHECKING:  # annotations only: reading a store's pseudo layer or attention needs no torch
    from curator.pseudolabel.infer import CaseLabels
    from curator.pseudolabel.loading import LoadedModel
    from curator.pseudolabel.models import ModelSpec


def attention_path(workspace: str | Path, case_id: str) -> Path:
    return Path(workspace) / "stages" / "pseudolabel" / "attention" / f"{case_id}.zarr"


def write_attention(path: Path, words: list[NDArray[Any]], targets: list[str]) -> None:
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        for w, a in enumerate(words):
            arr = group.create_array(str(w), shape=a.shape, dtype=a.dtype,
                                     chunks=tuple(min(64, n) for n in a.shape), fill_value=0)
            arr[...] = a
        group.attrs["bits"] = {str(k): t for k, t in enumerate(targets)}
        group.attrs["word_bits"] = WORD_BITS


@dataclass(frozen=True)
class AttentionMap:
    """A case's attention map on disk: ``mask(term[, z])`` reads one target's voxels."""

    group: zarr.Group
    names: dict[int, str]  # bit index -> term id

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(cast(Any, self.group["0"]).shape)

    def __contains__(self, term: object) -> bool:
        return term in self.names.values()

    def mask(self, term: str, z: int | None = None, box: tuple[slice, ...] | None = None) -> NDArray[np.bool_]:
        """``term``'s attention voxels (the axial slice ``z`` only, or the ``box`` only, when given)."""
        k = next(k for k, t in self.names.items() if t == term)
        word: Any = self.group[str(k // WORD_BITS)]
        data = np.asarray(word[:, :, z] if z is not None else word[box] if box is not None else word[...])
        return attention_bit([data], k % WORD_BITS)


def read_attention(path: Path) -> AttentionMap:
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:  # an older single-array map
        raise InputError("attention_outdated", "the attention map is missing or was written by an older curator",
                         path=str(path), remedy="run the pseudolabel stage again (it re-infers the case)") from e
    bits = group.attrs.get("bits")
    if not isinstance(bits, dict) or "0" not in group:
        raise InputError("attention_outdated", "the attention map has no bit → term map (attrs 'bits')",
                         path=str(path), remedy="run the pseudolabel stage again")
    return AttentionMap(group, {int(k): str(v) for k, v in bits.items()})


def write_case(store: CaseStore, ws: Path, case_id: str, res: CaseLabels, specs: tuple[ModelSpec, ...],
               cfg: Any, fingerprints: Sequence[str]) -> None:
    """Write a case's pseudo layer (its attrs name each model by its ``fingerprints``) and attention map."""
    codes = {k + 1: [t] for k, t in enumerate(res.targets)}
    attrs = {"origin": "pseudo", "stage": "pseudolabel", "config_hash": cfg.config_hash(),
             "models": [{"name": s.name, "fingerprint": f} for s, f in zip(specs, fingerprints, strict=True)],
             "terms": res.targets, "etta": bool(cfg.etta.enabled), "torch": torch_facts(cfg.resolved_device())}
    store.write_layer("pseudo", [(res.plane, codes)], attrs)
    write_attention(attention_path(ws, case_id), res.words, res.targets)


def torch_facts(device: str) -> dict[str, Any]:
    """What the pseudo labels' floats depend on beyond models and inputs: torch's version, the
    device and (on the CPU) torch's thread count — the CPU convolutions round differently with it
    (~1e-6 in the probabilities, the 7th digit of the attention table) — and the CPU's vector
    instruction set torch dispatches its kernels by (``AVX2``, ``AVX512``: another machine may
    round otherwise with the same threads)."""
    import torch

    out: dict[str, Any] = {"version": torch.__version__, "device": device}
    if device == "cpu":
        out["threads"] = torch.get_num_threads()
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def clear_case(store: CaseStore, ws: Path, case_id: str) -> None:
    """Remove a case's pseudo layer and attention map (an earlier run's, when this run has
    nothing to label in the case)."""
    store.remove_layer("pseudo")
    atomic_remove(attention_path(ws, case_id))


def rows(case_id: str, dataset: str, modality: str | None, store: CaseStore, res: CaseLabels,
         models: tuple[LoadedModel, ...], cfg: Any, names: dict[str, str] | None = None,
         ) -> dict[str, list[dict[str, Any]]]:
    ml = store.geometry.voxel_volume_mm3 / 1000.0
    att, lab = [], []
    for t in res.targets:
        s = res.summaries[t]
        n = res.voxels(t)
        name = (names or {}).get(t) or term_name(t)
        att.append({"case_id": case_id, "dataset": dataset, "term_id": t, "term": name,
                    "n_models": sum(t in m.terms for m in models), "pseudo_voxels": n, "pseudo_ml": n * ml,
                    "inconsistency": s.inconsistency, "uncertainty": s.uncertainty, "overlap": s.overlap,
                    "attention_size": s.attention_size, "attention_voxels": s.attention_voxels,
                    "attention_ml": s.attention_voxels * res.model_voxel_ml, "peak_slice": res.peak_slice[t],
                    "case_attention_size": 0.0, "review_rank": 0, "review": False, "etta": bool(cfg.etta.enabled)})
        lab.append({"case_id": case_id, "dataset": dataset, "term_id": t, "term": name, "origin": "pseudo",
                    "layer": "pseudo", "derived": False, "annotated": False, "present": n > 0, "voxels": n,
                    "volume_ml": n * ml, "modality": modality})
    return {"attention": att, "_labels_pseudo": lab}
