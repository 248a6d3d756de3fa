"""``curator gc``: list (and with ``--delete`` remove) workspace files no current case uses."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from curator.cli.common import ReportFormat, err, handle_errors, out, print_json
from curator.cli.stages import PipelineArg, load_config


def size_text(n: float) -> str:
    """``1536`` → ``'1.5 kB'`` (decimal units, as ``du -h --si``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


KEPT_WHY = {"root_missing": "root missing", "root_empty": "root empty (an unmounted share's mount point?)",
            "root_unreadable": "root unreadable", "no_case": "no case of it in the cases table"}


def kept_sources(ctx: Any) -> dict[str, str]:
    """Sources of pipeline.yaml gc spares whole (name → why, see ``curator.runner.gc.kept_sources``)."""
    from curator.runner.gc import kept_sources as kept

    return kept(ctx.workspace, {n: Path(src.root) for n, src in ctx.sources.items()})


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("gc")
    @handle_errors
    def gc_cmd(pipeline: PipelineArg,
               delete: Annotated[bool, typer.Option("--delete", help="remove what is listed (without it, "
                                                    "nothing is changed)")] = False,
               fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="table or json")] = ReportFormat.table,
               ) -> None:
        """List workspace files no current case uses, and their size; `--delete` removes them.

        Stores, attention stores, dedup thumbnails and per-stage cached results of cases no
        longer in the workspace's tables (deleted from their source, or a source taken out of
        pipeline.yaml), and dedup thumbnails an image changed in place superseded. A source of
        pipeline.yaml whose root is missing or empty, or of which no case is in the cases table,
        keeps all its files (an unmounted share). Releases are never touched: their stores are
        hard links.
        """
        from collections import Counter

        from curator.errors import WorkspaceError
        from curator.runner.context import Context
        from curator.runner.gc import find_leftovers, remove_leftovers

        ctx = Context(load_config(pipeline))
        ws = ctx.workspace
        if not ws.root.is_dir():
            raise WorkspaceError("workspace_error", f"no workspace at {ws.root}", path=str(ws.root),
                                 remedy="check pipeline.yaml's `workspace:` (gc collects a workspace's files)")
        skipped = ctx.skipped_sources  # its case ids are unknown: none of the workspace's files can be judged
        if skipped and delete:
            raise WorkspaceError("workspace_error", "gc --delete is refused while a source of pipeline.yaml is "
                                 "skipped: " + "; ".join(f"{n}: {why}" for n, why in skipped.items()),
                                 path=str(pipeline), remedy="fix the source (its dataset YAML, its root), or take "
                                 "it out of pipeline.yaml to collect its files; then run gc again")
        busy = ws.lock_holder() if ws.root.is_dir() else None
        if busy:  # its new cases are in no table yet: they would look like leftovers
            raise WorkspaceError("workspace_locked", f"the workspace is in use by {busy}", path=str(ws.root),
                                 remedy="run `curator gc` when that run has finished")
        kept = kept_sources(ctx) if ws.root.is_dir() else {}
        spared: Counter[str] = Counter()
        found = find_leftovers(ws, [f"{n}__" for n in kept], spared=spared)
        removed = 0
        if delete and found:
            with ws.locked("gc"):
                kept, spared = kept_sources(ctx), Counter()  # as of now, under the lock
                found = find_leftovers(ws, [f"{n}__" for n in kept], spared=spared)
                removed = remove_leftovers(ws, found)
        total, shared = sum(lo.size for lo in found), sum(lo.shared for lo in found)
        if fmt == ReportFormat.json:
            print_json({"workspace": str(ws.root), "deleted": delete, "removed": removed, "bytes": total,
                        "bytes_also_in_releases": shared, "skipped_sources": skipped, "kept_sources": [{"source": n, "why": why, "files_kept": spared[f"{n}__"]}
                                                 for n, why in kept.items()],
                        "leftovers": [{"kind": lo.kind, "case_id": lo.case_id,
                                       "path": lo.path.relative_to(ws.root).as_posix(), "bytes": lo.size,
                                       "bytes_also_in_releases": lo.shared} for lo in found]})
            return
        for n, why in kept.items():
            err.print(f"source {escape(n)}: {KEPT_WHY[why]} — its {spared[f'{n}__']} file(s) kept; remove the "
                      "source from pipeline.yaml to collect them", highlight=False)
        for n, why in skipped.items():
            err.print(f"[yellow]source {escape(n)} is skipped[/] ({escape(why)}): the files of its cases are listed "
                      "below as if it were gone, and --delete is refused until it is fixed", highlight=False)
        if not found:
            out.print(f"nothing to collect in {escape(str(ws.root))}: every file belongs to a current case",
                      highlight=False)
            return
        for lo in found:
            out.print(f"{lo.kind:<21} {size_text(lo.size):>9}  {escape(lo.path.relative_to(ws.root).as_posix())}",
                      highlight=False, soft_wrap=True)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(lo.kind for lo in found).items()))
        cases = len({lo.case_id for lo in found if lo.case_id})
        also = (f"; {size_text(shared)} of it is hard-linked into releases, which keep it" if shared else "")
        verb = f"removed {removed}" if delete else f"{len(found)}"
        out.print(f"{verb} leftover(s) ({kinds}) of {cases} case(s): {size_text(total)}{also}", highlight=False)
        if not delete:
            out.print(f"nothing was changed: `curator gc {escape(str(pipeline))} --delete` removes them",
                      highlight=False)
