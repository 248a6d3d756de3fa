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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from curator.errors import ConfigError
from curator.preprocess.terms import preferred_name
from curator.preprocess.terms import term_id as _resolve
from curator.taxonomy import load_taxonomy
from curator.taxonomy.model import Taxonomy

if TYPE_CHECKING:
    from curator.pseudolabel.models import ModelSpec


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def term_id(name: str) -> str:
    """The taxonomy id of ``name`` (its slug when the taxonomy does not know it)."""
    tid = _resolve(name)
    return tid if load_taxonomy().get(tid) is not None else slug(name)


def term_name(tid: str) -> str:
    """Preferred name of a term id (the id with spaces when the taxonomy does not know it)."""
    return preferred_name(tid)


def ancestors(tid: str, tax: Taxonomy | None = None) -> set[str]:
    """Every part-of ancestor id of a term in ``tax`` (bundled by default; empty for a term it
    does not know)."""
    tax = tax or load_taxonomy()
    return set(tax.ancestors(tid)) if tax.get(tid) is not None else set()


def uncovered(candidates: Iterable[str], annotated: Iterable[str],
              above: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """The candidate term ids neither annotated nor part of an annotated term, in order
    (``above``: each candidate's part-of ancestors; the bundled taxonomy's by default)."""
    ann = set(annotated)
    return [t for t in candidates
            if t not in ann and not (set(above[t] if above is not None else ancestors(t)) & ann)]


def resolve_model_terms(specs: Sequence[ModelSpec], tax: Taxonomy) -> tuple[ModelSpec, ...]:
    """Each model's output names as term ids of ``tax`` ("Liver", "rt kidney" → liver,
    kidney_right). A name the taxonomy does not know, or two channels naming one term, is a
    :class:`~curator.errors.ConfigError` naming the model: its pseudo labels would otherwise
    be filed under ids no other table knows."""
    out = []
    for spec in specs:
        ids = []
        for name in spec.terms:
            t = tax.get(name) or tax.resolve(name)
            if t is None:
                close = tax.close_ids(name)
                raise ConfigError("config_error", f"model {spec.name!r}: output {name!r} is no term of the "
                                  "taxonomy", remedy=(f"did you mean {', '.join(close)}? " if close else "")
                                  + "list the model's `terms` as term ids or names (`curator labels resolve NAME`)")
            if t.id in ids:
                raise ConfigError("config_error", f"model {spec.name!r}: two outputs name the term {t.id!r}",
                                  remedy="give each output channel its own term")
            ids.append(t.id)
        out.append(replace(spec, terms=tuple(ids)))
    return tuple(out)
