"""``curator dedup report``: figures of duplicate groups for a person to confirm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curator.cli.common import err, handle_errors


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    group = groups.get("dedup")
    if group is None:  # the dedup stage is not installed
        return

    @group.command("report")
    @handle_errors
    def report(pipeline: Annotated[Path, typer.Argument(help="pipeline.yaml", exists=True, dir_okay=False)],
               out: Annotated[Path, typer.Option("--out", "-o", help="folder for the PNGs and index.html")] = Path(
                   "dedup-report"),
               group_id: Annotated[list[str] | None, typer.Option("--group", help="only these group ids")] = None,
               ) -> None:
        """One PNG per duplicate group: members side by side at matching slices (+ index.html)."""
        from curator.config import PipelineConfig
        from curator.dedup.report import build_report
        from curator.errors import StageError
        from curator.runner.context import Context

        ctx = Context(PipelineConfig.load(pipeline))
        dup = ctx.workspace.read_table("duplicates")
        cases = ctx.workspace.read_table("cases")
        if dup is None or cases is None:
            raise StageError("stage_error", "the workspace has no duplicates table",
                             remedy=f"run `curator dedup {pipeline}` first")
        record = ctx.workspace.read_table("dedup_overrides")  # None: dedup ran before it was written
        written = build_report(dup.to_pylist(), {c["case_id"]: c for c in cases.to_pylist()},
                               {n: s.root for n, s in ctx.sources.items()}, out, group_id or None,
                               fixes={n: s.spec.fixes for n, s in ctx.sources.items()},
                               overrides=record.to_pylist() if record is not None else None)
        split = sum(1 for p in written if p.name.startswith("override-row-"))
        err.print(f"[green]✓[/] {len(written) - split} group figure(s)"
                  + (f" and {split} of pairs split by an override" if split else "")
                  + f" in {escape(str(out / 'index.html'))}", highlight=False)
