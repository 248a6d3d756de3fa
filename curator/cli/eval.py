"""``curator eval``: DSC/NSD between two label layers, and attention-map error detection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curator.cli.common import OutputFormat, emit, err, handle_errors

PipelineArg = Annotated[Path, typer.Argument(help="pipeline.yaml", exists=True, dir_okay=False)]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("eval")
    @handle_errors
    def eval_(pipeline: PipelineArg,
              pred: Annotated[str, typer.Option(help="label layer to evaluate")] = "pseudo",
              ref: Annotated[str, typer.Option(help="reference label layer (pseudo labels exist only for terms "
                                                   "a dataset leaves out: compare them with `revised`, after "
                                                   "`curator review import`)")] = "revised",
              tolerance_mm: Annotated[float, typer.Option("--tolerance-mm", help="NSD tolerance in mm")] = 2.0,
              surface: Annotated[str, typer.Option(
                  help="how surfaces are measured for NSD and HD95: 'surfels' (surface elements weighted by "
                       "area: Nikolov et al., DeepMind's surface-distance, MONAI use_subvoxels=True) or "
                       "'voxels' (boundary voxels counted: MONAI's default)")] = "surfels",
              attention: Annotated[bool, typer.Option("--attention", help="also score the attention map's "
                                                      "error detection (volume level)")] = False,
              min_ml: Annotated[float, typer.Option(help="smallest error region counted, ml")] = 0.5,
              term: Annotated[list[str] | None, typer.Option("--term", help="only these term ids")] = None,
              fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table) -> None:
        """Per (case, term) in both layers: DSC, NSD, HD95; with --attention, errors found by attention."""
        from curator.config import PipelineConfig
        from curator.errors import ConfigError
        from curator.pseudolabel.evaluate import SURFACES, evaluate_layers, summarise_detection

        if surface not in SURFACES:
            raise ConfigError("config_error", f"--surface {surface!r} is not a surface measure",
                              remedy=f"give one of {', '.join(SURFACES)}")
        ws = PipelineConfig.load(pipeline).workspace
        rows = evaluate_layers(Path(ws), pred, ref, tolerance_mm=tolerance_mm, attention=attention,
                               min_ml=min_ml, terms=term or (), surface=surface)
        cols = ["case_id", "term_id", "dice", "nsd", "hd95_mm"] + (["errors", "detected", "alarms", "true_alarms"]
                                                                    if attention else [])
        emit(cols, [[r[c] for c in cols] for r in rows], fmt,
             title=f"{pred} vs {ref} (NSD at {tolerance_mm:g} mm; surfaces as {surface})")
        if attention and rows:
            d = summarise_detection(rows)
            err.print(f"errors {d.errors}, detected {d.detected} (sensitivity {d.sensitivity}); attention regions "
                      f"{d.alarms}, on errors {d.true_alarms} (precision {d.precision})", highlight=False)
