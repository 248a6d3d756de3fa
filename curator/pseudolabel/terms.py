"""Term names → term ids, and which terms a dataset already covers (one place to change).

Names, synonyms and abbreviations resolve through the taxonomy (``curator.taxonomy``);
a name it does not know keeps its snake-case slug (a model may label something the
taxonomy lacks — ``curator labels check`` reports such names). Part-of ancestors make a
term covered when its whole is annotated (KiTS annotates ``kidney``, so ``kidney_left``
is not pseudo-labelled there).

>>> term_id("Rt Kidney"), slug("Kidney Tumor")
('kidney_right', 'kidney_tumor')
>>> uncovered(["kidney_left", "liver"], ["kidney"])
['liver']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from curator.preprocess.terms import preferred_name
from curator.preprocess.terms import term_id as _resolve
from curator.taxonomy import load_taxonomy


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def term_id(name: str) -> str:
    """The taxonomy id of ``name`` (its slug when the taxonomy does not know it)."""
    tid = _resolve(name)
    return tid if load_taxonomy().get(tid) is not None else slug(name)


def term_name(tid: str) -> str:
    """Preferred name of a term id (the id with spaces when the taxonomy does not know it)."""
    return preferred_name(tid)


def ancestors(tid: str) -> set[str]:
    """Every part-of ancestor id of a term (empty for a term the taxonomy does not know)."""
    tax = load_taxonomy()
    return set(tax.ancestors(tid)) if tax.get(tid) is not None else set()


def uncovered(candidates: Iterable[str], annotated: Iterable[str]) -> list[str]:
    """The candidate term ids neither annotated nor part of an annotated term, in order."""
    ann = set(annotated)
    return [t for t in candidates if t not in ann and not (ancestors(t) & ann)]
