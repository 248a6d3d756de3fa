"""``curator report RELEASE``: the release's self-contained QC report (report.html)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curator.cli.common import err, handle_errors


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("report")
    @handle_errors
    def report(release: Annotated[Path, typer.Argument(help="release folder (or collection folder)")],
               out: Annotated[Path, typer.Option("--out", "-o", help="where to write (not inside the release: "
                                                 "releases are immutable and already carry one)")] = Path("report.html"),
               stores: Annotated[list[Path] | None, typer.Option(
                   "--stores", help="extra folder(s) of <case_id>.zarr stores for the gallery (e.g. workspace/stores)")
               ] = None,
               max_gallery: Annotated[int, typer.Option(min=0, help="flagged labels drawn in the gallery")] = 24,
               max_terms: Annotated[int, typer.Option(min=0, help="terms with distribution and scatter plots")] = 12,
               ) -> None:
        """Write a self-contained HTML QC report (inline images; opens offline)."""
        from curator.report import write_report

        path = write_report(release, out, stores=tuple(stores or ()), max_terms=max_terms, max_gallery=max_gallery)
        err.print(f"[bold green]report[/] {escape(str(path))}", highlight=False)
