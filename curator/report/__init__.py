"""The QC report: one self-contained ``report.html`` per release.

Every release already carries one (release step :mod:`curator.report.release`, listed in
its checksums); :func:`write_report` re-draws it elsewhere — releases are immutable, so it
never writes into the release folder.

>>> # from curator.report import write_report
>>> # write_report("releases/demo/0.1.0", "demo-report.html", stores=(Path("workspace/stores"),))
"""

from __future__ import annotations

import logging
from pathlib import Path

from curator.errors import ReleaseError
from curator.io.fsutil import atomic_write_text
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
    data = ReportData.from_release(release, stores)
    dest = Path(out)
    if data.path.resolve() in dest.resolve().parents:
        raise ReleaseError("release_error", "releases are immutable; the report would be written inside one",
                           path=str(dest), remedy="pass --out somewhere outside the release folder")
    atomic_write_text(dest, build_html(data, max_terms=max_terms, max_gallery=max_gallery))
    log.debug("report written: %s", dest)
    return dest

