"""``curator labels resolve|show|check|tree`` and ``curator card --registry``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperCommand

from curator.cli.common import OutputFormat, RegistryOpt, emit, err, handle_errors, out, print_json

if TYPE_CHECKING:
    from curator.taxonomy.model import Taxonomy, Term

FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json")]
TaxonomyOpt = Annotated[Path | None, typer.Option(
    "--taxonomy", help="a taxonomy file of your own (as `stages.harmonize.taxonomy`; default: the bundled one)")]


class RegistryCardCommand(TyperCommand):
    """``curator card``: ``--registry`` takes dataset YAML paths as in every other command, and
    alone (last, or before another option) means the built-in registry's card, as it always did:
    ``curator card --registry --out DATASET_CARD.md``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors its own click
        alone = [i for i, a in enumerate(args) if a == "--registry" and (i + 1 == len(args) or args[i + 1].startswith("-"))]
        args = ["--registry=" if i in alone else a for i, a in enumerate(args)]
        return super().parse_args(ctx, args)


def find_term(tax: Taxonomy, term: str) -> Term:
    """The term a CLI argument names (an id, or any name ``resolve`` takes); a ConfigError naming
    close terms when none."""
    from curator.errors import ConfigError

    t = tax.get(term) or tax.resolve(term)
    if t is None:
        near = [s.name for s in tax.suggest(term)]
        raise ConfigError("config_error", f"no term named {term!r}",
                          remedy=f"try one of: {', '.join(near)}" if near else "search the names with `curator labels "
                          "resolve NAME`, or list the hierarchy with `curator labels tree`")
    return t


def _cell(v: Any, fmt: OutputFormat) -> Any:
    """A term detail as one cell: in a table, lists comma-separated and partitions (lists of
    lists) by ' | '; in CSV, as it is (``emit`` writes a list as its JSON text)."""
    if not isinstance(v, list) or fmt == OutputFormat.csv:
        return v
    return " | ".join(", ".join(p) for p in v) if v and isinstance(v[0], list) else ", ".join(map(str, v))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    labels = typer.Typer(help="The label taxonomy and the datasets' label maps.", no_args_is_help=True)
    app.add_typer(labels, name="labels")

    @labels.command("resolve")
    @handle_errors
    def resolve(names: Annotated[list[str], typer.Argument(help="label names, e.g. 'rt kidney' 'L3' '(ct) liver'")],
                fmt: FormatOpt = OutputFormat.table, taxonomy: TaxonomyOpt = None) -> None:
        """Map free-text label names to taxonomy terms (null when unknown or ambiguous; exit 1
        when a name is unresolved)."""
        from curator.taxonomy import load_taxonomy

        tax = load_taxonomy(taxonomy)
        rows = []
        for n in names:
            t = tax.resolve(n)
            rows.append((n, t.id if t else None, t.name if t else None))
        emit(["query", "term_id", "term"], rows, fmt, title="resolved labels")
        unresolved = [n for n, tid, _ in rows if tid is None]
        if fmt == OutputFormat.table:
            for n in unresolved:
                close = ", ".join(t.name for t in tax.suggest(n))
                err.print(f"[yellow]unresolved[/] {escape(repr(n))}" + (f"; close: {escape(close)}" if close else ""),
                          highlight=False)
        if unresolved:  # a script resolving names must not take a null for an answer
            raise typer.Exit(1)

    @labels.command("show")
    @handle_errors
    def show(term: Annotated[str, typer.Argument(help="a term id or any name `labels resolve` takes, e.g. kidney_left, 'rt kidney', L3")],
             fmt: FormatOpt = OutputFormat.table, taxonomy: TaxonomyOpt = None) -> None:
        """One term's details: id, name, synonyms, abbreviations, side (laterality), category,
        region, parents (part_of, is_a) and all ancestors, the terms below it (children, subtypes),
        partitions, codes and note — the release's `terms` row, before any run (json: one object)."""
        from curator.taxonomy import load_taxonomy
        from curator.taxonomy.release import term_details

        tax = load_taxonomy(taxonomy)
        t = find_term(tax, term)
        details = term_details(tax, t.id)
        if fmt == OutputFormat.json:
            print_json(details)
            return
        said = "" if term == t.id else f" ({term!r} resolves to it)"
        emit(["field", "value"], [(k, _cell(v, fmt)) for k, v in details.items()], fmt, title=f"{t.id}{said}")

    @labels.command("check")
    @handle_errors
    def check(registry: RegistryOpt = None, fmt: FormatOpt = OutputFormat.table, taxonomy: TaxonomyOpt = None,
              strict: Annotated[bool, typer.Option("--strict", help="fail on warnings too (with --registry: the given files' warnings, not the built-in datasets')")] = False) -> None:
        """Validate the taxonomy and every dataset's label map, licence and citation (exit 1 on errors)."""
        from curator.registry.check import check_label_system

        problems = check_label_system(tuple(registry or ()), taxonomy)
        errors = [p for p in problems if p.severity == "error"]
        warnings = [p for p in problems if p.severity == "warning"]
        # with --registry, the built-in datasets' warnings are shown but are not the user's to fix:
        # --strict fails on the given files' warnings only (never on an info note)
        failing = [p for p in warnings if strict and not (registry and p.builtin)]
        if fmt == OutputFormat.json:
            print_json([p.to_dict() for p in problems])
        elif problems:
            emit(["where", "kind", "severity", "message"], [(p.where, p.kind, p.severity, p.message) for p in problems],
                 fmt, title=f"{len(problems)} problem(s)")
        if fmt != OutputFormat.json:
            shipped = sum(1 for p in warnings if p.builtin) if registry else 0
            notes = len(problems) - len(errors) - len(warnings)
            err.print(f"[{'red' if errors or failing else 'green'}]{len(errors)} error(s)[/], {len(warnings)} warning(s)"
                      + (f" ({shipped} in curator's built-in datasets)" if shipped else "")
                      + (f", {notes} note(s)" if notes else "")
                      + (f"; --strict fails on {len(failing)} of the warnings" if failing else ""), highlight=False)
        if errors or failing:
            raise typer.Exit(1)

    @labels.command("tree")
    @handle_errors
    def tree(term: Annotated[str | None, typer.Argument(help="root term (name or id); default: every top-level term")] = None,
             relation: Annotated[str, typer.Option(help="part_of or is_a")] = "part_of",
             depth: Annotated[int | None, typer.Option(min=1, help="levels shown, the root's included: 1 is the root "
                                                       "alone, 2 adds the terms right below it (default: all)")] = None,
             taxonomy: TaxonomyOpt = None) -> None:
        """Print the term hierarchy below a term (or the whole taxonomy)."""
        from curator.errors import ConfigError
        from curator.taxonomy import load_taxonomy

        tax = load_taxonomy(taxonomy)
        if relation not in ("part_of", "is_a"):
            raise ConfigError("config_error", f"--relation must be part_of or is_a, not {relation!r}")
        if term:
            roots = [find_term(tax, term).id]
        else:
            roots = sorted((t.id for t in tax if not getattr(t, relation) and tax.children(t.id, relation)),
                           key=lambda i: tax.term(i).name)

        def show(tid: str, level: int) -> None:
            t = tax.term(tid)
            extra = " (derived from: " + " | ".join(", ".join(p) for p in t.partitions) + ")" if t.partitions else ""
            out.print(f"{'  ' * level}{escape(t.name)} [dim]{escape(t.id + extra)}[/]", highlight=False)
            if depth is None or level + 1 < depth:
                for c in sorted(tax.children(tid, relation), key=lambda i: tax.term(i).name):
                    show(c, level + 1)

        for r in roots:
            show(r, 0)

    @app.command("card", cls=RegistryCardCommand)
    @handle_errors
    def card(registry: Annotated[list[str] | None, typer.Option(
                 "--registry", metavar="[<path>]", help="the card of the dataset registry; with a path (repeatable), with "
                 "these dataset YAML files or folders added, as `--registry` of `labels check`")] = None,
             out_path: Annotated[Path | None, typer.Option("--out", "-o", help="write here (default: print)")] = None,
             extra: Annotated[list[Path] | None, typer.Option(
                 "--extra", hidden=True, help="the same as `--registry PATH` (its earlier spelling)")] = None) -> None:
        """Render DATASET_CARD.md from the registry (all datasets, licences and what they allow):
        `curator card --registry --out DATASET_CARD.md`."""
        from curator.errors import ConfigError
        from curator.io.fsutil import atomic_path, check_output_file
        from curator.registry import load_registry
        from curator.registry.card import render_card
        from curator.taxonomy import load_taxonomy

        if registry is None and not extra:
            raise ConfigError("config_error", "say which card: `curator card --registry` (add `--registry PATH` "
                              "for dataset YAMLs of your own)", remedy="release cards are written by `curator release`")
        files = [Path(p) for p in registry or () if p] + list(extra or ())
        if out_path is not None:
            check_output_file(out_path, "DATASET_CARD.md")
        text = render_card(load_registry(extra=tuple(files)), load_taxonomy())
        if out_path is None:
            sys.stdout.write(text)
            return
        with atomic_path(out_path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        err.print(f"[green]wrote[/] {escape(str(out_path))}", highlight=False)
