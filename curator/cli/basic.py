"""``curator query``, ``curator sources``, ``curator env``, ``curator demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from curator.cli.common import (
    ExecutorKind,
    FormulaCount,
    OutputFormat,
    RegistryOpt,
    ReportFormat,
    emit,
    err,
    handle_errors,
    note_newest,
    out,
    print_json,
    print_stage_reports,
    spreadsheet_cell,
)

if TYPE_CHECKING:  # pragma: no cover
    from curator.config import PipelineConfig
    from curator.ingest.check import SourceCheck

FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json")]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("query")
    @handle_errors
    def query(release: Annotated[Path, typer.Argument(help="release folder (or collection folder; or a "
                                                       "workspace folder, for the tables a release would be built from)")],
              sql: Annotated[str, typer.Argument(help="SQL; every table of the release is a view")],
              fmt: Annotated[OutputFormat | None, typer.Option(
                  "--format", "-f", help="table, csv or json (json prints NaN and ±infinity as null; "
                  "default: table); with --out, the file's own format")] = None,
              limit: Annotated[int, typer.Option(min=0, help="max rows printed as a table "
                                                 "(csv and json print every row)")] = 200,
              out_file: Annotated[Path | None, typer.Option(
                  "--out", "-o", help="write every row to this .parquet or .csv file (streamed, replaced "
                  "atomically) instead of printing")] = None,
              spreadsheet: Annotated[bool, typer.Option(
                  "--spreadsheet", help="CSV to open in a spreadsheet: quote with ' text that it would run as a "
                  "formula (starting = + - @; numbers stay numbers). Without it CSV holds every value exactly")] = False,
              ) -> None:
        """Query a release with DuckDB (read-only, file system access off)."""
        import duckdb

        from curator.errors import ConfigError, ReleaseError
        from curator.release.query import Release
        from curator.release.query_errors import duckdb_message
        from curator.release.workspace_query import WorkspaceTables, is_workspace

        _check_out_format(out_file, fmt)
        if spreadsheet and not (fmt == OutputFormat.csv or (out_file is not None and out_file.suffix.lower() == ".csv")):
            raise ConfigError("config_error", "--spreadsheet changes CSV cells only",
                              remedy="add --format csv, or --out a .csv file; or leave out --spreadsheet")
        if out_file is not None:  # before the query runs: a place nothing can be written to is said first
            from curator.io.fsutil import check_output_file

            check_output_file(out_file, "rows.csv")
        fmt = fmt or OutputFormat.table
        rel: Release | WorkspaceTables
        if is_workspace(release):  # before a release: what ingest found, the problems so far
            rel = WorkspaceTables(release)
            err.print(escape(f"(workspace tables of {release}, not a release: what the next release would be "
                             "built from)"), highlight=False)
        else:
            try:
                rel = Release(release)
            except ReleaseError as e:
                if release.exists():
                    raise
                # `curator query work/workspace` for `workspace: work`: a workspace is taken too
                raise ReleaseError(e.kind, e.detail, path=e.path, remedy=f"{e.remedy}; or pass a workspace folder "
                                   "(pipeline.yaml's `workspace:`, e.g. work) for its tables before a release") from None
            note_newest(release, rel.path)
        res = rel.sql(sql)  # one SELECT: an empty query or several statements are refused
        if out_file is not None:
            from curator.release.result_file import save_result

            counted = FormulaCount()
            n = save_result(res, out_file, rel.path, spreadsheet_cell if spreadsheet else counted)
            err.print(escape(f"wrote {n:,} row(s) to {out_file}"), highlight=False)
            if out_file.suffix.lower() == ".csv" and (hint := counted.hint()):
                err.print(hint, highlight=False)
            return
        try:
            rows = res.fetchall()
        except duckdb.Error as e:  # raised while running (e.g. a failed cast), not while binding
            raise ReleaseError("query_error", duckdb_message(e), path=str(rel.path)) from e
        if fmt == OutputFormat.table and len(rows) > limit:
            err.print(f"(showing {limit} of {len(rows)} rows; use --format csv for all)")
            rows = rows[:limit]
        counted = FormulaCount()  # CSV cells as written, counting those a spreadsheet would run
        emit(res.columns, rows, fmt, spreadsheet=spreadsheet, csv_cell_of=counted)
        if fmt == OutputFormat.csv and not spreadsheet and (hint := counted.hint()):
            err.print(hint, highlight=False)
        if fmt == OutputFormat.table and len(res.columns) > 6:
            err.print(f"({len(res.columns)} columns; floats to 6 digits: --format csv or --format json "
                      "prints every digit, unwrapped)")

    sources = typer.Typer(help="The dataset registry.", no_args_is_help=True)
    app.add_typer(sources, name="sources")

    @sources.command("list")
    @handle_errors
    def sources_list(fmt: FormatOpt = OutputFormat.table,
                     registry: RegistryOpt = None) -> None:
        """Every dataset the registry knows (built-in + --registry files and folders)."""
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
                     registry: RegistryOpt = None) -> None:
        """One dataset's full entry (JSON): a registry name, or the path of a dataset YAML."""
        from curator.registry import load_dataset_file, load_registry

        spec = (load_dataset_file(Path(name)) if name.endswith((".yaml", ".yml"))
                else load_registry(extra=tuple(registry or ())).get(name))
        print_json(spec.to_dict())

    @sources.command("init")
    @handle_errors
    def sources_init(
            root: Annotated[Path, typer.Argument(help="the dataset's download (the source root)", exists=True,
                                                 file_okay=False)],
            name: Annotated[str | None, typer.Option(help="the dataset's registry name (default: the folder's "
                                                     "name)")] = None,
            modality: Annotated[str | None, typer.Option(help="CT, MR or PET (default: guessed from the file "
                                                         "names)")] = None,
            out_file: Annotated[Path | None, typer.Option("--out", "-o", help="write the YAML here (refused when "
                                                          "the file exists) instead of printing it")] = None,
    ) -> None:
        """Draft a dataset YAML from a download's files: its layout (images, labels, {case},
        {sequence}, {structure}), the label values a few files hold, TODO for what no file says.
        A guess to check and complete, then try with `curator sources check`."""
        import re

        from curator.errors import ConfigError
        from curator.io.fsutil import atomic_write_text
        from curator.registry.scaffold import scaffold, to_yaml
        from curator.registry.spec import MODALITIES

        if modality is not None and modality not in MODALITIES:
            raise typer.BadParameter(f"give one of {', '.join(MODALITIES)}", param_hint="--modality")
        if out_file is not None and out_file.exists():
            raise ConfigError("config_error", f"{out_file} exists", remedy="give another --out, or remove it")
        from curator.config import FOLDER_NAME, FOLDER_NAME_RULE

        if name is not None and not FOLDER_NAME.match(name):
            raise typer.BadParameter(f"{name!r} cannot name a dataset: use {FOLDER_NAME_RULE}", param_hint="--name")
        name = name or re.sub(r"[^A-Za-z0-9._-]+", "_", root.resolve().name).strip("._")[:64] or "MyDataset"
        draft = scaffold(root, name, modality)
        if not draft.entries:
            raise ConfigError("config_error", f"no image file under {root} (NIfTI, NRRD, MHA/MHD or a folder of "
                              "DICOM files): nothing to draft a layout from",
                              remedy="give the download's root folder; write the layout by hand for other formats "
                                     "(docs/registry.md)")
        text = to_yaml(draft, root)
        if out_file is None:
            out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        else:
            atomic_write_text(out_file, text)
        found = sum(e.cases for e in draft.entries)
        err.print(escape(f"{len(draft.entries)} layout entr{'y' if len(draft.entries) == 1 else 'ies'}, {found} "
                         f"case(s); fill in each TODO, then: curator labels check --registry "
                         f"{out_file or 'THE.yaml'} and curator sources check {out_file or 'THE.yaml'} {root}"),
                  highlight=False)

    @sources.command("check")
    @handle_errors
    def sources_check(
            dataset: Annotated[str, typer.Argument(help="a registry name or the path of a dataset YAML (with ROOT); "
                                                  "or a pipeline.yaml: each of its sources")],
            root: Annotated[Path | None, typer.Argument(help="the dataset's download (the source root)",
                                                        exists=True, file_okay=False)] = None,
            sample: Annotated[int, typer.Option(help="cases to read (the first of each split/sequence, then "
                                                     "spread evenly)")] = 5,
            every: Annotated[bool, typer.Option("--all", help="read every case (ingest without a workspace)")] = False,
            workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="cases read at once (processes)")] = 1,
            registry: RegistryOpt = None,
            taxonomy: Annotated[Path | None, typer.Option(
                "--taxonomy", help="a taxonomy file of your own (default: the pipeline's stages.harmonize.taxonomy, "
                                   "else the bundled one)")] = None,
            strict: Annotated[bool, typer.Option("--strict", help="fail on warnings too")] = False,
            fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="table or json")] = ReportFormat.table,
    ) -> None:
        """Try a dataset YAML on its download: which cases its patterns find, which volume files
        they miss, what ingest says of a sample of cases, and which label values the files hold
        (exit 1 on errors). With a pipeline.yaml and no ROOT, every source it lists, under its
        stages' settings (stages.ingest, stages.qc, the taxonomy); a dataset YAML, under the
        defaults. Nothing is written; the output names your files."""
        from curator.ingest.check import check_source

        if sample < 1 and not every:
            raise typer.BadParameter("give --sample 1 or more, or --all", param_hint="--sample")
        n = None if every else sample
        if root is not None:
            reports = [check_source(dataset, root, registry=tuple(registry or ()), sample=n, workers=workers,
                                    taxonomy=taxonomy)]
        else:
            cfg = _pipeline_of(dataset)  # its stages' settings (ingest's tolerance, the taxonomy), as its run reads them
            reports = [check_source(sc.dataset, sc.root, registry=(*cfg.registry, *(registry or ())), sample=n,
                                    name=sc.name, pseudonymous_ids=sc.pseudonymous_ids, workers=workers,
                                    taxonomy=taxonomy, pipeline=cfg)
                       for sc in cfg.sources]
        ok = [not (r.errors or r.cases == 0 or (strict and r.warnings)) for r in reports]
        failed = [r.source for r, good in zip(reports, ok, strict=True) if not good]
        if fmt == ReportFormat.json:
            got = [{**r.to_dict(), "ok": good} for r, good in zip(reports, ok, strict=True)]
            print_json(got[0] if root is not None else got)
        else:
            for i, r in enumerate(reports):
                if i:
                    out.rule()
                _print_check(r)
            if root is None:
                err.print(f"[{'red' if failed else 'green'}]{len(reports) - len(failed)} of {len(reports)} "
                          f"source(s) passed[/]" + (f"; failed: {escape(', '.join(failed))}" if failed else ""),
                          highlight=False)
        if failed:
            raise typer.Exit(1)

    @app.command("env")
    def env() -> None:
        """Versions and machine facts for bug reports."""
        from curator.envinfo import environment

        for k, v in environment().items():
            out.print(escape(f"{k:>22}: {v}"), highlight=False)

    @app.command("demo")
    @handle_errors
    def demo(out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="folder (default: a new temp folder)")] = None,
             workers: WorkersOpt = 2,
             executor: Annotated[ExecutorKind, typer.Option(help="local or dask")] = ExecutorKind.local,
             progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True) -> None:
        """Build a small synthetic collection in native layouts and run every stage end to end."""
        from curator.demo import EXAMPLE_QUERY, outcome, run_demo
        from curator.release.query import Release

        res = run_demo(out_dir, workers=workers, executor=executor.value, progress=progress)
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


WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="worker processes")]


def _check_out_format(out_file: Path | None, fmt: OutputFormat | None) -> None:
    """Refuse a ``--format`` that contradicts the ``--out`` file's extension (``-o cases.csv -f
    json`` wrote CSV without a word); one that agrees, or none, is fine."""
    from curator.errors import ConfigError

    if out_file is None or fmt is None or out_file.suffix.lower() == f".{fmt.value}":
        return
    other = {OutputFormat.csv: "; or name the file .csv",
             OutputFormat.json: f"; or print JSON instead of --out: `-f json > {out_file.stem}.json`"}.get(fmt, "")
    raise ConfigError("config_error", f"--format {fmt.value} contradicts --out {out_file.name}: the file is "
                      f"written in the format its extension names ({out_file.suffix or 'none'})",
                      remedy=f"leave out --format (--out writes .csv or .parquet){other}")


def _print_check(r: SourceCheck) -> None:
    """``curator sources check`` as tables, one per section."""
    splits = ", ".join(f"{'no split' if k == 'None' else k} {v}" for k, v in r.splits.items())
    seqs = ", ".join(f"{k} {v}" for k, v in r.sequences.items())
    named = f"{r.source} ({r.dataset} {r.version})" if r.source and r.source != r.dataset else f"{r.dataset} {r.version}"
    out.print(escape(f"{named} at {r.root} ({r.encoding})"), style="bold", highlight=False)
    changed = ", ".join(f"{k}: {v}" for k, v in r.settings.items()) or "no setting changed"
    out.print(escape(f"settings of {r.settings_from} ({changed})" if r.settings_from != "defaults" else
                     f"settings: the defaults ({changed}; `curator sources check pipeline.yaml` checks with a "
                     "pipeline's stages.ingest and stages.qc)"), highlight=False)
    out.print(escape(f"{r.cases} case(s)" + (f": {splits}" if splits else "") + (f"; sequences {seqs}" if seqs else "")
                     + f"; {r.label_only} label-only, {r.without_label} without a label"), highlight=False)
    missed = [u for u in r.unmatched if not u.get("read_by")]
    if missed:
        shown = 20
        more = f"; {len(missed) - shown} more groups: --format json" if len(missed) > shown else ""
        emit(["folder", "suffix", "folders", "files", "examples"],
             [(u["folder"], u["suffix"], u["folders"], u["files"], ", ".join(u["examples"]))
              for u in missed[:shown]],
             OutputFormat.table, title=f"volume files no case reads (not ingested{more})")
    theirs = [u for u in r.unmatched if u.get("read_by")]
    if theirs:  # a shared download: AMOS22_MRI's cases in AMOS22_CT's folders are no pattern's miss
        emit(["folder", "suffix", "folders", "files", "read by", "examples"],
             [(u["folder"], u["suffix"], u["folders"], u["files"], u["read_by"], ", ".join(u["examples"]))
              for u in theirs],
             OutputFormat.table, title=f"volume files {r.dataset} does not read, which a related dataset's layout "
             "matches (its `overlaps:`)")
    if r.other_files:
        out.print(escape("other files, not read: " + ", ".join(f"{k} {v}" for k, v in r.other_files.items())),
                  highlight=False)
    if r.sampled:
        rows = []
        for s in r.sampled:
            grid = ""
            if "shape" in s:
                grid = (f"{'×'.join(str(n) for n in s['shape'])} @ {'×'.join(f'{x:.3g}' for x in s['spacing_mm'])} mm "
                        f"{s.get('orientation', '')}")
            values = (len(s.get("label_keys") or []) if r.encoding == "per_structure" else s.get("label_values"))
            rng = (f"{s.get('dtype', '')} {s['intensity_min']:g}..{s['intensity_max']:g}" if "intensity_min" in s
                   else "")
            rows.append((s["case_id"], s.get("official_split") or "-", s.get("sequence") or "-", s.get("format"), grid,
                         rng, s.get("label_status"), values,
                         ", ".join(k if n == 1 else f"{k} ({n} times)" for k, n in s["problems"].items()) or "-"))
        emit(["case", "split", "sequence", "format", "grid", "intensities", "label",
              "structures" if r.encoding == "per_structure" else "values", "problems"], rows, OutputFormat.table,
             title=f"{len(r.sampled)} of {r.cases} case(s) read")
    if r.values:
        what = "structure" if r.encoding == "per_structure" else "value"
        in_files = any("named_in_files" in v for v in r.values)  # a DICOM SEG's segment labels
        emit([what, "terms", "declared", "in sampled labels", *(["named in the files"] if in_files else [])],
             [(v["value"], ", ".join(v["terms"]) or (f"- (its name is the term {v['suggest']})" if "suggest" in v
                                                      else "-"),
               "ignored" if v["ignored"] else ("yes" if v["declared"] else "NO"),
               f"{v['cases']} of {v['of']}" + (f": {', '.join(v['examples'])}" if v.get("examples") else ""),
               *([", ".join(f"{k} (in {n} file{'s' * (n != 1)})" for k, n in v.get("named_in_files", {}).items())
                  or "-"] if in_files else []))
              for v in r.values],
             OutputFormat.table, title=f"label {what}s")
    if r.problems:  # one row per kind: the first case's path and message, and how many cases said it
        order = {"error": 0, "warning": 1}
        kinds: dict[tuple[str, str], list[dict[str, object]]] = {}
        for p in sorted(r.problems, key=lambda p: order.get(p["severity"], 2)):
            kinds.setdefault((p["severity"], p["kind"]), []).append(p)
        emit(["severity", "kind", "times", "first", "message"],
             [(sev, kind, len(ps), ps[0]["path"], ps[0]["message"]) for (sev, kind), ps in kinds.items()],
             OutputFormat.table, title=f"{len(r.problems)} problem(s) (--format json lists each)")
    colour = "red" if r.errors or not r.cases else "green"
    err.print(f"[{colour}]{len(r.errors)} error(s)[/], {len(r.warnings)} warning(s)"
              + ("; no case found" if not r.cases else ""), highlight=False)


def _pipeline_of(path: str) -> PipelineConfig:
    """``path`` as a pipeline.yaml (``sources check`` without ROOT), or a clear refusal."""
    import yaml

    from curator.config import PipelineConfig
    from curator.errors import ConfigError
    from curator.yamlio import load_yaml

    p = Path(path)
    try:
        raw = load_yaml(p.read_text(encoding="utf-8")) if p.is_file() and p.suffix in (".yaml", ".yml") else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError("config_error", f"{path} cannot be read as YAML: {e}") from e
    if not isinstance(raw, dict) or "sources" not in raw:
        raise ConfigError("config_error", f"{path}: give the dataset's download as ROOT (or a pipeline.yaml, whose "
                          "sources name their roots)", remedy="curator sources check my_dataset.yaml /data/mine")
    return PipelineConfig.load(p)
