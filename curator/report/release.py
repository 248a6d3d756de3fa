"""Release step: ``report.html`` written into every release (after the qc step filled ``labels``)."""

from __future__ import annotations

import logging
from typing import Any

from curator.io.fsutil import atomic_write_text
from curator.report.data import ReportData
from curator.report.html import build_html

log = logging.getLogger("curator")


def release_step(builder: Any) -> None:
    """Build the report from the tables being released; the gallery reads the staged stores when the
    release carries them, else the workspace's."""
    from curator import __version__
    from curator.schema import schema_version

    info = {"collection": builder.ctx.config.release.collection, "version": builder.version,
            "code_version": __version__, "schema_version": schema_version(),
            "counts": {name: t.num_rows for name, t in sorted(builder.tables.items())},
            "pipeline_config": {"stages": {"qc": dict(builder.ctx.config.stage("qc"))}}}  # the QC rule's settings
    roots = (builder.staging / "stores", builder.ctx.workspace.stores_dir)
    data = ReportData.from_arrow(builder.tables, info, roots)
    atomic_write_text(builder.staging / "report.html", build_html(data))
    log.info("release: report.html written")
