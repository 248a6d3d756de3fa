"""The licences and citations an export carries: those of the source datasets of the cases it
wrote (duplicates standing in for a kept copy included: their own dataset's), not the release's —
``CITATIONS.bib`` and ``LICENCES.md`` beside the exported files, as :mod:`curator.release.citations`
writes them for any selection of a release's cases, and the same as data in the export's JSON.
This is guidance, not legal advice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.release.citations import FILES, Citations

if TYPE_CHECKING:
    from curator.export.common import ExportReport
    from curator.release.query import Release

__all__ = ["FILES", "licence_line", "write_sources"]


def write_sources(release: Release, folder: Path, datasets: Iterable[str], report: ExportReport,
                  what: str) -> dict[str, Any]:
    """Write ``CITATIONS.bib`` and ``LICENCES.md`` into ``folder`` for the sources of the written
    cases (``datasets``: each one's dataset), note them in ``report`` (a warning when their
    licences restrict sharing it as one adapted work) and return the export JSON's
    :func:`~curator.release.citations.sources_record`."""
    cited = Citations.of(release, datasets, what)
    cited.write(folder)
    listed = ", ".join(f"{s['dataset']} ({s['cases']} case{'s' if s['cases'] != 1 else ''}, {s['licence']})"
                       for s in cited.sources)
    report.notes.append(f"the exported cases come from {listed}: LICENCES.md says what their licences allow, "
                        "CITATIONS.bib holds what to cite")
    if cited.licences.incompatible:
        report.notes.append("warning: the licences of this export restrict sharing it as one adapted work — "
                            + " ".join(cited.licences.incompatible))
    return cited.record


def licence_line(record: Mapping[str, Any]) -> str:
    """One line naming the licences of an export (dataset.json's ``licence``)."""
    return "; ".join(f"{s['licence']} ({s['dataset']})" for s in record["sources"]) + \
        ": each case keeps its source dataset's licence; see LICENCES.md and CITATIONS.bib"
