"""``curator export nnunet``, ``monai`` and ``huggingface``: a release in other tools' formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.markup import escape

from curator.cli.common import STAGED, err, handle_errors, out
from curator.cli.map_back import register_map_back

ReleaseArg = Annotated[Path, typer.Argument(help="release folder (or collection folder)")]
TermsOpt = Annotated[str, typer.Option("--terms", help="comma-separated term ids, label 1, 2, ... in the order "
                                        "given, except that a term containing another requested term comes "
                                        "before it (kidney_and_mass,kidney_tumor whatever their order: the inner "
                                        "one is painted over its container); the written labels map says which")]
WhereOpt = Annotated[str, typer.Option("--where", help="SQL WHERE over preprocessed (p), cases (c) and splits (s); "
                                       "case_id, dataset, modality unqualified")]
DupsOpt = Annotated[bool, typer.Option("--with-duplicates", help="also export duplicates the keep policy dropped")]
QcOpt = Annotated[bool, typer.Option("--qc-filter/--no-qc-filter", help="leave out labels QC excluded (default; "
                                      "in train and val cases: see --qc-filter-test)")]
QcTestOpt = Annotated[bool, typer.Option("--qc-filter-test", help="leave out the labels QC excluded in the test "
                                         "split's cases too (by default they are exported, listed under "
                                         "test_qc_flagged: filtering would shrink the test set towards easy cases)")]
PartialOpt = Annotated[bool, typer.Option("--partial", help="keep cases whose dataset does not annotate some of "
                                          "the terms (nnU-Net: as its ignore label, see --missing; MONAI: as "
                                          "background, the datalist's present key lists the annotated terms)")]
MissingOpt = Annotated[str | None, typer.Option(
    "--missing", help="with --partial, where a case's unannotated term could be: ignore (nnU-Net's ignore label, "
                      "left out of the loss; the default) or background (learnt as absent)")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="cases written at once (processes); the "
                                         "export is the same whatever the number")]
ChannelsOpt = Annotated[str | None, typer.Option(
    "--channels", help="comma-separated sequences (cases.sequence) exported as the channels of one case per "
                       "study (cases sharing a study_key), the first giving the grid and the label; a study "
                       "lacking one is skipped")]
LayersOpt = Annotated[str, typer.Option("--layers", help="label layers by priority, per term: the first that "
                                        "holds a term gives its label (add pseudo to export pseudo labels)")]
GridOpt = Annotated[str, typer.Option("--grid", help="preprocessed: each case's store grid (RAS, resampled, cropped); "
                                      "source: the source scan's grid, the image as shipped and the label from the "
                                      "dataset's label files (needs --pipeline and --layers original)")]
PipelineOpt = Annotated[Path | None, typer.Option("--pipeline", help="with --grid source: the pipeline.yaml the "
                                                  "release was built with (its sources' roots)")]


def _summary(report: object, listed: str) -> None:
    """Print what the export did; ``listed``: the file whose ``skipped`` says why each was skipped."""
    from curator.export.common import ExportReport

    r = cast(ExportReport, report)
    out.print(f"exported {len(r.cases)} cases to {escape(str(r.folder))}; skipped {len(r.skipped)}"
              + (f" ({listed}'s skipped says why)" if r.skipped else "")
              + (f"; {len(r.overlaps)} cases had overlapping terms (later term kept)" if r.overlaps else "")
              + (f"; {len(r.images_only)} test images without labels (for inference)" if r.images_only else ""))
    for note in r.notes:
        kind, said = ("warning", note.removeprefix("warning: ")) if note.startswith("warning: ") else ("note", note)
        err.print(f"[yellow]{kind}[/] {escape(said)}", highlight=False)


def _layers(text: str) -> tuple[str, ...]:
    from curator.errors import ConfigError
    from curator.store import LAYERS

    layers = tuple(x.strip() for x in text.split(",") if x.strip())
    if not layers or any(x not in LAYERS for x in layers):
        raise ConfigError("config_error", f"--layers {text!r}: give some of {', '.join(LAYERS)}, comma-separated")
    return layers


def _qc_options(qc_filter: bool, qc_filter_test: bool) -> None:
    from curator.errors import ConfigError

    if qc_filter_test and not qc_filter:
        raise ConfigError("config_error", "--qc-filter-test applies QC's filter to the test split, --no-qc-filter "
                          "turns the filter off", remedy="give one of them")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    export = typer.Typer(help="Export a release to nnU-Net v2, MONAI or a Hugging Face dataset repository; "
                         "map predictions on an export back to the source scans' grids.",
                         no_args_is_help=True)
    app.add_typer(export, name="export")
    register_map_back(export)

    @export.command("nnunet")
    @handle_errors(stopped=STAGED)
    def nnunet(release: ReleaseArg, terms: TermsOpt,
               out_root: Annotated[Path, typer.Option("--out", "-o", help="nnUNet_raw folder")],
               dataset_id: Annotated[int, typer.Option("--id", help="nnU-Net dataset id (1-999)")] = 501,
               name: Annotated[str, typer.Option("--name", help="dataset name")] = "Curator",
               where: WhereOpt = "true",
               partial: PartialOpt = False, missing: MissingOpt = None, layers: LayersOpt = "original,revised",
               with_duplicates: DupsOpt = False, qc_filter: QcOpt = True, workers: WorkersOpt = 1,
               channels: ChannelsOpt = None,
               regions: Annotated[bool, typer.Option(
                   "--regions", help="terms one of which is part of another (BraTS' brain_tumor,brain_tumor_core,"
                                     "enhancing_brain_tumor) as nnU-Net regions (region-based training); without "
                                     "it each term is one label, an inner term painted over its container")] = False,
               grid: GridOpt = "preprocessed", pipeline: PipelineOpt = None, qc_filter_test: QcTestOpt = False,
               test_only: Annotated[bool, typer.Option(
                   "--test-only", help="export the selected cases of the release's test split alone (imagesTs, "
                                       "labelsTs, dataset.json with numTraining 0): to evaluate a model trained "
                                       "before, with the --terms it was trained on")] = False,
               ) -> None:
        """Write an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)."""
        from curator.errors import ConfigError
        from curator.export import export_nnunet
        from curator.export.nnunet import MISSING

        if missing is not None and missing not in MISSING:
            raise ConfigError("config_error", f"--missing {missing!r}: give one of {', '.join(MISSING)}")
        if missing is not None and not partial:
            raise ConfigError("config_error", "--missing says how --partial writes a case's unannotated terms",
                              remedy="add --partial, or leave out --missing (cases lacking a term are skipped)")
        _qc_options(qc_filter, qc_filter_test)

        _summary(export_nnunet(release, out_root, dataset_id=dataset_id, name=name,
                               terms=[t.strip() for t in terms.split(",") if t.strip()], where=where,
                               partial=partial, layers=_layers(layers), duplicates=with_duplicates,
                               qc_filter=qc_filter, missing=missing or "ignore", workers=workers,
                               channels=_names(channels), regions=regions, grid=grid, pipeline=pipeline,
                               qc_filter_test=qc_filter_test, test_only=test_only),
                 "curator_export.json")

    @export.command("monai")
    @handle_errors(stopped=STAGED)
    def monai(release: ReleaseArg, terms: TermsOpt,
              out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
              where: WhereOpt = "true", layers: LayersOpt = "original,revised", partial: PartialOpt = False,
              with_duplicates: DupsOpt = False, qc_filter: QcOpt = True, workers: WorkersOpt = 1,
              channels: ChannelsOpt = None, grid: GridOpt = "preprocessed", pipeline: PipelineOpt = None,
              qc_filter_test: QcTestOpt = False) -> None:
        """Write NIfTI images/labels and a Decathlon-style datalist.json for MONAI."""
        from curator.export import export_monai

        _qc_options(qc_filter, qc_filter_test)

        _summary(export_monai(release, out_dir, terms=[t.strip() for t in terms.split(",") if t.strip()],
                              where=where, layers=_layers(layers), partial=partial,
                              duplicates=with_duplicates, qc_filter=qc_filter, workers=workers,
                              channels=_names(channels), grid=grid, pipeline=pipeline,
                              qc_filter_test=qc_filter_test), "datalist.json")

    @export.command("huggingface")
    @handle_errors(stopped=STAGED)
    def huggingface(release: ReleaseArg,
                    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to upload (a new one)")],
                    link: Annotated[bool, typer.Option("--link", help="hard-link the release's files instead of "
                                                       "copying them (same file system; do not edit them then)")]
                    = False) -> None:
        """The release as a Hugging Face dataset repository: its files and a README.md whose front
        matter makes each table a config (`datasets.load_dataset(folder, "labels")`)."""
        from curator.release.hub import export_huggingface

        r = export_huggingface(release, out_dir, link=link)
        how = f"{r.linked} hard-linked, {r.files - r.linked} copied" if link else "copied"
        out.print(f"wrote {escape(str(r.folder))}: {r.files} files of the release ({r.bytes / 1e6:.1f} MB, {how}) "
                  f"and README.md with {len(r.tables)} configs ({', '.join(r.tables)})")
        out.print(f"upload: hf upload <org>/<name> {escape(str(r.folder))} . --repo-type dataset")
