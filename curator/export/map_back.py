"""``curator export map-back``: predictions made on an export's grid, put on each case's source grid.

An export's files are on the cases' store grids (:mod:`curator.export.source_grid`), so a
model's predictions are too, and so are the exported reference labels. To score against the
dataset's own label files, :func:`map_back` takes a folder of predictions named as the export
names its cases (nnU-Net's ``nnUNetv2_predict`` writes ``<name>.nii.gz``; a MONAI ``SaveImaged``
writes ``<name>/<name>_<postfix>.nii.gz``: pass ``suffix="_<postfix>"``; the folder is searched
recursively), checks each against the export — a case it wrote, on that case's export grid, label
values its ``dataset.json`` / ``datalist.json`` declares — and writes ``<out>/<name>.nii.gz`` on
the case's source grid (the source image's shape and affine: nearest neighbour through physical
space, :func:`~curator.export.source_grid.to_source`) and ``<out>/map_back.json``, which names
each case's source files and grid, the export's label values, the cases that had no prediction
and those whose export grid is coarser than the source along some axis (there a prediction keeps
the export's resolution). The values are the export's labels, not the dataset's raw ones.
The output is staged and moved in at the end: a failed run leaves nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curator.errors import ConfigError, CuratorError, InputError
from curator.export.source_grid import GRIDS_KEY, coarser_axes, grids_of, to_source
from curator.io.formats import ITK_EXT, NIFTI_EXT, read_volume
from curator.io.fsutil import atomic_write_json, check_free, check_output_dir, staged_dir
from curator.io.nifti import write_nifti
from curator.io.volume import Volume
from curator.store import label_dtype

VOLUME_EXT = (*NIFTI_EXT, *ITK_EXT)  # files read as predictions; others (.json, .npz, .pkl) are passed over
INDEX = "map_back.json"
TOL_MM = 0.01  # how far a prediction's grid may lie from its export grid (headers round to float32)


@dataclass
class Export:
    """What map-back reads of an export: its index file, the grids, label values and skipped cases."""

    index: Path
    grids: dict[str, dict[str, Any]]
    labels: dict[str, Any]  # name -> value(s), as the export's dataset.json / datalist.json give them
    values: set[int]
    skipped: dict[str, str]


@dataclass
class MapBackReport:
    folder: Path
    mapped: list[str] = field(default_factory=list)
    without_prediction: list[str] = field(default_factory=list)  # exported cases no file was given for
    coarser: dict[str, list[int]] = field(default_factory=dict)  # name -> source axes the export grid is coarser along
    passed_over: list[str] = field(default_factory=list)  # files in the folder that are no volume


def read_export(folder: str | Path) -> Export:
    """The export in ``folder``: an nnU-Net dataset (``curator_export.json`` + ``dataset.json``) or
    a MONAI export (``datalist.json``), with the source grids this curator records."""
    folder = Path(folder)
    nnunet, monai = folder / "curator_export.json", folder / "datalist.json"
    if nnunet.is_file():
        info, index = _json(nnunet), nnunet
        ds = _json(folder / "dataset.json")
        labels = dict(ds.get("labels") or {})
        values = {int(v) for x in labels.values() for v in (x if isinstance(x, list) else [x])}
        values |= {int(v) for v in ds.get("regions_class_order") or ()}
    elif monai.is_file():
        info, index = _json(monai), monai
        labels = {str(t): int(v) for v, t in (info.get("labels") or {}).items()}
        values = set(labels.values())
    else:
        nested = sorted(p.name for p in folder.glob("Dataset*_*") if (p / "curator_export.json").is_file()) \
            if folder.is_dir() else []
        raise ConfigError("config_error", "no curator export here: neither curator_export.json (nnU-Net) nor "
                          "datalist.json (MONAI)", path=str(folder),
                          remedy=(f"give the dataset folder itself, e.g. {folder / nested[0]}" if nested else
                                  "give the folder `curator export nnunet` wrote (DatasetXXX_Name) or the --out "
                                  "folder of `curator export monai`"))
    grids = info.get(GRIDS_KEY)
    if not isinstance(grids, dict):
        raise ConfigError("config_error", f"{index.name} records no source grids (`{GRIDS_KEY}`): the export was "
                          "written by a curator before they were recorded", path=str(index),
                          remedy="export the release again with this curator, then map the predictions back")
    return Export(index, grids, labels, values | {0}, dict(info.get("skipped") or {}))


def _json(path: Path) -> dict[str, Any]:
    try:
        got = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError("config_error", "the export's file is missing", path=str(path),
                          remedy="give a whole export folder (export the release again)") from e
    except (OSError, ValueError) as e:
        raise ConfigError("config_error", f"cannot read the export's file ({e})", path=str(path),
                          remedy="export the release again") from e
    if not isinstance(got, dict):
        raise ConfigError("config_error", "the export's file holds no JSON object", path=str(path),
                          remedy="export the release again")
    return got


def find_predictions(folder: str | Path, export: Export, suffix: str = "") -> tuple[dict[str, Path], list[str]]:
    """The prediction file of each exported name found under ``folder`` (recursively): a file
    named ``<name><suffix>`` + a NIfTI, NRRD or MetaImage ending; and the files passed over (no
    such ending). A volume file named after no exported case, or a second file for one case, is
    an error naming it."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("config_error", "the predictions folder does not exist" if not root.exists() else
                          "this is a file, not a folder of predictions", path=str(root),
                          remedy="give the folder the predictions were written to (nnUNetv2_predict's -o)")
    found: dict[str, Path] = {}
    passed: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        ext = next((e for e in VOLUME_EXT if path.name.lower().endswith(e)), None)
        if ext is None:
            passed.append(path.relative_to(root).as_posix())
            continue
        stem = path.name[:-len(ext)]
        name = stem[:-len(suffix)] if suffix and stem.endswith(suffix) else stem if not suffix else None
        if name not in export.grids:
            raise ConfigError("config_error", _unknown(path.name, stem, name, export, suffix), path=str(path),
                              remedy=f"name each prediction after its exported case, as the export's images "
                              f"are (<name>{suffix}{ext}), and give only predictions of this export's cases")
        if name in found:
            raise ConfigError("config_error", f"two predictions for case {name}: {found[name].relative_to(root)} "
                              f"and {path.relative_to(root)}", path=str(path), remedy="keep one of them")
        found[name] = path
    if not found:
        raise ConfigError("config_error", f"no prediction file here (a NIfTI, NRRD or MetaImage named "
                          f"<case>{suffix} after one of the export's {len(export.grids)} cases)", path=str(root),
                          remedy="give the folder the predictions were written to" +
                          ("" if suffix else "; for MONAI's SaveImaged names (<case>_seg.nii.gz) pass --suffix _seg"))
    return found, passed


def _unknown(file: str, stem: str, name: str | None, export: Export, suffix: str) -> str:
    """Why ``file`` names no exported case."""
    if name is None:
        return f"{file} does not end with the suffix {suffix!r} before its file ending"
    if name in export.skipped:
        return f"{file} is a prediction for {name}, which the export left out ({export.skipped[name]})"
    close = next((n for n in export.grids if stem.startswith(n)), None)
    if close is not None:
        return (f"{file} names no case of the export, but starts with case {close}: pass --suffix "
                f"{stem[len(close):]!r} if that is how the predictions are named")
    some = ", ".join(list(export.grids)[:3])
    return f"{file} names no case of the export (its {len(export.grids)} cases are named like {some})"


def map_back(export: str | Path, predictions: str | Path, out: str | Path, *, suffix: str = "") -> MapBackReport:
    """Write each prediction under ``predictions`` onto its case's source grid in ``out`` (see the
    module); ``export``: the nnU-Net dataset folder or MONAI export folder the predictions are of."""
    exp = read_export(export)
    files, passed = find_predictions(predictions, exp, suffix)
    folder = check_output_dir(out)
    check_free(folder, [*(f"{n}.nii.gz" for n in files), INDEX])
    report = MapBackReport(folder, passed_over=passed)
    with staged_dir(folder) as staging:
        cases = {}
        for name in exp.grids:
            if name not in files:
                report.without_prediction.append(name)
                continue
            record = exp.grids[name]
            cases[name] = _map_one(files[name], name, record, exp, staging / f"{name}.nii.gz")
            report.mapped.append(name)
            if cases[name]["coarser_axes"]:
                report.coarser[name] = cases[name]["coarser_axes"]
        atomic_write_json(staging / INDEX, {
            "export": exp.index.parent.name, "labels": exp.labels, "grid": "source",
            "interpolation": "nearest neighbour through physical space (values copied, never blended)",
            "cases": cases, "without_prediction": report.without_prediction}, indent=1)
    return report


def _map_one(path: Path, name: str, record: Mapping[str, Any], exp: Export, dest: Path) -> dict[str, Any]:
    """Check one prediction against its case's export grid and values, write it on the source grid
    to ``dest``; its entry of map_back.json."""
    export_grid, source_grid = grids_of(record)
    try:
        vol = read_volume(path, role="label")
    except CuratorError as e:
        raise InputError(e.kind, f"prediction for {name}: {e.detail}", path=str(path),
                         remedy=e.remedy or "write the prediction again") from e
    try:
        vol = vol.on_grid(export_grid, tol_mm=TOL_MM)
    except CuratorError as e:
        raise ConfigError("config_error", f"the prediction for {name} is not on its export grid ({e.detail}; "
                         f"the export's {record['export_orientation']} grid of shape {tuple(record['export_shape'])})",
                         path=str(path), remedy="predict on the exported image of the case (its grid is the "
                         "prediction's), and keep the image's header") from e
    present = {int(v) for v in np.unique(vol.array)}
    if present - exp.values:
        raise ConfigError("config_error", f"the prediction for {name} holds values "
                         f"{sorted(present - exp.values)[:10]} that the export's labels do not declare "
                         f"({sorted(exp.values)})", path=str(path),
                         remedy="write predictions as label maps with the export's values (dataset.json's labels; "
                         "for nnU-Net regions, regions_class_order), not probabilities or other codes")
    mapped = to_source(vol.array, export_grid, source_grid).astype(label_dtype(max(present)), copy=False)
    write_nifti(dest, Volume(mapped, source_grid))
    return {"case_id": record["case_id"], "source": record["source"], "dataset": record["dataset"],
            "prediction": path.name, "image_path": record["image_path"], "label_paths": record["label_paths"],
            "shape": list(source_grid.shape), "affine": list(source_grid.affine),
            "coarser_axes": coarser_axes(export_grid, source_grid)}
