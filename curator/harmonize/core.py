"""Pure per-case harmonisation: term plans in, ``labels`` rows and problems out.

A *term plan* says, for one term of one case, which raw values (label maps) or structure
files (per-structure masks) make it up, and whether it is derived, annotated or optional
(a mapped term the dataset does not annotate completely: a row only when it is present)::

    >>> plans = [{"term_id": "kidney", "term": "kidney", "values": [1], "keys": None,
    ...           "derived": False, "annotated": True, "optional": False}]
    >>> rows, unmapped = case_rows(plans, {("", 1): 10, ("", 7): 2}, known_values=[1], known_keys=[],
    ...                            ignore=[], encoding="label_map", voxel_ml=0.001)
    >>> rows[0]["voxels"], rows[0]["present"], unmapped
    (10, True, [('', 7, 2)])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from curator.harmonize.mapping import DatasetMapping
from curator.taxonomy.model import Taxonomy

Counts = Mapping[tuple[str, int], int]  # (label key, raw value) -> voxels


def missing_parts(m: DatasetMapping, case_keys: Iterable[str]) -> dict[str, list[str]]:
    """Terms made of several structure files that a case has only some of: ``{term: the files it
    lacks}``. Such a term is not annotated in the case — its files are parts of it (TotalSegmentator
    v2's ``sacrum`` is sacrum.nii.gz ∪ vertebrae_S1.nii.gz), and without one the mask would miss
    that part — unless the dataset lists it under ``labels.annotated_by_any_file`` (each file is a
    whole annotation of its own: LNDb's per-reader nodule masks).

    >>> m = DatasetMapping("Toy", "per_structure", structures={"sacrum": ("sacrum",),
    ...                    "vertebrae_S1": ("vertebra_s1", "sacrum")})
    >>> missing_parts(m, ["sacrum"]), missing_parts(m, ["sacrum", "vertebrae_S1"]), missing_parts(m, [])
    ({'sacrum': ['vertebrae_S1']}, {}, {})
    """
    keys = set(case_keys)
    files: dict[str, list[str]] = {}
    for k, ids in m.structures.items():
        for t in ids:
            files.setdefault(t, []).append(k)
    return {t: sorted(set(fs) - keys) for t, fs in files.items()
            if len(fs) > 1 and t not in m.any_file and keys & set(fs) and set(fs) - keys}


def term_plans(m: DatasetMapping, tax: Taxonomy, case_keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The terms one case of the dataset gets rows for.

    For per-structure datasets ``case_keys`` (the structure files that exist for this case)
    decides what is annotated: a missing file means "not annotated in this case", not absent;
    a term made of several files needs all of them (:func:`missing_parts`), so a derived term
    holding it is not derived either.
    """
    if m.encoding == "per_structure":
        keys = set(case_keys or ())
        have = {t for k, ids in m.structures.items() if k in keys for t in ids} - set(missing_parts(m, keys))
        annotated = [t for t in m.annotated if t in have]
        mapped = [t for t in m.mapped if t in have]
        derived = tax.derived(annotated, mapped) if annotated != list(m.annotated) else dict(m.derived)
    else:
        annotated, mapped, derived = list(m.annotated), list(m.mapped), dict(m.derived)
    plans = []
    here = set(case_keys or ())
    for tid in mapped:
        if tid in derived:  # also labelled directly (an optional code): one row, its union holds the code
            continue
        vals, ks = m.codes_of([tid])
        plans.append(_plan(tax, tid, vals, [k for k in ks if k in here], m.encoding, derived=False,
                           annotated=tid in annotated))
    for tid, members in sorted(derived.items()):
        vals, ks = m.codes_of(members)
        plans.append(_plan(tax, tid, vals, [k for k in ks if k in here], m.encoding, derived=True, annotated=True))
    return plans


def _plan(tax: Taxonomy, tid: str, vals: list[int], keys: list[str], encoding: str, *, derived: bool,
          annotated: bool) -> dict[str, Any]:
    per_structure = encoding == "per_structure"
    return {"term_id": tid, "term": tax.term(tid).name, "values": None if per_structure else vals,
            "keys": keys if per_structure else None, "derived": derived, "annotated": annotated,
            "optional": not annotated}


def case_rows(plans: list[dict[str, Any]], counts: Counts, *, known_values: Iterable[int],
              known_keys: Iterable[str], ignore: Iterable[int], encoding: str, voxel_ml: float,
              union: Callable[[list[str]], int] | None = None) -> tuple[list[dict[str, Any]], list[tuple[str, int, int]]]:
    """``labels`` rows (without case/dataset columns) and the unmapped ``(key, value, voxels)``.

    ``union(keys)`` counts the voxels of the union of several structure files (they may
    overlap); it is called only for terms made of more than one file present in the case.
    """
    per_structure = encoding == "per_structure"
    present_keys = {k for k, _ in counts}
    rows = []
    for p in plans:
        if per_structure:
            keys = [k for k in p["keys"] or () if k in present_keys]
            if len(keys) > 1:
                if union is None:
                    raise ValueError("case_rows needs `union` for a term made of several structure files")
                voxels = union(keys)
            else:
                voxels = sum(n for (k, _), n in counts.items() if k in keys)
        else:
            voxels = sum(counts.get(("", v), 0) for v in p["values"] or ())
        if p["optional"] and voxels == 0:
            continue
        rows.append({"term_id": p["term_id"], "term": p["term"], "origin": "original", "layer": "original",
                     "raw_values": p["values"], "label_keys": p["keys"], "derived": p["derived"],
                     "annotated": p["annotated"], "present": voxels > 0, "voxels": int(voxels),
                     "volume_ml": float(voxels * voxel_ml)})
    known_v, known_k, ign = set(known_values), set(known_keys), set(ignore)
    unmapped = sorted((k, v, n) for (k, v), n in counts.items()
                      if (k not in known_k if per_structure else (v not in known_v and v not in ign)))
    return rows, unmapped
