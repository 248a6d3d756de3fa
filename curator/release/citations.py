"""What to cite, and which licences bind, for some of a release's cases: a cohort selected in SQL
(``curator cite``, :meth:`curator.release.query.Release.citations`) or the cases an export wrote
(:mod:`curator.export.sources`).

Two files say it: ``CITATIONS.bib`` (the BibTeX entries of the cases' datasets, as the release's
own :func:`curator.release.card.citations_bib` writes them) and ``LICENCES.md`` (per dataset its
licence and what it allows, then what the combination allows — the dataset card's Licence
constraints, :func:`curator.release.card.licence_combination`, for these datasets only). The
sources are read from the release's dataset card (its front matter lists each source with its
licence terms and notes). This is guidance, not legal advice.

>>> # c = curator.open_release("releases/demo/0.1.0").citations("dataset = 'KiTS23'")
>>> # c.write("paper/"); c.licences.summary()["commercial_use"]
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.errors import ReleaseError
from curator.release.card import citations_bib, licence_combination, md_table
from curator.release.card_check import md_text, split_front_matter
from curator.release.sources import source_row

if TYPE_CHECKING:
    from curator.release.licences import Combined
    from curator.release.query import Release

FILES = ("CITATIONS.bib", "LICENCES.md")


def card_entries(release: Release) -> dict[str, dict[str, Any]]:
    """Dataset -> its source entry in the release's dataset card (empty when the card has none)."""
    card = release.path / "DATASET_CARD.md"
    front = split_front_matter(card.read_text(encoding="utf-8"))[0] if card.is_file() else None
    entries = front.get("sources") if isinstance(front, dict) else None
    return {str(s["dataset"]): s for s in entries or [] if isinstance(s, dict) and "dataset" in s}


def sources_of(release: Release, datasets: Iterable[str]) -> list[dict[str, Any]]:
    """The card's source entry of each dataset in ``datasets`` (one per case), ``cases`` its count
    there; a dataset the card does not list gets an entry of unknown licence."""
    counts = collections.Counter(datasets)
    known = card_entries(release)
    out = []
    for d, n in sorted(counts.items()):
        s = known.get(d) or {"name": d, "dataset": d, "licence": "unknown (not in the release's dataset card)",
                             "citation_key": d, "citation": ""}
        out.append({**s, "cases": n})
    return out


def sources_record(sources: list[dict[str, Any]], lic: Combined) -> dict[str, Any]:
    """The JSON ``sources`` (per dataset: licence, what it allows, cases, homepage, citation keys)
    and ``licence_summary`` (the combination, as in the card's front matter)."""
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


def licences_md(sources: list[dict[str, Any]], lic: Combined, what: str, cases: str = "exported") -> str:
    """``LICENCES.md``: each source's licence and terms, then what their combination allows
    (``what`` names the whole, ``cases`` the cases: exported, selected)."""
    n = sum(int(s["cases"]) for s in sources)
    text = (f"# Licences and citations of {md_text(what)}\n\nThe {n} {cases} cases come from {len(sources)} "
            "source dataset(s); each case keeps its dataset's licence. Cite every source below: their BibTeX "
            "entries are in `CITATIONS.bib`. This is guidance, not legal advice: read each dataset's own terms.\n\n")
    if lic.incompatible:
        text += (f"**Warning: these licences restrict sharing {md_text(what)} as one adapted work.**\n\n"
                 + "".join(f"- {md_text(line)}\n" for line in lic.incompatible) + "\n")
    rows = [[r["dataset"], r["licence"], r["n_cases"], r["commercial_use"],
             r["derivatives"] + (f" ({r['share_alike']})" if r["share_alike"] else ""), r["redistribution"],
             ", ".join(r["citation_keys"]), r["homepage"] or ""] for r in sources_record(sources, lic)["sources"]]
    text += "## Sources\n\n" + md_table(["dataset", "licence", "cases", "commercial use", "adapted material",
                                         "redistribution", "citation", "homepage"], rows)
    text += "\n## What the combination allows\n\n" + "".join(f"- {md_text(line)}\n" for line in lic.constraints)
    return text


@dataclass
class Citations:
    """The sources of some of a release's cases: what to cite (:attr:`bib`, ``CITATIONS.bib``) and
    what their licences allow together (:attr:`licences`, :attr:`licences_md`, ``LICENCES.md``)."""

    sources: list[dict[str, Any]]  # card entries, ``cases``: how many of the cases each holds
    licences: Combined
    what: str  # what LICENCES.md calls the whole ("this export", "the selected cases of demo 0.1.0")
    cases: str = "exported"  # what it calls the cases

    @classmethod
    def of(cls, release: Release, datasets: Iterable[str], what: str, whole: str = "this export",
           cases: str = "exported") -> Citations:
        """For the cases of ``datasets`` (each case's dataset); ``whole`` is what the licence
        constraints call them."""
        sources = sources_of(release, datasets)
        return cls(sources, licence_combination(sources, whole=whole), what, cases)

    @property
    def datasets(self) -> list[str]:
        return [str(s["dataset"]) for s in self.sources]

    @property
    def n_cases(self) -> int:
        return sum(int(s["cases"]) for s in self.sources)

    @property
    def bib(self) -> str:
        return citations_bib(self.sources)

    @property
    def licences_md(self) -> str:
        return licences_md(self.sources, self.licences, self.what, self.cases)

    @property
    def record(self) -> dict[str, Any]:
        """:func:`sources_record`: the sources and the licence summary as data (an export's JSON)."""
        return sources_record(self.sources, self.licences)

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``CITATIONS.bib`` and ``LICENCES.md`` into ``folder`` (created when missing)."""
        from curator.io.fsutil import atomic_write_text

        paths = [Path(folder) / name for name in FILES]
        for path, text in zip(paths, (self.bib, self.licences_md), strict=True):
            atomic_write_text(path, text)
        return paths


def cite(release: Release, where: str = "true", case_ids: Iterable[str] | None = None) -> Citations:
    """The :class:`Citations` of the cases ``where`` selects — a SQL condition over ``cases c``
    (and ``splits s`` when the release has one: ``s.split = 'train'``) — and, with ``case_ids``
    (a loader's ``PatchDataset(...).cases``, an export's list), of those among them. Every case
    selected counts, duplicates included: its dataset is cited."""
    from curator.release.query_errors import where_error

    has_splits = "splits" in release.table_names()
    join = "left join splits s using (case_id, dataset, modality)" if has_splits else ""
    try:
        rows = release.sql(f"select case_id, dataset from cases c {join} where ({where}) order by case_id").fetchall()
    except ReleaseError as e:
        raise where_error(e, where, "--where", has_splits, tables="cases c") from e
    if case_ids is not None:
        wanted = set(case_ids)
        unknown = sorted(wanted - {cid for cid, _ in rows})
        if unknown:
            raise ReleaseError("release_error", f"{len(unknown)} of the case ids given are not among the release's "
                               f"cases{' that --where selects' if where.strip() != 'true' else ''}: "
                               f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}", path=str(release.path),
                               remedy="give case ids of this release (`select case_id from cases`)")
        rows = [r for r in rows if r[0] in wanted]
    if not rows:
        raise ReleaseError("release_error", f"no case of the release matches --where {where!r}", path=str(release.path),
                           remedy="widen the condition; `curator query RELEASE \"select dataset, count(*) from "
                                  "cases group by 1\"` lists what there is")
    info = release.info
    name = f"{info.get('collection', release.path.parent.name)} {info.get('version', release.path.name)}"
    selected = where.strip() != "true" or case_ids is not None
    return Citations.of(release, [d for _, d in rows], f"the selected cases of {name}" if selected else name,
                        whole="this selection" if selected else "this release",
                        cases="selected" if selected else "released")
