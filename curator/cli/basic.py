"""``curator query``, ``curator sources``, ``curator env``, ``curator demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curator.cli.common import (
    OutputFormat,
    emit,
    err,
    handle_errors,
    note_newest,
    out,
    print_json,
    print_stage_reports,
)

FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json")]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("query")
    @handle_errors
    def query(release: Annotated[Path, typer.Argument(help="release folder (or collection folder; or a "
                                                       "workspace folder, for the tables a release would be built from)")],
              sql: Annotated[str, typer.Argument(help="SQL; every table of the release is a view")],
              fmt: Annotated[OutputFormat, typer.Option(
                  "--format", "-f", help="table, csv or json (json prints NaN and ±infinity as null)")
              ] = OutputFormat.table,
              limit: Annotated[int, typer.Option(min=0, help="max rows printed as a table "
                                                 "(csv and json print every row)")] = 200) -> None:
        """Query a release with DuckDB (read-only, file system access off)."""
        import duckdb

        from curator.errors import ReleaseError
        from curator.release.query import Release, duckdb_message
        from curator.release.workspace_query import WorkspaceTables, is_workspace

        rel: Release | WorkspaceTables
        if is_workspace(release):  # before a release: what ingest found, the problems so far
            rel = WorkspaceTables(release)
            err.print(escape(f"(workspace tables of {release}, not a release: what the next release would be "
                             "built from)"), highlight=False)
        else:
            rel = Release(release)
            note_newest(release, rel.path)
        res = rel.sql(sql)  # one SELECT: an empty query or several statements are refused
        try:
            rows = res.fetchall()
        except duckdb.Error as e:  # raised while running (e.g. a failed cast), not while binding
            raise ReleaseError("query_error", duckdb_message(e), path=str(rel.path)) from e
        if fmt == OutputFormat.table and len(rows) > limit:
            err.print(f"(showing {limit} of {len(rows)} rows; use --format csv for all)")
            rows = rows[:limit]
        emit(res.columns, rows, fmt)
        if fmt == OutputFormat.table and len(res.columns) > 6:
            err.print(f"({len(res.columns)} columns; floats to 6 digits: --format csv or --format json "
                      "prints every digit, unwrapped)")

    sources = typer.Typer(help="The dataset registry.", no_args_is_help=True)
    app.add_typer(sources, name="sources")

    @sources.command("list")
    @handle_errors
    def sources_list(fmt: FormatOpt = OutputFormat.table,
                     registry: Annotated[list[Path] | None, typer.Option(help="extra dataset YAML files")] = None,
                     ) -> None:
        """Every dataset the registry knows (built-in + --registry files)."""
        from curator.registry import load_registry

        reg = load_registry(extra=tuple(registry or ()))
        specs = [reg.datasets[n] for n in reg.names()]
        if fmt == OutputFormat.json:
            print_json([s.to_dict() for s in specs])
            return
        rows = [(s.name, s.version, s.modality, s.region, s.licence, s.citation_key, len(s.layout),
                 len(s.annotated_terms())) for s in specs]
        emit(["name", "version", "modality", "region", "licence", "citation", "layouts", "terms"], rows, fmt,
             title=f"{len(specs)} datasets")

    @sources.command("show")
    @handle_errors
    def sources_show(name: str,
                     registry: Annotated[list[Path] | None, typer.Option(help="extra dataset YAML files")] = None,
                     ) -> None:
        """One dataset's full entry (JSON): a registry name, or the path of a dataset YAML."""
        from curator.registry import load_dataset_file, load_registry

        spec = (load_dataset_file(Path(name)) if name.endswith((".yaml", ".yml"))
                else load_registry(extra=tuple(registry or ())).get(name))
        print_json(spec.to_dict())

    @app.command("env")
    def env() -> None:
        """Versions and machine facts for bug reports."""
        from curator.envinfo import environment

        for k, v in environment().items():
            out.print(escape(f"{k:>22}: {v}"), highlight=False)

    @app.command("demo")
    @handle_errors
    def demo(out_dir: Annotated[Path | None, typer.Option("--out", help="folder (default: a new temp folder)")] = None,
             workers: WorkersOpt = 2,
             executor: Annotated[str, typer.Option(help="local or dask")] = "local",
             progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True) -> None:
        """Build a small synthetic collection in native layouts and run every stage end to end."""
        from curator.demo import EXAMPLE_QUERY, outcome, run_demo
        from curator.release.query import Release

        res = run_demo(out_dir, workers=workers, executor=executor, progress=progress)
        print_stage_reports(res.result.reports)
        rel = Release(res.result.release)  # type: ignore[arg-type]
        out.print(f"\n[bold]Demo finished in {res.seconds:.0f} s[/] in {escape(str(res.folder))}", highlight=False)
        out.print(escape(f"  pipeline : {res.pipeline}"), highlight=False)
        out.print(escape(f"  release  : {res.result.release}"), highlight=False)
        out.print(escape(f"  planted  : {len(res.data.duplicates)} duplicates, {len(res.data.broken)} broken inputs: "
                         f"{outcome(rel)}"), highlight=False)
        out.print(escape(f"\nExample query:\n  curator query {res.result.release} \"{EXAMPLE_QUERY}\"\n"),
                  highlight=False)
        q = rel.sql(EXAMPLE_QUERY)
        emit(q.columns, q.fetchall(), OutputFormat.table)
        q = rel.sql("select kind, count(*) as n from problems where severity = 'error' group by 1 order by 1")
        emit(q.columns, q.fetchall(), OutputFormat.table, title="problems (cases dropped)")


WorkersOpt = Annotated[int, typer.Option("--workers", "-w", help="worker processes")]
