"""``curator export map-back``: predictions on an export's grid, onto each case's source grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curator.cli.common import STAGED, err, handle_errors, out


def register_map_back(export: typer.Typer) -> None:
    """Add ``map-back`` to the ``curator export`` group."""

    @export.command("map-back")
    @handle_errors(stopped=STAGED)
    def map_back(export_dir: Annotated[Path, typer.Argument(
                     help="the export the predictions are of: the nnU-Net dataset folder (DatasetXXX_Name) or the "
                          "MONAI export folder")],
                 predictions: Annotated[Path, typer.Argument(
                     help="folder of predictions named after the exported cases (searched recursively)")],
                 out_dir: Annotated[Path, typer.Option(
                     "--out", "-o", help="folder to write the mapped predictions and map_back.json into")],
                 suffix: Annotated[str, typer.Option(
                     "--suffix", help="text between a case's name and the file ending in the predictions' names "
                                      "(MONAI SaveImaged: _seg, or _trans by default)")] = "",
                 ) -> None:
        """Put label predictions made on an export's grid (each case's store grid: RAS, resampled, cropped)
        onto each case's source grid — the shape and affine of the dataset's own image — by nearest
        neighbour through physical space, to score them against the dataset's label files. Values stay the
        export's labels; map_back.json names each case's source files."""
        from curator.export.map_back import INDEX
        from curator.export.map_back import map_back as run

        r = run(export_dir, predictions, out_dir, suffix=suffix)
        out.print(f"mapped {len(r.mapped)} predictions onto their source grids in {escape(str(r.folder))} "
                  f"({INDEX} names each case's source files)"
                  + (f"; {len(r.without_prediction)} exported cases had no prediction" if r.without_prediction else ""))
        if r.coarser:
            err.print(f"[yellow]note[/] {len(r.coarser)} of them were exported on a grid coarser than their source "
                      "along some axis (resampled down): there a prediction keeps the export's resolution "
                      f"({INDEX}'s coarser_axes names the axes); a finer target spacing in the release avoids it",
                      highlight=False)
        if r.passed_over:
            err.print(f"[yellow]note[/] {len(r.passed_over)} files that are no NIfTI, NRRD or MetaImage volume were "
                      f"passed over (e.g. {escape(r.passed_over[0])})", highlight=False)
