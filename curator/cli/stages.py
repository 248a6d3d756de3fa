"""``curator run``, ``curator release`` and one command group per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from curator.cli.common import (
    ExecutorKind,
    ReportFormat,
    err,
    handle_errors,
    out,
    print_json,
    print_stage_reports,
)
from curator.stages import STAGES

PipelineArg = Annotated[Path, typer.Argument(help="pipeline.yaml", exists=True, dir_okay=False)]
ExecutorOpt = Annotated[ExecutorKind | None, typer.Option("--executor", help="local (process pool) or dask")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-w", min=1, help="worker processes")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="dask scheduler address (default: a LocalCluster)")]
ProgressOpt = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="progress bars (default: executor.progress in the pipeline file, else on)")]


class DefaultRunGroup(TyperGroup):
    """A group whose first argument, when not a subcommand, goes to its ``run`` command:
    ``curator ingest pipeline.yaml`` == ``curator ingest run pipeline.yaml``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors its own click
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _run_facts(record: dict[str, Any] | None) -> dict[str, Any]:
    """What ``curator status`` shows of a stage's last run (its stage.json)."""
    if not record:
        return {}
    return {k: record[k] for k in ("finished", "planned", "failed", "tables", "stage_version", "config_hash")
            if k in record}


OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="replace the release version when it exists with other content (default: refused; the same "
    "content keeps it as it is)")]

# status's ``release.refused_reason``: why `curator release` would not write the release (docs/releases.md)
REFUSED_REASONS = ("exists", "stale", "no_cases_table", "no_cases", "sources_missing")


def _release_refusal(ctx: Any, dest: Path, stale: list[str], has_cases: bool) -> tuple[str | None, str]:
    """``(reason, message)`` of what `curator release` would refuse (``reason`` one of
    :data:`REFUSED_REASONS`, or another release error's kind; None: it would write the release),
    the message much as it would say it."""
    from curator.errors import ReleaseError
    from curator.release.build import check_cases
    from curator.runner.freshness import stale_message

    name = ctx.config.file_name
    if dest.exists():
        rc = ctx.config.release
        from curator.release.build import exists_remedy
        from curator.release.integrity import published_content

        said, _ = published_content(dest)
        return "exists", (f"release {rc.collection} {rc.version} already exists ({dest}, content_sha256 {said}): a "
                          "rebuild keeps it when it holds the same content and is refused when not; "
                          + exists_remedy(name))
    if stale:  # (before a missing cases table: a stage that has not run says more)
        return "stale", stale_message(stale, name) + f"; run `curator run {name}` (cached cases are not redone)"
    if not has_cases:
        return "no_cases_table", f"the workspace has no cases table: run ingest first (`curator run {name}`)"
    try:
        check_cases(ctx)
    except ReleaseError as e:  # an empty ingest, a source that gave no case
        reason = {"release_incomplete": "sources_missing", "release_error": "no_cases"}.get(e.kind, e.kind)
        return reason, e.detail
    return None, ""


def _leftovers(ctx: Any) -> int | str:
    """How many stores `curator gc` would list (status stays cheap: gc's full scan walks every
    stage result), or why they cannot be counted (a damaged table): status still reports."""
    from curator.cli.gc import kept_sources
    from curator.errors import CuratorError
    from curator.runner.gc import count_unused_stores

    if ctx.skipped_sources:  # its case ids are unknown: its stores would be counted as unused
        return (f"a source is skipped ({', '.join(sorted(ctx.skipped_sources))}), so its stores cannot be told "
                "from unused ones (fix the source first)")
    try:
        return count_unused_stores(ctx.workspace, [f"{n}__" for n in kept_sources(ctx)])
    except (CuratorError, OSError) as e:
        return str(e)


def load_config(pipeline: Path, executor: ExecutorKind | str | None = None, workers: int | None = None,
                address: str | None = None, progress: bool | None = None) -> Any:
    from curator.config import PipelineConfig

    cfg = PipelineConfig.load(pipeline)
    ex = cfg.executor
    changes: dict[str, Any] = {} if progress is None else {"progress": progress}  # None: the file's
    if executor:
        changes["kind"] = getattr(executor, "value", executor)
    if workers is not None:
        changes["workers"] = workers
    if address:
        changes["address"] = address
        changes["kind"] = "dask"
    ex = type(ex).from_dict({**ex.to_dict(), **changes})
    return cfg.replace(executor=ex)


def _report(result: Any) -> None:
    print_stage_reports(result.reports)
    if result.release:
        err.print(f"[bold green]release[/] {escape(str(result.release))}", highlight=False)


def register(app: typer.Typer) -> dict[str, typer.Typer]:
    @app.command("run")
    @handle_errors
    def run(pipeline: PipelineArg, executor: ExecutorOpt = None, workers: WorkersOpt = None,
            address: AddressOpt = None, progress: ProgressOpt = None,
            stages: Annotated[str | None, typer.Option(help="comma-separated subset of stages")] = None,
            release: Annotated[bool, typer.Option("--release/--no-release", help="write the release")] = True,
            overwrite: OverwriteOpt = False,
            ) -> None:
        """Run the whole pipeline from one config, then write the release."""
        from curator.pipeline import run_pipeline

        cfg = load_config(pipeline, executor, workers, address, progress)
        chosen = [s.strip() for s in stages.split(",")] if stages else None
        _report(run_pipeline(cfg, stages=chosen, release=release, overwrite=overwrite))

    @app.command("release")
    @handle_errors
    def release_cmd(pipeline: PipelineArg,
                    progress: Annotated[bool | None, typer.Option(
                        "--progress/--no-progress", help="accepted as by `run` and the stage commands, so a script "
                        "can pass it to every command; writing a release draws no progress bar")] = None,
                    overwrite: OverwriteOpt = False) -> None:
        """Write the release from the workspace's tables (no stage is re-run).

        Refused when a table is out of date with pipeline.yaml: a stage not run, or run under
        other settings, code or sources, or before a stage it follows ran again. A version that
        exists is kept when this build holds the same content (content_sha256), refused when not.
        """
        del progress  # nothing to show: the option is there so scripts may pass it everywhere
        from curator.release.build import build_release
        from curator.runner.context import Context

        cfg = load_config(pipeline)
        ctx = Context(cfg)
        with ctx.workspace.locked("release"):
            path = build_release(ctx, overwrite=overwrite)
        err.print(f"[bold green]release[/] {escape(str(path))}", highlight=False)

    @app.command("status")
    @handle_errors
    def status_cmd(pipeline: PipelineArg,
                   fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="table or json")] = ReportFormat.table,
                   check: Annotated[bool, typer.Option("--check", help="exit code 1 when a `curator release` "
                                                       "would be refused (for scripts)")] = False) -> None:
        """What the workspace holds: each stage's last run, whether it is current, release ready?

        Each stage's tables are compared with pipeline.yaml (and why not current is said), and
        whether `curator release` would write the release."""
        from curator.release.build import release_dir
        from curator.runner.context import Context
        from curator.runner.freshness import stage_states

        ctx = Context(load_config(pipeline))
        states = stage_states(ctx)
        dest = release_dir(ctx)
        rc = ctx.config.release
        stale = [r for s in states for r in s.reasons]
        has_cases = ctx.workspace.has_table("cases")
        blocked, refusal = _release_refusal(ctx, dest, stale, has_cases)
        busy = ctx.workspace.lock_holder()
        # a source left out (its dataset YAML does not load); a `registry:` file that gives no dataset
        # is no source: said apart (whether a source was skipped for it is in its message)
        skipped = sorted(ctx.skipped_sources.items())
        registry = [(p["path"], p["severity"], p["message"].partition(". What to do: ")[0])
                    for p in ctx.registry_problems]
        # a root that is not there (an unmounted share): ingest, current, ran without its cases
        no_root = [(n, str(src.root)) for n, src in sorted(ctx.sources.items()) if not src.root.is_dir()]
        behind: dict[str, str] = {}  # a current stage after an out-of-date one: its tables may change
        first = None
        for s in states:
            if s.enabled and first is not None and not s.reasons:
                behind[s.name] = first
            if s.enabled and s.reasons and first is None:
                first = s.name
        counted = _leftovers(ctx) if not busy else None
        leftovers = counted if isinstance(counted, int) else None
        if fmt == ReportFormat.json:
            print_json({
                "workspace": str(ctx.workspace.root), "in_use_by": busy, "gc_unused_stores": leftovers,
                **({"gc_count_unavailable": counted} if isinstance(counted, str) else {}),
                "sources_skipped": [{"file": f, "why": why} for f, why in skipped],
                "registry_problems": [{"file": f, "severity": sev, "why": why} for f, sev, why in registry],
                "sources_root_missing": [{"source": n, "root": root} for n, root in no_root],
                "stages": [{"stage": s.name, "enabled": s.enabled, "current": not s.reasons if s.enabled else None,
                            "reasons": s.reasons, "after_out_of_date": behind.get(s.name),
                            "last_run": _run_facts(s.record)} for s in states],
                "release": {"collection": rc.collection, "version": rc.version, "path": str(dest),
                            "exists": dest.exists(), "would_write": blocked is None,
                            "refused_reason": blocked, "refused_because": refusal or None}})
        else:
            table = Table(title=f"workspace {ctx.workspace.root}", title_justify="left")
            for col in ("stage", "last run (UTC)", "cases", "failed", "tables", "state"):
                table.add_column(col, overflow="fold")
            for s in states:
                run = _run_facts(s.record)
                state = ("[dim]disabled[/]" if not s.enabled
                         else f"[yellow]current, but after {behind[s.name]}, which is not: its tables may change "
                              f"when {behind[s.name]} runs[/]" if s.name in behind
                         else "[green]current[/]" if not s.reasons else "[red]" + escape("; ".join(s.reasons)) + "[/]")
                table.add_row(s.name, str(run.get("finished") or "-")[:16].replace("T", " "), str(run.get("planned", "-")),
                              str(run.get("failed", "-")), escape(", ".join(f"{t} {n}" for t, n in
                                                                     (run.get("tables") or {}).items())), state)
            out.print(table)
            for f, why in skipped:  # "current" is then without this source: say so where it is read
                out.print(f"[red]source skipped[/] {escape(f)}: {escape(why)}; every state above leaves it out",
                          highlight=False)
            for f, sev, why in registry:
                out.print(f"[{'red' if sev == 'error' else 'yellow'}]registry {sev}[/] {escape(f)}: {escape(why)}",
                          highlight=False)
            for n, root in no_root:
                out.print(f"[red]source root missing[/] {escape(n)}: {escape(root)} is not a folder (an unmounted "
                          "share?); ingest finds no case of it, and every state above leaves it out",
                          highlight=False)
            if busy:
                out.print(f"[yellow]the workspace is in use by {escape(busy)}[/]: these states are of its "
                          "finished stages and change as it goes on", highlight=False)
            if leftovers:
                out.print(f"[yellow]{leftovers} store(s) belong to no current case[/] (deleted cases or sources): "
                          f"`curator gc {escape(str(pipeline))}` lists them, their size and the cached results "
                          "and thumbnails left with them", highlight=False)
            elif isinstance(counted, str):
                out.print(f"[yellow]gc count unavailable[/]: {escape(counted)}", highlight=False)
            name = f"{escape(rc.collection)} {escape(rc.version)}"
            if blocked == "exists":
                out.print(f"release {name}: [yellow]exists[/] ({escape(str(dest))}); a rebuild with the same "
                          "content keeps it, other content is refused: bump `release.version` for a new one",
                          highlight=False)
            elif blocked == "stale":
                out.print(f"release {name}: [red]would be refused[/] (tables out of date): run `curator run "
                          f"{escape(str(pipeline))}` — cached cases are not redone", highlight=False)
            elif blocked == "no_cases_table":
                out.print(f"release {name}: [red]would be refused[/]: no cases table yet (run ingest)",
                          highlight=False)
            elif blocked is not None:
                out.print(f"release {name}: [red]would be refused[/]: {escape(refusal)}", highlight=False)
            else:
                out.print(f"release {name}: [green]ready[/]: `curator release {escape(str(pipeline))}` writes "
                          f"{escape(str(dest))}", highlight=False)
        if check and blocked is not None:
            raise typer.Exit(1)

    groups: dict[str, typer.Typer] = {}
    for name in STAGES:
        group = typer.Typer(name=name, cls=DefaultRunGroup, no_args_is_help=True,
                            help=f"The {name} stage: `curator {name} pipeline.yaml` runs it alone (its options: "
                                 f"`curator {name} run --help`).")
        _add_stage_run(group, name)
        app.add_typer(group, name=name)
        groups[name] = group
    return groups


def _add_stage_run(group: typer.Typer, name: str) -> None:
    @group.command("run")
    @handle_errors
    def run_one(pipeline: PipelineArg, executor: ExecutorOpt = None, workers: WorkersOpt = None,
                address: AddressOpt = None, progress: ProgressOpt = None) -> None:
        from curator.pipeline import run_pipeline

        cfg = load_config(pipeline, executor, workers, address, progress)
        _report(run_pipeline(cfg, stages=[name], release=False))

    run_one.__doc__ = (f"Run the {name} stage alone: it reads the sources pipeline.yaml lists (the first stage; "
                       "the others read its tables)." if name == next(iter(STAGES)) else
                       f"Run the {name} stage alone (the tables it reads from earlier stages must exist: run those "
                       "first, or `curator run`).")
