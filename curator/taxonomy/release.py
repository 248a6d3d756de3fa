"""Release step: the taxonomy harmonize used, as the ``terms`` table.

>>> from curator.taxonomy import load_taxonomy
>>> row = term_row(load_taxonomy(), "kidney_left")
>>> row["name"], row["laterality"], row["ancestors"]
('left kidney', 'left', ['kidney', 'kidney_and_mass'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curator.schema import to_arrow
from curator.taxonomy.model import Taxonomy

if TYPE_CHECKING:
    from curator.release.build import ReleaseBuilder


def term_row(tax: Taxonomy, term_id: str) -> dict[str, Any]:
    t = tax.term(term_id)
    return {"term_id": t.id, "name": t.name, "synonyms": list(t.synonyms), "abbreviations": list(t.abbreviations),
            "category": t.category, "region": t.region, "laterality": t.laterality, "part_of": list(t.part_of),
            "is_a": list(t.is_a), "ancestors": tax.ancestors(t.id, "part_of"), "kinds": tax.ancestors(t.id, "is_a"),
            "partitions": [list(p) for p in t.partitions],
            **{k: t.codes.get(k) for k in ("fma", "snomed", "umls", "radlex")}, "note": t.note or None}


def release_step(b: ReleaseBuilder) -> None:
    from curator.harmonize.stage import harmonize_taxonomy

    tax = harmonize_taxonomy(b.ctx)
    b.tables["terms"] = to_arrow("terms", [term_row(tax, tid) for tid in tax.terms])
