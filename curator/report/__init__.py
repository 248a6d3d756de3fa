"""The QC report: one self-contained ``report.html`` per release.

Every release already carries one (release step :mod:`curator.report.release`, listed in
its checksums); :func:`write_report` re-draws it elsewhere — releases are immutable, so it
never writes into a release folder (this one or another).

>>> # from curator.report import write_report
>>> # write_report("releases/demo/0.1.0", "demo-report.html", stores=(Path("workspace/stores"),))
"""

from __future__ import annotations

import logging
from pathlib import Path

from curator.io.fsutil import atomic_write_text, check_output_file
from curator.release.query import check_outside_releases, resolve_release
from curator.report.data import ReportData
from curator.report.html import build_html

log = logging.getLogger("curator")

__all__ = ["ReportData", "build_html", "write_report"]


def write_report(release: str | Path, out: str | Path = "report.html", *, stores: tuple[Path, ...] = (),
                 max_terms: int = 12, max_gallery: int = 24) -> Path:
    """Write the report of a release folder to ``out``.

    ``stores`` adds folders holding ``<case_id>.zarr`` (e.g. a workspace's ``stores/``) for the
    gallery when the release does not carry its stores.
    """
    dest = Path(out)
    check_outside_releases(dest, "the report", resolve_release(release))
    check_output_file(dest, "report.html")
    data = ReportData.from_release(release, stores)
    atomic_write_text(dest, build_html(data, max_terms=max_terms, max_gallery=max_gallery))
    log.debug("report written: %s", dest)
    return dest

