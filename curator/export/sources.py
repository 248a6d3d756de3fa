"""The licences and citations an export carries: those of the source datasets of the cases it
wrote (duplicates standing in for a kept copy included: their own dataset's), not the release's.

Beside the exported files go ``CITATIONS.bib`` (the BibTeX entries of those datasets, as the
release's own :func:`curator.release.card.citations_bib` writes them) and ``LICENCES.md`` (per
dataset its licence and what it allows, then what the combination allows — the dataset card's
Licence constraints, :func:`curator.release.card.licence_combination`, for these datasets only);
the export's JSON gets the same as data (:func:`sources_record`). The sources are read from the
release's dataset card (its front matter lists each source with its licence terms and notes).
This is guidance, not legal advice.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.release.card import citations_bib, licence_combination, md_table
from curator.release.card_check import md_text, split_front_matter
from curator.release.sources import source_row

if TYPE_CHECKING:
    from curator.export.common import ExportReport
    from curator.release.licences import Combined
    from curator.release.query import Release

FILES = ("CITATIONS.bib", "LICENCES.md")


def card_entries(release: Release) -> dict[str, dict[str, Any]]:
    """Dataset -> its source entry in the release's dataset card (empty when the card has none)."""
    card = release.path / "DATASET_CARD.md"
    front = split_front_matter(card.read_text(encoding="utf-8"))[0] if card.is_file() else None
    entries = front.get("sources") if isinstance(front, dict) else None
    return {str(s["dataset"]): s for s in entries or [] if isinstance(s, dict) and "dataset" in s}


def export_sources(release: Release, datasets: Iterable[str]) -> list[dict[str, Any]]:
    """The card's source entry of each dataset in ``datasets`` (one per written case), ``cases``
    its count there; a dataset the card does not list gets an entry of unknown licence."""
    counts = collections.Counter(datasets)
    known = card_entries(release)
    out = []
    for d, n in sorted(counts.items()):
        s = known.get(d) or {"name": d, "dataset": d, "licence": "unknown (not in the release's dataset card)",
                             "citation_key": d, "citation": ""}
        out.append({**s, "cases": n})
    return out


def sources_record(sources: list[dict[str, Any]], lic: Combined) -> dict[str, Any]:
    """The export JSON's ``sources`` (per dataset: licence, what it allows, cases, homepage,
    citation keys) and ``licence_summary`` (the combination, as in the card's front matter)."""
    rows = []
    for s in sources:
        r = source_row(s)
        rows.append({"dataset": r["dataset"], "source": r["source"], "version": r["dataset_version"],
                     "licence": r["licence"], "licence_url": r["licence_url"], "n_cases": r["cases"],
                     "commercial_use": r["commercial_use"], "derivatives": r["derivatives"],
                     "redistribution": r["redistribution"], "share_alike": r["share_alike"],
                     "attribution_required": r["attribution_required"], "homepage": r["homepage"],
                     "citation_keys": [k for k in str(s.get("citation_key") or "").split(",") if k]})
    return {"sources": rows, "licence_summary": {**lic.summary(), "incompatible": lic.incompatible}}


def licences_md(sources: list[dict[str, Any]], lic: Combined, what: str) -> str:
    """``LICENCES.md``: each source's licence and terms, then what their combination allows."""
    n = sum(int(s["cases"]) for s in sources)
    text = (f"# Licences and citations of {md_text(what)}\n\nThe {n} exported cases come from {len(sources)} "
            "source dataset(s); each case keeps its dataset's licence. Cite every source below: their BibTeX "
            "entries are in `CITATIONS.bib`. This is guidance, not legal advice: read each dataset's own terms.\n\n")
    if lic.incompatible:
        text += ("**Warning: the licences of this export restrict sharing it as one adapted work.**\n\n"
                 + "".join(f"- {md_text(line)}\n" for line in lic.incompatible) + "\n")
    rows = [[r["dataset"], r["licence"], r["n_cases"], r["commercial_use"],
             r["derivatives"] + (f" ({r['share_alike']})" if r["share_alike"] else ""), r["redistribution"],
             ", ".join(r["citation_keys"]), r["homepage"] or ""] for r in sources_record(sources, lic)["sources"]]
    text += "## Sources\n\n" + md_table(["dataset", "licence", "cases", "commercial use", "adapted material",
                                         "redistribution", "citation", "homepage"], rows)
    text += "\n## What the combination allows\n\n" + "".join(f"- {md_text(line)}\n" for line in lic.constraints)
    return text


def write_sources(release: Release, folder: Path, datasets: Iterable[str], report: ExportReport,
                  what: str) -> dict[str, Any]:
    """Write ``CITATIONS.bib`` and ``LICENCES.md`` into ``folder`` for the sources of the written
    cases (``datasets``: each one's dataset), note them in ``report`` (a warning when their
    licences restrict sharing it as one adapted work) and return the export JSON's :func:`sources_record`."""
    sources = export_sources(release, datasets)
    lic = licence_combination(sources, whole="this export")
    (folder / "CITATIONS.bib").write_text(citations_bib(sources), encoding="utf-8")
    (folder / "LICENCES.md").write_text(licences_md(sources, lic, what), encoding="utf-8")
    listed = ", ".join(f"{s['dataset']} ({s['cases']} case{'s' if s['cases'] != 1 else ''}, {s['licence']})"
                       for s in sources)
    report.notes.append(f"the exported cases come from {listed}: LICENCES.md says what their licences allow, "
                        "CITATIONS.bib holds what to cite")
    if lic.incompatible:
        report.notes.append("warning: the licences of this export restrict sharing it as one adapted work — "
                            + " ".join(lic.incompatible))
    return sources_record(sources, lic)


def licence_line(record: Mapping[str, Any]) -> str:
    """One line naming the licences of an export (dataset.json's ``licence``)."""
    return "; ".join(f"{s['licence']} ({s['dataset']})" for s in record["sources"]) + \
        ": each case keeps its source dataset's licence; see LICENCES.md and CITATIONS.bib"
