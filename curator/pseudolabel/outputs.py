"""What the pseudolabel stage writes per case: the ``pseudo`` layer, the attention map, table rows.

The attention map lives next to the stage's results, not in the case store (it is a
review aid, not a label): ``<workspace>/stages/pseudolabel/attention/<case_id>.zarr``, one
integer array on the store grid whose bit k marks attention for term ``attrs["bits"][k]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr
from numpy.typing import NDArray

from curator.io.fsutil import atomic_path
from curator.pseudolabel.infer import CaseLabels
from curator.pseudolabel.models import LoadedModel, ModelSpec
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore


def attention_path(workspace: str | Path, case_id: str) -> Path:
    return Path(workspace) / "stages" / "pseudolabel" / "attention" / f"{case_id}.zarr"


def write_attention(path: Path, bits: NDArray[Any], targets: list[str]) -> None:
    with atomic_path(path) as tmp:
        arr = zarr.create_array(str(tmp), shape=bits.shape, dtype=bits.dtype,
                                chunks=tuple(min(64, n) for n in bits.shape), fill_value=0)
        arr[...] = bits
        arr.attrs["bits"] = {str(k): t for k, t in enumerate(targets)}


def read_attention(path: Path) -> tuple[zarr.Array[Any], dict[int, str]]:
    arr = zarr.open_array(str(path), mode="r")
    bits = arr.attrs["bits"]
    if not isinstance(bits, dict):
        raise TypeError(f"{path}: attention array without its bit → term map (attrs 'bits')")
    return arr, {int(k): str(v) for k, v in bits.items()}


def write_case(store: CaseStore, ws: Path, case_id: str, res: CaseLabels, specs: tuple[ModelSpec, ...],
               cfg: Any) -> None:
    codes = {k + 1: [t] for k, t in enumerate(res.targets)}
    attrs = {"origin": "pseudo", "stage": "pseudolabel", "config_hash": cfg.config_hash(),
             "models": [{"name": s.name, "fingerprint": s.fingerprint()} for s in specs],
             "terms": res.targets, "etta": bool(cfg.etta.enabled)}
    store.write_layer("pseudo", [(res.plane, codes)], attrs)
    write_attention(attention_path(ws, case_id), res.bits, res.targets)


def rows(case_id: str, dataset: str, modality: str | None, store: CaseStore, res: CaseLabels,
         models: tuple[LoadedModel, ...], cfg: Any) -> dict[str, list[dict[str, Any]]]:
    ml = store.geometry.voxel_volume_mm3 / 1000.0
    att, lab = [], []
    for t in res.targets:
        s = res.summaries[t]
        n = res.voxels(t)
        name = term_name(t)
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
