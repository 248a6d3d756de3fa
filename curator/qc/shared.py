"""Labels several cases share: one label file annotating every sequence of a study (BraTS's
``seg``, MSD BrainTumour's label of its 4-D image). Each sequence is a case with its own store
and its own ``qc`` row, but the label is one: it is one member of its cohort (counted once in
the bounds and in ``cohort_size``), judged once on its cases' median features, and every case
holding it gets the same flags and decision.

>>> cases = [{"case_id": f"B__s1__{q}", "study_key": "s1", "label_sha256": "ab"} for q in ("t1n", "t2f")]
>>> cases.append({"case_id": "B__s2__t1n", "study_key": "s2", "label_sha256": "cd"})
>>> shared_label_keys(cases)
{'B__s1__t1n': 's1|ab', 'B__s1__t2f': 's1|ab'}
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

# the measurements the features are read from: a shared label's are the median over its cases
# (the voxels are the same; the body volume and size are each sequence's own)
MEASURES = ("norm_volume", "norm_volume_section", "volume_ml", "sphericity", "sphericity_mesh", "eccentricity",
            "largest_component_fraction")
SIDE = ("lateral_mm", "wrong_side", "side_reason", "side_unchecked")


def shared_label_keys(cases: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Case id -> ``study_key|label_sha256`` for the cases whose label file another case of the same
    study has too (the sequences of a study annotated by one file); a case with a label of its own
    is left out."""
    by_key: dict[str, list[str]] = {}
    for c in cases:
        study, sha = c.get("study_key"), c.get("label_sha256")
        if study and sha:
            by_key.setdefault(f"{study}|{sha}", []).append(c["case_id"])
    return {cid: key for key, ids in by_key.items() if len(ids) > 1 for cid in ids}


def label_units(members: Iterable[dict[str, Any]], shared: Mapping[str, str]) -> list[list[dict[str, Any]]]:
    """The labels of a cohort as units: the original labels of cases sharing one label file
    (``shared``: :func:`shared_label_keys`) are one unit per term (truncated and complete ones
    apart); every other label — a pseudo or revised layer is each case's own — is a unit alone."""
    units: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in members:
        key = shared.get(r["case_id"]) if r.get("origin") == "original" else None
        k = (("shared", key, bool(r.get("truncated"))) if key else ("case", r["case_id"], r.get("origin")))
        units.setdefault((r["term_id"], *k), []).append(r)
    return list(units.values())


def representative(unit: list[dict[str, Any]], copies: Collection[str] = ()) -> dict[str, Any]:
    """One row standing for a unit's label: a case's own row when it is alone; for a shared label,
    the first case (by id) dedup kept, with the median of its cases' measurements and the side check
    of the case with the median ``lateral_mm``. Its ``case_id`` is a dropped copy's only when every
    case holding the label was dropped (so :func:`curator.qc.cohort.reference` leaves it out)."""
    if len(unit) == 1:
        return unit[0]
    ordered = sorted(unit, key=lambda r: str(r["case_id"]))
    kept = [r for r in ordered if r["case_id"] not in copies]
    rep = dict((kept or ordered)[0])
    for col in MEASURES:
        vals = [float(v) for r in unit if (v := r.get(col)) is not None and np.isfinite(float(v))]
        rep[col] = float(np.median(vals)) if vals else None
    sided = sorted((r for r in unit if r.get("lateral_mm") is not None), key=lambda r: float(r["lateral_mm"]))
    if sided:
        mid = sided[(len(sided) - 1) // 2]  # the lower middle: an even split takes the side nearer wrong
        rep.update({c: mid.get(c) for c in SIDE})
    return rep
