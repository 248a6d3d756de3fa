"""``curator export nnunet``: an nnU-Net v2 raw dataset (``DatasetXXX_Name``) from a release.

The release's training view is exported (duplicates the keep policy dropped and QC-excluded
labels left out, :mod:`curator.release.training`); cases of the release's ``test`` split go to
``imagesTs``/``labelsTs``, the others to ``imagesTr``/``labelsTr``, and ``splits_final.json``
holds one fold — the release's train/val split, which keeps each patient (and each duplicate
group) on one side. nnU-Net reads it from ``nnUNet_preprocessed/DatasetXXX_Name/`` (copy it there
after ``nnUNetv2_plan_and_preprocess``, then train fold 0); without it nnU-Net draws its own five
folds by case, which can split a patient's scans across train and validation.

>>> # export_nnunet("releases/demo/0.1.0", "nnUNet_raw", dataset_id=501, name="DemoLiver",
>>> #               terms=["liver", "spleen"], where="modality = 'CT'")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from curator.errors import ConfigError, ReleaseError
from curator.export.common import DEFAULT_LAYERS, ExportReport, select_cases, write_case
from curator.io.fsutil import atomic_write_json, check_output_dir, staged_dir
from curator.release.query import Release, check_outside_releases
from curator.release.training import check_request, training_view


def export_nnunet(release: str | Path, out_root: str | Path, *, dataset_id: int, name: str, terms: list[str],
                  where: str = "true", partial: bool = False, layers: Sequence[str] = DEFAULT_LAYERS,
                  duplicates: bool = False, qc_filter: bool = True) -> ExportReport:
    """Write ``<out_root>/Dataset<id>_<name>/`` with imagesTr, labelsTr (imagesTs, labelsTs),
    dataset.json and splits_final.json.

    ``terms`` become labels 1..n (they should be mutually exclusive; overlaps are counted and
    the later term wins). Cases that lack a term are skipped unless ``partial`` (then the
    missing term is background — only sensible when the dataset annotates it as absent); a
    test case that lacks one (an official test image without labels) goes to ``imagesTs``
    without a ``labelsTs`` file, for inference.
    ``duplicates`` / ``qc_filter``: see :func:`curator.release.training.training_view`.
    """
    if not 1 <= dataset_id <= 999 or not re.fullmatch(r"[A-Za-z0-9_]+", name) or not terms:
        raise ConfigError("config_error", "nnU-Net needs a dataset id 1-999, a name of letters/digits/_ "
                          "and at least one term")
    rel = Release(release)
    check_outside_releases(out_root, "the export", rel.path)
    check_output_dir(out_root)
    check_request(rel, terms, layers)
    view = training_view(rel, duplicates=duplicates, qc_filter=qc_filter, terms=terms, layers=layers)
    cases = select_cases(rel, where, view)
    modalities = sorted({c.modality for c in cases})
    if len(modalities) > 1:
        raise ConfigError("config_error", f"the selection mixes modalities {modalities}; nnU-Net needs one "
                          "channel meaning", remedy="add e.g. modality = 'CT' to --where")
    folder = Path(out_root) / f"Dataset{dataset_id:03d}_{name}"
    taken = sorted(p.name for p in Path(out_root).glob(f"Dataset{dataset_id:03d}_*")) if Path(out_root).is_dir() else []
    if taken:
        raise ReleaseError("release_error", f"nnU-Net dataset id {dataset_id} is taken by {', '.join(taken)}",
                           path=str(out_root), remedy="choose another --id (nnU-Net refuses two datasets "
                                                      "with one id), or remove the folder")
    if not any(c.split != "test" for c in cases):  # found before a file is written
        left_out = " (dropped duplicates left out)" if view.dropped_duplicates else ""
        raise ReleaseError("release_error", "the selection holds no training case"
                           + (f": every case it selects{left_out} is in the release's test split" if cases else ""),
                           path=str(rel.path), remedy="widen --where: nnU-Net trains on the cases outside the "
                                                      "release's test split")
    report = ExportReport(folder)
    report.note_stand_ins(view.stand_ins)
    with staged_dir(folder) as staging:  # a failed export leaves no folder to take the id
        split_of: dict[str, str | None] = {}
        for c in cases:
            tr = "Ts" if c.split == "test" else "Tr"
            if write_case(c, terms, partial, staging / f"images{tr}" / f"{c.case_id}_0000.nii.gz",
                          staging / f"labels{tr}" / f"{c.case_id}.nii.gz", report, layers, view, rel,
                          image_only=tr == "Ts") is not None:  # an unlabelled test image is for inference
                split_of[c.case_id] = c.split
        training = [c for c in report.cases if split_of[c] != "test"]
        if not training:
            raise ReleaseError("release_error", f"no training case holds every term {terms}", path=str(rel.path),
                               remedy="check --terms against `store_terms`, or pass --partial")
        atomic_write_json(staging / "dataset.json", {
            "channel_names": {"0": "CT" if modalities == ["CT"] else modalities[0]},
            "labels": {"background": 0, **{t: i for i, t in enumerate(terms, start=1)}},
            "numTraining": len(training), "file_ending": ".nii.gz",
            "name": name, "description": f"exported by curator from {rel.info.get('collection')} "
                                         f"{rel.info.get('version')} (where: {where})",
            "licence": "see the release's dataset card: each case keeps its source dataset's licence",
        }, indent=1)
        val = [c for c in training if split_of[c] == "val"]
        if val:
            atomic_write_json(staging / "splits_final.json",
                              [{"train": [c for c in training if split_of[c] != "val"], "val": val}], indent=1)
        elif training:
            report.notes.append("no exported training case is in the release's val split, so no splits_final.json: "
                                "nnU-Net will draw its own folds by case (patient-level groups are not kept); "
                                "export more cases (--partial takes cases lacking a term, written as background: "
                                "only right where their dataset annotates the term as absent)")
        atomic_write_json(staging / "curator_export.json", {
            "release": rel.info.get("version"), "cases": report.cases, "skipped": report.skipped,
            "overlaps": report.overlaps, "test": [c for c in report.cases if split_of[c] == "test"],
            "test_images_without_labels": report.images_only,
            "left_out_duplicates": sorted(view.dropped_duplicates),
            "qc_filter": qc_filter}, indent=1)
    return report
