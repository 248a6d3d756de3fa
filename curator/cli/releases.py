"""``curator verify``, ``curator diff``, ``curator lineage`` and ``curator cite``: checking, comparing and citing releases."""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from curator.cli.common import OutputFormat, emit, err, handle_errors, note_newest, out, print_json

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.diff import ReleaseDiff


class ReportFormat(str, Enum):
    """verify and diff print reports, not tables: no CSV."""

    table = "table"
    json = "json"


ReportOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="table or json")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json")]
ReleaseArg = Annotated[Path, typer.Argument(help="release folder (or collection folder: its newest version)")]


def _list(title: str, items: list[Any], limit: int, style: str, count: int | None = None) -> None:
    """``title (count)`` (default: the number of items), then up to ``limit`` items, one a line."""
    if not items:
        return
    out.print(f"  [{style}]{title}[/] ({len(items) if count is None else count})", highlight=False)
    for x in items[:limit]:
        text = x if isinstance(x, str) else " ".join(str(v) for v in (x if isinstance(x, (list, tuple)) else [x]))
        out.print(f"    {escape(text)}", highlight=False)
    if len(items) > limit:
        out.print(f"    ... and {len(items) - limit} more (use --format json for all)", highlight=False)


def _ml(v: float | None) -> str:
    """A label's volume for the diff: to 0.01 ml ("?" from a release without volume_ml)."""
    return "?" if v is None else f"{v:.2f}"


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("verify")
    @handle_errors
    def verify(release: ReleaseArg, fmt: ReportOpt = ReportFormat.table,
               limit: Annotated[int, typer.Option(min=0, help="max paths listed per kind")] = 50) -> None:
        """Re-check every file checksum, every store's content hash and the dataset card.

        Exit code 0 when the release is intact, 1 when anything changed.
        """
        from curator.release.integrity import verify_release
        from curator.release.query import resolve_release

        rep = verify_release(resolve_release(release))
        if fmt == ReportFormat.json:
            print_json(rep.to_dict())
        else:
            changed = not rep.ok and not dataclasses.replace(rep, stores_lacking=[]).ok  # not only a store lacking
            head = "[bold green]OK[/]" if rep.ok else "[bold red]CHANGED[/]" if changed else "[bold red]INCOMPLETE[/]"
            out.print(f"{head} {escape(rep.release)}: {rep.checked_files} files and {rep.checked_stores} "
                      f"stores checked; release.json sha256 {rep.release_json_sha256}"
                      + (f"; content sha256 {rep.content_sha256}" if rep.content_sha256 else ""), highlight=False)
            _list("added", rep.added, limit, "yellow")
            _list("removed", rep.removed, limit, "red")
            _list("modified", rep.modified, limit, "red")
            _list("stores whose content hash differs", rep.stores_modified, limit, "red")
            _list("damaged stores (a shard missing or truncated, a chunk failing its CRC32C)", rep.stores_damaged,
                  limit, "red")
            _list("cases without their store (preprocess failed on the workspace's store, not the input: run "
                  "`curator run` on the workspace and release a new version)", rep.stores_lacking, limit, "red")
            _list("dataset card issues", rep.card_issues, limit, "red")
            _list("row counts of release.json the tables do not hold", rep.counts_differ, limit, "red")
            _list("release.json disagrees with itself or the card", rep.manifest_issues, limit, "red")
            _list("splits disagree with the settings release.json records for them", rep.splits_issues, limit, "red")
            if rep.parent_changed:
                err.print(f"[red]lineage[/] {escape(rep.parent)}", highlight=False)
        if not rep.ok:
            raise typer.Exit(1)

    @app.command("diff")
    @handle_errors
    def diff(a: ReleaseArg,
             b: Annotated[Path | None, typer.Argument(help="newer release (default: compare A with its parent)")] = None,
             fmt: ReportOpt = ReportFormat.table,
             limit: Annotated[int, typer.Option(min=0, help="max rows listed per kind")] = 50,
             as_json: Annotated[bool, typer.Option("--json", help="the whole diff as JSON (as --format json)")] = False,
             exit_code: Annotated[bool, typer.Option(
                 "--exit-code", help="exit 1 when the releases differ in content (a table, file or store), "
                 "0 when they hold the same (their lineage may differ): a reproduction check")] = False) -> None:
        """What changed from release A to release B: cases, labels, QC, duplicates, splits, schema,
        files, lineage.

        Exit code 0 (with --exit-code: 0 when the releases hold the same tables, files and stores,
        1 when they differ), 2 on an error (a release missing or damaged).
        """
        from curator.config import SEMVER
        from curator.errors import ReleaseError
        from curator.release.diff import diff_releases
        from curator.release.query import Release

        if b is None:
            rb = Release(a)
            parent = rb.info.get("parent_version")
            if not (isinstance(parent, str) and SEMVER.match(parent)):  # a version beside it, never a path
                raise ReleaseError("release_error", f"{rb.path.name} has no parent version to compare with",
                                   remedy="give two releases: curator diff A B")
            a, b = rb.path.parent / parent, rb.path
        d = diff_releases(a, b)
        _warn_parent(Path(a), Path(b))
        if d.backwards:  # allowed (what an upgrade undid), but "added" then means removed since
            err.print(f"[yellow]warning[/] {escape(d.b)} is older than {escape(d.a)}: the changes read from the "
                      "newer release back to the older one (give the older release first: curator diff OLD NEW)",
                      highlight=False)
        if fmt == ReportFormat.json or as_json:
            print_json(d.to_dict())
        else:
            _print_diff(d, limit)
        if exit_code and d.content_differs:
            raise typer.Exit(1)

    @app.command("lineage")
    @handle_errors
    def lineage(release: ReleaseArg, fmt: FormatOpt = OutputFormat.table) -> None:
        """A release and its ancestors: version, date, cases, commit, schema and checksums.

        Per release: the curator commit and schema that made it, and the checksums of its
        registry, taxonomy and models."""
        from curator.config import SEMVER
        from curator.io.fsutil import sha256_json
        from curator.release.integrity import parent_check
        from curator.release.query import Release

        rows = []
        rel: Release | None = Release(release)
        seen: set[Path] = set()
        while rel is not None and rel.path not in seen:
            seen.add(rel.path)
            info = rel.info
            tax = (info.get("taxonomy") or {}).get("sha256", "")
            models = info.get("models") or {}  # a count alone read "3 = 3" when every fingerprint changed
            code = str(info.get("code_revision") or "unrecorded")
            rows.append((info.get("version"), info.get("created"), info.get("counts", {}).get("cases"),
                         info.get("parent_version") or "", code[:12] + code[40:], info.get("schema_version") or "",
                         info.get("pipeline_config_hash"), tax[:12],
                         f"{len(models)} ({sha256_json(models)[:8]})" if models else "0",
                         len(info.get("registry") or {})))
            said, changed = parent_check(rel.path, info)
            if changed:
                err.print(f"[yellow]warning[/] {escape(rel.path.name)}: {escape(said)}", highlight=False)
            parent = info.get("parent_version")  # a version beside it: never a path of the received release.json's choosing
            parent = parent if isinstance(parent, str) and SEMVER.match(parent) else None
            rel = Release(rel.path.parent / parent) if parent and (rel.path.parent / parent).is_dir() else None
        emit(["version", "created", "cases", "parent", "code", "schema", "config hash", "taxonomy", "models",
              "sources"], rows, fmt)

    @app.command("cite")
    @handle_errors
    def cite(release: ReleaseArg,
             where: Annotated[str, typer.Option("--where", help="SQL condition over cases (c) and splits (s), "
                                                "e.g. \"c.modality = 'CT' and s.split = 'train'\"")] = "true",
             out_dir: Annotated[Path | None, typer.Option(
                 "--out", "-o", help="write CITATIONS.bib and LICENCES.md into this folder (default: print "
                 "CITATIONS.bib)")] = None) -> None:
        """What to cite and which licences bind for the cases --where selects (a cohort): the BibTeX
        entries of exactly their datasets (CITATIONS.bib) and what their licences allow together
        (LICENCES.md), as the nnU-Net and MONAI exports write them."""
        from curator.io.fsutil import check_output_dir
        from curator.release.query import Release, check_outside_releases

        if out_dir is not None:
            check_output_dir(out_dir)
            check_outside_releases(out_dir, "CITATIONS.bib and LICENCES.md")
        rel = Release(release)
        note_newest(release, rel.path)
        cited = rel.citations(where)
        said = (f"{cited.n_cases} case(s) of {len(cited.sources)} dataset(s): "
                + ", ".join(f"{s['dataset']} ({s['cases']}, {s['licence']})" for s in cited.sources)
                + "; commercial use: " + cited.licences.summary()["commercial_use"])
        if out_dir is None:
            sys.stdout.write(cited.bib)  # as CITATIONS.bib holds it: `curator cite ... > refs.bib`
            err.print(escape(f"({said}; -o DIR writes LICENCES.md too)"), highlight=False)
        else:
            paths = cited.write(out_dir)
            err.print(escape(f"wrote {' and '.join(str(p) for p in paths)}: {said}"), highlight=False)
        for line in cited.licences.incompatible:
            err.print(f"[yellow]warning[/] {escape(line)}", highlight=False)


def _print_diff(d: ReleaseDiff, limit: int) -> None:
    """``curator diff``'s text report of ``d``."""
    from curator.release.diff_rows import EXAMPLES
    from curator.release.diff_sources import SOURCE_FIELDS, source_lines
    from curator.release.store_diff import summary

    out.print(f"[bold]{escape(d.a)} → {escape(d.b)}[/]", highlight=False)
    if d.lineage_note:
        out.print(f"  [yellow]note[/] {escape(d.lineage_note)}", highlight=False)
    rows = [(n, len(t.added), len(t.removed), len(t.changed), len(t.wording_only)) for n, t in sorted(d.tables.items())]
    worded = any(r[-1] for r in rows)  # a column of its own only when some table has such rows
    emit(["table", "added", "removed", "changed", *(["wording only"] if worded else [])],
         [r if worded else r[:-1] for r in rows], OutputFormat.table)
    _list("sources whose licence, terms, citation or version changed, added or removed", source_lines(d.sources),
          limit, "red" if any(c["licence_changed"] for c in d.sources) else "yellow")
    _list("cases added", d.cases_added, limit, "green")
    _list("cases removed", d.cases_removed, limit, "red")
    if "cases" in d.tables:
        _list("cases changed (case, columns)",
              [f"{k[0]}: {', '.join(c)}" for k, c in d.tables["cases"].changed], limit, "yellow")
    if "labels" in d.tables:
        lt = d.tables["labels"]
        _list("labels added", lt.added, limit, "green")
        _list("labels removed", lt.removed, limit, "red")
        _list("labels changed", [f"{' '.join(map(str, k))}: {', '.join(c)}" for k, c in lt.changed],
              limit, "yellow")
    if "terms" in d.tables:  # the taxonomy: a lab's new term, a synonym, a parent changed
        tt = d.tables["terms"]
        _list("terms added", [k[0] for k in tt.added], limit, "green")
        _list("terms removed", [k[0] for k in tt.removed], limit, "red")
        _list("terms changed (term: columns)", [f"{k[0]}: {', '.join(c)}" for k, c in tt.changed], limit, "yellow")
    for name, t in sorted(d.tables.items()):  # a taxonomy file passed by path: every term's defined_in
        if t.provenance_only:
            cols = ", ".join(sorted({c for _, cs in t.provenance_only for c in cs}))
            _list(f"{name} rows whose only change is where they come from ({cols}; not in 'changed')",
                  [f"{c}: {va} → {vb} ({n} rows)" for c, va, vb, n in t.provenance_values], limit, "yellow",
                  count=len(t.provenance_only))
    for name, t in sorted(d.tables.items()):  # what each changed column was and is, a few rows each
        own = set(SOURCE_FIELDS) if name == "sources" else set()  # in the sources' own section above
        _list(f"{name} values changed (column: rows; up to {EXAMPLES} examples, key: A → B)",
              _value_lines([v for v in t.changed_values if v[0] not in own]), limit, "yellow", count=len(t.changed))
        _list(f"{name} rows whose only change is the wording of their reason (the same decision; not in "
              "'changed')", _value_lines(t.wording_values), limit, "yellow", count=len(t.wording_only))
    _list("labels whose origin changed (case, term: origin A → B, volume A → B)",
          [f"{c} {t}: {oa} → {ob}, {_ml(ma)} → {_ml(mb)} ml" for c, t, oa, ob, _, _, ma, mb in d.origin_changes],
          limit, "yellow")
    said = {c: f"{c}: {summary(ch)}" for c, ch in d.store_changes.items()}
    _list("cases whose store's voxels, terms or grid changed", [said[c] for c in d.stores_changed], limit,
          "yellow")
    _list("cases whose stores differ only in their OME-Zarr attributes (same voxels, grid and terms)",
          d.stores_ome_changed, limit, "yellow")
    _list("cases whose stores differ only in other attributes or encoding (same voxels, grid and terms)",
          [said[c] for c in d.stores_metadata_changed], limit, "yellow")
    _list("labels newly excluded by QC (case term layer — why)", d.qc_lines(d.qc_newly_excluded), limit, "red")
    _list("labels no longer excluded by QC (case term layer — why)", d.qc_lines(d.qc_newly_included), limit,
          "green")
    _list("cases newly marked duplicate", d.newly_duplicate, limit, "red")
    _list("cases no longer marked duplicate", d.no_longer_duplicate, limit, "green")
    _list("duplicate groups with a new id, their kept case the same (kept: id A → id B, members joined/left)",
          [f"{k}: {ga} → {gb}" + (f", joined {', '.join(j)}" if j else "") + (f", left {', '.join(lf)}" if lf else "")
           for k, ga, gb, j, lf in d.groups_regrouped], limit, "yellow")
    _list("cases whose split changed (case, A, B)", d.split_changes, limit, "red")
    _list("problems added (severity kind case — message)", d.problem_lines(d.problems_added), limit, "red")
    _list("problems no longer reported", d.problem_lines(d.problems_removed), limit, "green")
    _list("tables added", d.tables_added, limit, "green")
    _list("tables removed", d.tables_removed, limit, "red")
    _list("schema changes", [f"{t}: {json.dumps(c)}" for t, c in sorted(d.schema.items())], limit, "yellow")
    _list("files added", d.files_added, limit, "green")
    _list("files removed", d.files_removed, limit, "red")
    _list("files whose checksum differs (other than the tables above)", d.other_files_changed, limit, "yellow")
    _list("lineage changes", d.lineage_changes, limit, "yellow")
    if not d.content_differs:
        from curator.release.integrity import CONTENT_EXCLUDED

        aside = [f for f in d.files_changed if f in CONTENT_EXCLUDED]
        out.print("  the same content: every table, file and store is identical"
                  + (f" ({', '.join(aside)} aside: derived, not content — croissant.json's datePublished is the "
                     "build's day, changes.json compares a release with its parent)" if aside else ""),
                  highlight=False)
    elif d.empty:
        out.print("  no differences in the tables", highlight=False)


def _value_lines(values: list[tuple[str, int, list[tuple[tuple[Any, ...], Any, Any]]]]) -> list[str]:
    """A table's changed values (``TableDiff.changed_values``) as lines: ``qc_decision: 2 rows``,
    then ``  case term origin: include → exclude`` for each example."""
    from curator.release.diff_lineage import pair

    lines = []
    for c, n, examples in values:
        lines.append(f"{c}: {n} row{'s' if n != 1 else ''}")
        lines += ["  {}: {} → {}".format(" ".join(map(str, k)), *pair(va, vb)) for k, va, vb in examples]
    return lines


def _warn_parent(a: Path, b: Path) -> None:
    """Warn when ``a`` is ``b``'s parent and has changed since ``b`` recorded its checksum."""
    from curator.release.integrity import parent_check, read_release_json
    from curator.release.query import resolve_release

    a, b = resolve_release(a), resolve_release(b)
    info = read_release_json(b)
    if a.resolve() != (b.parent / str(info.get("parent_version"))).resolve():
        return
    said, changed = parent_check(b, info)
    if changed:
        err.print(f"[yellow]warning[/] {escape(said)}", highlight=False)
