"""Release step: the ``sources`` table — one row per source the release holds cases of, with its
licence, what the licence allows (commercial use, derivatives, redistribution) and its citation.

The dataset card's front matter lists the same sources, but a researcher asking "which of these
cases may I use commercially?" should not need to parse YAML and know what each licence id
implies: here the terms are columns, joined to the cases on ``source``.

>>> from curator.release.licences import parse_licence
>>> row = source_row({"name": "KiTS23", "dataset": "KiTS23", "version": "2023", "title": None,
...                   "modality": "CT", "region": "abdomen", "cases": 3, "licence": "CC-BY-NC-SA-4.0",
...                   "licence_url": None, "licence_terms": None, "citation_key": "k", "citation": "@misc{k}",
...                   "homepage": None})
>>> row["commercial_use"], row["derivatives"], row["share_alike"], row["terms_from"]
('no', 'share-alike', 'CC-BY-NC-SA', 'licence id')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curator.release.licences import parse_licence
from curator.schema import to_arrow

if TYPE_CHECKING:
    from curator.release.build import ReleaseBuilder


def source_row(s: dict[str, Any]) -> dict[str, Any]:
    """A ``sources`` row from one source entry of the card (:func:`curator.release.card.card_sources`)."""
    declared = s.get("licence_terms") or None
    t = parse_licence(s["licence"]).with_declared(declared)
    return {"source": s["name"], "dataset": s["dataset"], "dataset_version": s.get("version"),
            "title": s.get("title"), "modality": s.get("modality"), "region": s.get("region"),
            "cases": int(s["cases"]), "licence": s["licence"], "licence_url": s.get("licence_url"),
            "commercial_use": t.commercial, "derivatives": t.derivatives, "redistribution": t.redistribution,
            "share_alike": t.share_alike or None, "attribution_required": t.attribution,
            "licence_conflicting": t.conflicting,
            "terms_from": "registry" if declared else "licence id",
            "citation_key": s["citation_key"], "citation": s["citation"], "homepage": s.get("homepage")}


def release_step(b: ReleaseBuilder) -> None:
    from curator.release.card import card_sources

    b.tables["sources"] = to_arrow("sources", [source_row(s) for s in card_sources(b, b.tables.scan("cases"))])
