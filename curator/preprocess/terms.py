"""Raw label codes → taxonomy term ids, in one place (the taxonomy and harmonize's mapping).

A store plane's ``values`` list, for every code, the term it annotates *and* the derived
terms whose union contains it (``kidney`` for a left/right dataset, ``kidney_and_mass``
for KiTS), so ``CaseStore.mask(term)`` answers derived terms without the taxonomy.

>>> term_id("rt kidney"), prompt("kidney_left", "CT")
('kidney_right', '(ct) left kidney')
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from curator.harmonize.mapping import raw_value_terms
from curator.taxonomy import Taxonomy, load_taxonomy


@functools.lru_cache(maxsize=4096)
def term_id(name: str) -> str:
    """The id of the term ``name`` resolves to (a snake-case slug when it resolves to none)."""
    found = load_taxonomy().resolve(name)
    return found.id if found is not None else "_".join(name.lower().split())


def _codes(spec: Any, tax: Taxonomy | None = None, include_derived: bool = True) -> dict[str, list[str]]:
    return {str(k): list(v) for k, v in raw_value_terms(spec, tax or load_taxonomy(), include_derived).items()}


def value_terms(spec: Any, tax: Taxonomy | None = None, include_derived: bool = True) -> dict[str, list[str]]:
    """``{raw value: [term ids]}`` of a label-map dataset (ignored values left out); ``tax``:
    the taxonomy harmonize uses (default: the bundled one); without ``include_derived`` only
    the terms each code annotates itself."""
    ignore = {str(v) for v in spec.labels.ignore}
    return {k: v for k, v in _codes(spec, tax, include_derived).items() if k not in ignore}


def structure_terms(spec: Any, keys: Iterable[str] | None = None, tax: Taxonomy | None = None) -> dict[str, list[str]]:
    """``{structure file key: [term ids]}`` of a per-structure dataset; with ``keys`` (the files
    one case has) a derived term joins only where that case's files complete it — a case
    without its right-kidney file has no ``kidney`` (harmonize's rule: a missing file is "not
    annotated") — and so does a term made of several files (TotalSegmentator v2's sacrum and
    vertebrae_S1): without one of them no file names it, as harmonize gives it no row."""
    if keys is None:
        return _codes(spec, tax)
    from curator.harmonize.core import missing_parts, term_plans
    from curator.harmonize.mapping import build_mapping

    tax = tax or load_taxonomy()
    m, _ = build_mapping(spec, tax)
    direct = raw_value_terms(spec, tax, include_derived=False)
    incomplete = set(missing_parts(m, keys))
    plans = [p for p in term_plans(m, tax, keys) if p["derived"]]
    return {str(k): [t for t in ids if t not in incomplete]
            + [p["term_id"] for p in plans if k in p["keys"] and p["term_id"] not in ids]
            for k, ids in direct.items()}


def preferred_name(term: str) -> str:
    t = load_taxonomy().get(term)
    return t.name if t is not None else term.replace("_", " ")


def prompt(term: str, modality: str, name: str | None = None) -> str:
    """SAT-style text prompt, e.g. ``(ct) left kidney``."""
    if name is None and load_taxonomy().get(term) is not None:
        return load_taxonomy().prompt(term, modality)
    return f"({modality.lower()}) {name or preferred_name(term)}"
