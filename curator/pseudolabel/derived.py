"""Derived terms of the labels a dataset did not draw: pseudo and revised labels, alone or mixed.

Harmonize derives a term for a dataset's own labels (``kidney = kidney_left ∪ kidney_right``,
:meth:`curator.taxonomy.model.Taxonomy.derived`). A case's pseudo and revised labels get the
same derived terms, by the same rule, once its labels are assembled (one row per term, the
highest-priority origin: :func:`curator.pseudolabel.release.assemble_rows`):

* a term is derived when one of its partitions is complete among the case's labels — a dataset
  term counts when the dataset annotates it (``annotated``), a pseudo or revised label always
  (the layer labels that term in the whole case; present or absent, as an annotated-absent
  original part counts); a part missing derives nothing (one pseudo kidney is not the kidneys);
* its mask is the union of every labelled term below it, each read from the layer its own row
  comes from, as the PyTorch loader unions them; voxels and volume are counted on the store grid;
* its ``origin`` and ``layer`` are those of its least reviewed part (original > revised >
  pseudo): a kidney of a revised left and a pseudo right kidney is ``pseudo`` — it still holds a
  model's label no person checked — as the loader's ``layers`` reports such a term;
* a term that already has a row (the dataset's own derived kidney, or a term labelled directly)
  is not derived again, nor one made only of the dataset's labels (harmonize's).

>>> from curator.taxonomy import load_taxonomy
>>> rows = [{"term_id": t, "origin": o, "layer": o, "derived": False, "annotated": False}
...         for t, o in [("kidney_left", "revised"), ("kidney_right", "pseudo"), ("liver", "pseudo")]]
>>> derived_plans(rows, load_taxonomy())
[{'term_id': 'kidney', 'origin': 'pseudo', 'members': {'kidney_left': 'revised', 'kidney_right': 'pseudo'}}]
>>> derived_plans(rows[1:], load_taxonomy())  # the left kidney missing: no kidney
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from curator.store import LAYERS

if TYPE_CHECKING:
    from curator.store import CaseStore
    from curator.taxonomy.model import Taxonomy


def derived_plans(rows: Sequence[Mapping[str, Any]], tax: Taxonomy) -> list[dict[str, Any]]:
    """The derived terms of one case's assembled ``labels`` rows that need a pseudo or revised
    label: ``[{term_id, origin, members: {part: layer}}]``, in term order (rules: module doc)."""
    base = [r for r in rows if not r.get("derived")]
    if all(r["origin"] == "original" for r in base):
        return []
    whole = [r["term_id"] for r in base if r["origin"] != "original" or r.get("annotated")]
    optional = [r["term_id"] for r in base if r["origin"] == "original" and not r.get("annotated")]
    layer_of = {r["term_id"]: r["layer"] for r in base}
    origin_of = {r["term_id"]: r["origin"] for r in base}
    have = {r["term_id"] for r in rows}
    out = []
    for term, members in sorted(tax.derived(whole, optional).items()):
        if term in have or all(origin_of[m] == "original" for m in members):
            continue
        out.append({"term_id": term, "origin": max((origin_of[m] for m in members), key=LAYERS.index),
                    "members": {m: layer_of[m] for m in members}})
    return out


def derived_mask(store: CaseStore, members: Mapping[str, str]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The union of ``members`` (part -> the layer its label is read from) in ``store``."""
    terms = sorted(members)
    return np.asarray(store.masks_from(members, terms).any(axis=0))


def held_members(store: CaseStore, members: Mapping[str, str]) -> bool:
    """Whether every part is in its layer of ``store`` (a revised label a rebuilt store lost is not)."""
    layers = set(store.layers())
    return all(layer in layers and term in store.terms(layer) for term, layer in members.items())


def derived_rows(store: CaseStore | None, rows: Sequence[Mapping[str, Any]], tax: Taxonomy
                 ) -> list[dict[str, Any]]:
    """``labels`` rows of the derived terms of one case's assembled ``rows`` (:func:`derived_plans`),
    measured on ``store``'s grid; none without a store (nothing to measure a union on)."""
    if store is None:
        return []
    plans = derived_plans(rows, tax)
    if not plans:
        return []
    dataset = next((r["dataset"] for r in rows if r.get("dataset")), None)
    modality = next((r["modality"] for r in rows if r.get("modality")), None)
    ml = store.geometry.voxel_volume_mm3 / 1000.0
    out = []
    for p in plans:
        if not held_members(store, p["members"]):
            continue
        n = int(np.count_nonzero(derived_mask(store, p["members"])))
        out.append({"case_id": rows[0]["case_id"], "dataset": dataset, "term_id": p["term_id"],
                    "term": tax.term(p["term_id"]).name, "origin": p["origin"], "layer": p["origin"],
                    "raw_values": None, "label_keys": None, "derived": True, "annotated": False,
                    "present": n > 0, "voxels": n, "volume_ml": n * ml, "modality": modality})
    return out


def assembled_parts_mask(store: CaseStore, term: str, tax: Taxonomy) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The mask of a derived term of pseudo or revised labels that no layer holds itself: the
    union of the labels below it in ``store``, each from its highest-priority layer, as the
    release assembles it (empty when the store holds none of them)."""
    below = set(tax.descendants(term)) if tax.get(term) is not None else set()
    chosen: dict[str, str] = {}
    for layer in store.layers():  # in priority order: original, revised, pseudo
        for t in store.terms(layer):
            if t in below:
                chosen.setdefault(t, layer)
    if not chosen:
        return np.zeros(store.geometry.shape, dtype=bool)
    return derived_mask(store, chosen)


def by_case(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["case_id"], []).append(r)
    return out
