"""Release step: the taxonomy harmonize used, as the ``terms`` table (one row per term:
:func:`term_row`; :func:`term_details` adds the terms below it, for ``curator labels show``).

>>> from curator.taxonomy import load_taxonomy
>>> row = term_row(load_taxonomy(), "kidney_left")
>>> row["name"], row["laterality"], row["ancestors"]
('left kidney', 'left', ['kidney', 'kidney_and_mass'])
>>> back = taxonomy_from_rows([term_row(load_taxonomy(), t) for t in load_taxonomy().terms])
>>> sorted(back.derived({"kidney_left", "kidney_right"})), back.prompt("kidney_left", "CT")
(['kidney'], '(ct) left kidney')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from curator.schema import to_arrow
from curator.taxonomy.model import Taxonomy, Term

if TYPE_CHECKING:
    from curator.release.build import ReleaseBuilder


def term_row(tax: Taxonomy, term_id: str) -> dict[str, Any]:
    t = tax.term(term_id)
    return {"term_id": t.id, "name": t.name, "synonyms": list(t.synonyms), "abbreviations": list(t.abbreviations),
            "category": t.category, "region": t.region, "laterality": t.laterality, "part_of": list(t.part_of),
            "is_a": list(t.is_a), "ancestors": tax.ancestors(t.id, "part_of"), "kinds": tax.ancestors(t.id, "is_a"),
            "partitions": [list(p) for p in t.partitions], "may_include": list(t.may_include),
            **{k: t.codes.get(k) for k in CODES}, "note": t.note or None,
            "defined_in": t.defined_in or None, "named_in": list(t.named_in)}


CODES = ("fma", "snomed", "umls", "radlex")


def term_details(tax: Taxonomy, term_id: str) -> dict[str, Any]:
    """Everything the taxonomy says about one term (``curator labels show``): its ``terms`` table
    row, and the terms right below it — ``children`` (part_of) and ``subtypes`` (is_a).

    >>> from curator.taxonomy import load_taxonomy
    >>> d = term_details(load_taxonomy(), "kidney")
    >>> d["children"], d["partitions"], d["fma"]
    (['kidney_left', 'kidney_right'], [['kidney_left', 'kidney_right']], 'FMA:7203')
    """
    return {**term_row(tax, term_id), "children": list(tax.children(term_id, "part_of")),
            "subtypes": list(tax.children(term_id, "is_a"))}


def taxonomy_from_rows(rows: Iterable[Mapping[str, Any]], path: str = "", version: str = "") -> Taxonomy:
    """The taxonomy a ``terms`` table holds (the inverse of :func:`term_row`)."""
    terms = {}
    for r in rows:
        terms[r["term_id"]] = Term(
            id=r["term_id"], name=r["name"], category=r["category"], region=r["region"],
            synonyms=tuple(r["synonyms"] or ()), abbreviations=tuple(r["abbreviations"] or ()),
            laterality=r["laterality"], part_of=tuple(r["part_of"] or ()), is_a=tuple(r["is_a"] or ()),
            partitions=tuple(tuple(p) for p in r["partitions"] or ()), may_include=tuple(r.get("may_include") or ()),
            codes=MappingProxyType({k: r[k] for k in CODES if r.get(k)}), note=r.get("note") or "",
            defined_in=r.get("defined_in") or "", named_in=tuple(r.get("named_in") or ()))
    return Taxonomy(terms=terms, path=path, version=version)


def release_step(b: ReleaseBuilder) -> None:
    from curator.harmonize.stage import harmonize_taxonomy

    tax = harmonize_taxonomy(b.ctx)
    b.tables["terms"] = to_arrow("terms", [term_row(tax, tid) for tid in tax.terms])
