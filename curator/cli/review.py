"""``curator review export|import|revert``: the human review loop of pseudo labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curator.cli.common import err, handle_errors

PipelineArg = Annotated[Path, typer.Argument(help="pipeline.yaml", exists=True, dir_okay=False)]
ReviewerOpt = Annotated[str | None, typer.Option(
    "--reviewer", help="who reviewed (a name or an id), recorded with each label (labels.reviewed_by) and in the "
    "workspace's review log")]


def _next_step(pipeline: Path) -> str:
    """What to run after the review changed labels: QC judges them, then a release."""
    from curator.config import PipelineConfig

    rc = PipelineConfig.load(pipeline).release
    exists = (Path(rc.root) / rc.collection / rc.version).exists()
    return (f"next: `curator run {escape(str(pipeline))}` (QC judges the reviewed labels, then the release is written)"
            + (f"; release {escape(rc.collection)} {escape(rc.version)} exists: give pipeline.yaml a new "
               "`release.version` first" if exists else ""))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    review = typer.Typer(help="Review pseudo labels: export the cases with most attention, import revisions, "
                         "revert an import.",
                         no_args_is_help=True)
    app.add_typer(review, name="review")

    @review.command("export")
    @handle_errors
    def export(pipeline: PipelineArg,
               out: Annotated[Path, typer.Option("--out", "-o", help="folder for the worklist and previews")],
               fraction: Annotated[float | None, typer.Option(help="top share of cases (default: the stage's "
                                                                   "review_fraction, 5%)")] = None,
               top: Annotated[int | None, typer.Option(help="the top N cases not reviewed yet instead (with "
                                                           "--include-reviewed: the top N)")] = None,
               images: Annotated[bool, typer.Option("--images/--no-images", help="also write image.nii.gz")] = True,
               include_reviewed: Annotated[bool, typer.Option(
                   "--include-reviewed", help="also export cases whose revision was imported (their revision "
                   "as revised.nii.gz, to edit further)")] = False,
               case: Annotated[list[str] | None, typer.Option(
                   "--case", help="export this case whatever its attention rank (repeatable; instead of --top / "
                   "--fraction)")] = None,
               ) -> None:
        """Write previews (PNG), editable pseudo labels and worklist.csv for the top cases (or those
        of --case). Every case uses the same code for a structure: the export folder's
        labels_itksnap.txt / labels_slicer.txt fit every case."""
        from curator.config import PipelineConfig
        from curator.errors import StageError
        from curator.pseudolabel.review import export_review
        from curator.workspace import Workspace

        ws = Workspace(PipelineConfig.load(pipeline).workspace)
        table = ws.read_table("attention")
        if table is None:
            raise StageError("stage_error", "the workspace has no attention table",
                             remedy=f"run the pseudolabel stage first (`curator pseudolabel {pipeline}`)")
        res = export_review(ws.root, table.to_pylist(), out, fraction=fraction, top=top, images=images,
                            include_reviewed=include_reviewed, cases=case)
        err.print(f"[green]✓[/] {len(res.cases)} case(s), {res.previews} preview(s) → {escape(str(out / 'worklist.csv'))}",
                  highlight=False)
        if res.partial:
            err.print(f"  {len(res.partial)} case(s) reviewed in part are exported again for their structures not "
                      "reviewed yet (worklist.csv's to_review)", highlight=False)
        if res.duplicates:
            err.print(f"  {len(res.duplicates)} selected case(s) left out: duplicates dedup dropped (not released): "
                      + escape(", ".join(f"{c} (duplicate of {k})" for c, k in sorted(res.duplicates.items()))),
                      highlight=False)
        if res.reviewed:
            err.print(f"  {len(res.reviewed)} selected case(s) were reviewed already and left out "
                      "(--include-reviewed exports them again)", highlight=False)

    @review.command("import")
    @handle_errors
    def import_(pipeline: PipelineArg,
                folder: Annotated[Path, typer.Argument(help="the export folder holding <case>/revised.nii.gz",
                                                       exists=True, file_okay=False)],
                reviewer: ReviewerOpt = None) -> None:
        """Bring revised labels back as each case's `revised` layer (origin=revised), with the labels
        worklist.csv's accept column accepts as correct. Exit code 1 when a revision was refused."""
        from curator.config import PipelineConfig
        from curator.pseudolabel.review_checks import unrevised_cases
        from curator.pseudolabel.review_import import (
            Outcome,
            check_has_cases,
            import_review,
            record_import_problems,
        )
        from curator.workspace import Workspace

        ws = Workspace(PipelineConfig.load(pipeline).workspace)
        check_has_cases(ws)  # before the lock, which would create the workspace
        unchanged: dict[str, str] = {}
        outcome: dict[str, Outcome] = {}
        with ws.locked("review import"):
            done, problems = import_review(ws, folder, unchanged, outcome, reviewer=reviewer)
            record_import_problems(ws, done + sorted(unchanged), problems)  # an unchanged case's old refusal goes
        for p in problems:
            cid, kind, msg = p["case_id"] or "", p["kind"], p["message"]
            msg = msg[len(cid) + 2:] if cid and msg.startswith(f"{cid}: ") else msg  # the line names the case already
            err.print(f"[yellow]![/] {escape(f'{cid}: [{kind}] {msg}')}", highlight=False)
        for cid, why in sorted(unchanged.items()):
            err.print(f"[cyan]note[/] {escape(f'{cid}: {why}')}", highlight=False)
        for cid in done:  # which labels changed, per case: a wrong code or case shows here
            o = outcome[cid]
            said = [f"revised {', '.join(o.revised)}"] if o.revised else []
            said += [f"accepted {', '.join(o.accepted)}"] if o.accepted else []
            said += [f"kept as imported before {', '.join(o.kept)}"] if o.kept else []
            err.print(f"  {escape(cid)}: {escape('; '.join(said))}", highlight=False)
            if o.pseudo:
                err.print(f"[cyan]note[/] {escape(cid)}: {escape(', '.join(o.pseudo))} saved as the exported pseudo "
                          "label kept the revision imported before (an import never puts a pseudo label back; "
                          f"`curator review revert {pipeline} {cid} --term TERM` withdraws a revision)",
                          highlight=False)
        revised = sum(bool(outcome[c].revised) for c in done)
        summary = (f"{revised} case(s) revised, {len(done) - revised} accepted unchanged"
                   + (f", {len(unchanged)} with nothing to import" if unchanged else ""))
        refused = [p for p in problems if p["case_id"] not in done]  # the others: warnings of imported cases
        warned = len({p["case_id"] for p in problems if p["case_id"] in done})
        summary += f"; {warned} imported with a warning (above)" if warned else ""
        if refused and not done:  # nothing came in: not a success, whatever else was said
            err.print(f"[bold red]✗[/] nothing imported: {len(refused)} case(s) refused (above); {summary}",
                      highlight=False)
        else:
            err.print(f"[green]✓[/] {summary}" + (f"; {len(refused)} case(s) refused (above)" if refused else ""),
                      highlight=False)
        pending = unrevised_cases(folder, ws.stores_dir)
        if pending and (done or problems or unchanged):
            err.print(f"  {len(pending)} exported case(s) hold no revision yet", highlight=False)
        if not done and not problems and not unchanged:
            err.print(f"[yellow]note[/] no case folder of {escape(str(folder))} holds a revised.nii.gz yet, and "
                      "worklist.csv accepts no case: reviewers save each corrected label as <case>/revised.nii.gz, "
                      "and write `all` (or term ids) in worklist.csv's accept column for labels that are correct",
                      highlight=False)
        if done:
            who = "" if reviewer else " (no --reviewer given: labels.reviewed_by is empty)"
            err.print(f"  {_next_step(pipeline)}{who}", highlight=False)
        if refused:
            raise typer.Exit(1)

    @review.command("revert")
    @handle_errors
    def revert(pipeline: PipelineArg,
               case: Annotated[str, typer.Argument(help="the case id (as the review export's folder names it)")],
               term: Annotated[list[str] | None, typer.Option(
                   "--term", help="withdraw the reviewed label of this term only (repeatable); default: all")] = None,
               reviewer: ReviewerOpt = None) -> None:
        """Withdraw an imported revision (a wrong case's file, an edit not wanted): the case's reviewed
        labels — or those of --term — are removed from the workspace, its store and the labels table,
        so its pseudo labels stand again; the workspace's review log records it."""
        from curator.config import PipelineConfig
        from curator.pseudolabel.review_import import check_has_cases
        from curator.pseudolabel.review_revert import revert_case
        from curator.workspace import Workspace

        ws = Workspace(PipelineConfig.load(pipeline).workspace)
        check_has_cases(ws)  # before the lock, which would create the workspace
        with ws.locked("review revert"):
            gone, left = revert_case(ws, case, term or None, reviewer)
        err.print(f"[green]✓[/] {escape(case)}: withdrew the reviewed label(s) of {escape(', '.join(gone))}: their "
                  "pseudo labels stand again; " + (f"the case keeps its reviewed {escape(', '.join(left))}" if left
                                                   else "the case is unreviewed again (back on the worklist)"),
                  highlight=False)
        err.print(f"  {_next_step(pipeline)}", highlight=False)
