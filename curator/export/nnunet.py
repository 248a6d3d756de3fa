"""``curator export nnunet``: an nnU-Net v2 raw dataset (``DatasetXXX_Name``) from a release.

The release's training view is exported (duplicates the keep policy dropped and QC-excluded
labels left out, :mod:`curator.release.training`); cases of the release's ``test`` split go to
``imagesTs``/``labelsTs``, the others to ``imagesTr``/``labelsTr``, and ``splits_final.json``
holds one fold — the release's train/val split, which keeps each patient (and each duplicate
group) on one side. When no exported training case is in the val split, it holds five folds
(fewer for fewer units) that keep each split unit in one fold (:func:`grouped_folds`). nnU-Net
reads it from ``nnUNet_preprocessed/DatasetXXX_Name/`` (copy it there after
``nnUNetv2_plan_and_preprocess``, then train fold 0, or folds 0-4); without it nnU-Net draws its
own five folds by case, which can split a patient's scans across train and validation.

With ``partial``, a case whose dataset does not annotate a requested term is kept, and the voxels
that term could occupy are nnU-Net's **ignore label** (``"ignore": n + 1`` in dataset.json's
``labels`` for ``n`` terms; nnU-Net leaves them out of the loss): the case's background, and its
voxels of a term the missing one is part of or contains — not the background outside a requested
term the missing one lies in (a liver tumour is never outside the liver). A term the dataset
annotates but the case lacks (no tumour) is background: a true negative. ``missing="background"``
writes unknown terms as background instead (nnU-Net then learns "absent" where nobody looked).

Terms one of which is part of another (``liver,liver_tumor``; BraTS'
``brain_tumor,brain_tumor_core,enhancing_brain_tumor``) are painted containers first, an inner term
over its container, one value each (MSD Task03's 1 = liver outside the tumour, 2 = tumour), with a
note saying so. ``regions=True`` exports them as nnU-Net **regions** instead
(:mod:`curator.export.regions`): dataset.json's ``labels`` gives each term the values of its region
(``"brain_tumor": [1, 2, 3]``) and ``regions_class_order`` the value each region is painted with at
inference (region-based training).

With ``channels`` (sequence names), the sequences of each study are the channels of one case
(``<name>_0000`` .. ``_000k`` in that order; ``channel_names`` "CT" for CT, else the sequence), on
the first one's grid, with its labels (:mod:`curator.export.channels`).

>>> # export_nnunet("releases/demo/0.1.0", "nnUNet_raw", dataset_id=501, name="DemoLiver",
>>> #               terms=["liver", "spleen"], where="modality = 'CT'")
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from curator.errors import ConfigError, ReleaseError
from curator.export.channels import note_resampled, pet_window_note, preprocess_settings, studies_of
from curator.export.common import DEFAULT_LAYERS, CaseJob, ExportReport, select_cases, write_cases
from curator.export.evaluation import (
    check_modalities,
    may_include_notes,
    test_section,
    unknown_by_reason,
)
from curator.export.on_source import SourceReader
from curator.export.on_source import check_request as check_grid
from curator.export.regions import Regions, nesting_note, painting_order
from curator.export.regions import regions as as_regions
from curator.export.scope import leave_out_foreign_tests, no_case_error
from curator.export.source_grid import grid_section
from curator.export.sources import licence_line, write_sources
from curator.io.fsutil import atomic_write_json, check_output_dir, staged_dir
from curator.release.query import Release, check_outside_releases
from curator.release.training import check_request

if TYPE_CHECKING:
    from curator.taxonomy.model import Taxonomy

MISSING = ("ignore", "background")  # what a --partial export writes where a case's unannotated term could be


def export_nnunet(release: str | Path, out_root: str | Path, *, dataset_id: int, name: str, terms: list[str],
                  where: str = "true", partial: bool = False, layers: Sequence[str] = DEFAULT_LAYERS,
                  duplicates: bool = False, qc_filter: bool = True, missing: str = "ignore",
                  workers: int = 1, channels: Sequence[str] | None = None, regions: bool = False,
                  grid: str = "preprocessed", pipeline: str | Path | None = None, qc_filter_test: bool = False,
                  test_only: bool = False) -> ExportReport:
    """Write ``<out_root>/Dataset<id>_<name>/`` with imagesTr, labelsTr (imagesTs, labelsTs),
    dataset.json and splits_final.json.

    ``terms`` become labels 1..n (mutually exclusive terms; voxels two of them claim are counted
    and the later term wins; a term part of another is painted over it, containers first), or with
    ``regions`` nested terms as nnU-Net regions (see the module). Cases that lack a term (their dataset does not annotate it) are skipped
    unless ``partial``: then the voxels the term could occupy get the ignore label ``n + 1``
    (``missing="ignore"``, declared in dataset.json only when some case has such voxels) or
    background (``missing="background"``). A term annotated but absent in a case is background
    either way. A test case that lacks every term, or without ``partial`` one (an official test
    image without labels), goes to ``imagesTs`` without a ``labelsTs`` file, for inference.
    ``duplicates`` / ``qc_filter`` / ``qc_filter_test``: see :func:`curator.release.training.training_view`
    (QC's exclusions apply to the test split's cases only with ``qc_filter_test``; curator_export.json
    records ``test_withheld`` and ``test_qc_flagged``: :mod:`curator.export.evaluation`).
    ``test_only``: export the selected cases of the release's test split alone (imagesTs and
    labelsTs; dataset.json with ``numTraining`` 0, no splits_final.json), to evaluate a model
    trained before — request the terms in the order it was trained with.
    ``workers``: cases written at once (processes; the export is the same whatever the number).
    ``channels``: export each study (cases sharing a study_key) as one case with these sequences
    as its channels, the first the reference grid and label (:mod:`curator.export.channels`);
    a study lacking one of them is skipped (``report.skipped``, under the name it would have had).
    ``grid="source"`` writes each case on its source grid, read from the files of ``pipeline``'s
    sources (:mod:`curator.export.on_source`; ``layers`` must be ``("original",)``).
    """
    if missing not in MISSING:
        raise ConfigError("config_error", f"missing={missing!r}: give one of {', '.join(MISSING)}")
    if not 1 <= dataset_id <= 999 or not re.fullmatch(r"[A-Za-z0-9_]+", name) or not terms:
        raise ConfigError("config_error", "nnU-Net needs a dataset id 1-999, a name of letters/digits/_ "
                          "and at least one term")
    rel = Release(release)
    check_outside_releases(out_root, "the export", rel.path)
    check_output_dir(out_root)
    check_request(rel, terms, layers)
    check_grid(grid, pipeline, layers)
    nested = as_regions(rel.taxonomy, terms) if regions else None
    terms = painting_order(rel.taxonomy, terms)  # an inner term over its container
    if test_only and "splits" not in rel.table_names():
        raise ReleaseError("release_error", "--test-only: the release has no splits table, so no test split",
                           path=str(rel.path), remedy="export without --test-only (every case then trains)")
    cases, view, dropped = select_cases(rel, f"({where}) and s.split = 'test'" if test_only else where,
                                        duplicates=duplicates, qc_filter=qc_filter, terms=terms, layers=layers,
                                        qc_filter_test=qc_filter_test)
    selected = list(cases)
    report = ExportReport(Path(out_root) / f"Dataset{dataset_id:03d}_{name}")
    studies, names = studies_of(cases, channels, report, rel.path, dropped)
    studies = leave_out_foreign_tests(rel, studies, terms, layers, report)  # an image nobody can score
    cases = [s.cases[0] for s in studies]
    # the cases that would be written: one holding none of the terms is skipped, whatever its modality
    modalities = check_modalities(rel, cases, terms, layers, view, partial)
    if channels is None and len(modalities) > 1:
        raise ConfigError("config_error", f"the cases holding the terms mix modalities {modalities}; nnU-Net "
                          "needs one channel meaning", remedy="add e.g. modality = 'CT' to --where (or export the "
                          "sequences of each study as channels: --channels)")
    folder = report.folder
    taken = sorted(p.name for p in Path(out_root).glob(f"Dataset{dataset_id:03d}_*")) if Path(out_root).is_dir() else []
    if taken:
        raise ReleaseError("release_error", f"nnU-Net dataset id {dataset_id} is taken by {', '.join(taken)}",
                           path=str(out_root), remedy="choose another --id (nnU-Net refuses two datasets "
                                                      "with one id), or remove the folder")
    if test_only and not cases:
        raise ReleaseError("release_error", "--test-only: the selection holds no case of the release's test split"
                           + (" (their datasets annotate none of the terms: skipped)" if report.skipped else ""),
                           path=str(rel.path), remedy="widen --where, or check the splits table's test split")
    if not test_only and not any(c.split != "test" for c in cases):  # found before a file is written
        left_out = " (dropped duplicates left out)" if view.dropped_duplicates else ""
        raise ReleaseError("release_error", "the selection holds no training case"
                           + (f": every case it selects{left_out} is in the release's test split" if cases else ""),
                           path=str(rel.path), remedy="widen --where: nnU-Net trains on the cases outside the "
                                                      "release's test split")
    ignore = len(terms) + 1 if partial and missing == "ignore" else None
    source = None if pipeline is None else SourceReader(rel, pipeline, [c.case_id for s in studies for c in s.cases])
    with staged_dir(folder) as staging:  # a failed export leaves no folder to take the id
        split_of: dict[str, str | None] = {}
        jobs = [CaseJob(s.cases[0], staging / f"images{tr}" / f"{s.name}_0000.nii.gz",
                        staging / f"labels{tr}" / f"{s.name}.nii.gz", image_only=tr == "Ts",  # for inference
                        channels=tuple((c, staging / f"images{tr}" / f"{s.name}_{k:04d}.nii.gz")
                                       for k, c in enumerate(s.cases[1:], start=1)))
                for s in studies for tr in ["Ts" if s.cases[0].split == "test" else "Tr"]]
        for s, present in zip(studies, write_cases(rel, jobs, terms, partial, report, layers, view, ignore=ignore,
                                                   workers=workers, source=source), strict=True):
            if present is not None:
                split_of[s.name] = s.cases[0].split
        report.note_stand_ins(view, {s.cases[0].case_id for s in studies})  # what was written
        report.rename({s.cases[0].case_id: s.name for s in studies})
        note_resampled(report)
        training = [c for c in report.cases if split_of[c] != "test"]
        if test_only and not split_of:
            raise no_case_error(rel, cases, terms, layers, partial, view, "test case", report.skipped)
        if not training and not test_only:
            raise no_case_error(rel, [c for c in cases if c.split != "test"], terms, layers, partial, view,
                                "training case", report.skipped)
        sources = write_sources(rel, staging, [s.cases[0].dataset for s in studies if s.name in split_of], report,
                                f"nnU-Net dataset {folder.name}")
        labels: dict[str, int | list[int]] = {"background": 0, **(
            nested.labels if nested is not None else {t: i for i, t in enumerate(terms, start=1)})}
        if report.ignored:  # nnU-Net: the highest label, right above the terms (verify_dataset_integrity)
            labels["ignore"] = len(terms) + 1
        _note_unknown(report, terms, split_of, missing)
        may_include_notes(report, terms)
        if test_only:
            report.notes.append("a test-only export: imagesTs and labelsTs alone (dataset.json's numTraining is 0, "
                                "no splits_final.json), to score a model trained before — its labels are the "
                                "values of --terms in the order given, as in that model's dataset.json: check them")
        evaluation = test_section(rel, report, view, selected, dropped,
                                  {s.cases[0].case_id: s.name for s in studies}, terms, layers,
                                  qc_filter=qc_filter, qc_filter_test=qc_filter_test)
        preprocess = preprocess_settings(rel.info)
        if pet := pet_window_note(preprocess, [s for s in studies if s.name in split_of], names):
            report.notes.append(pet)
        if nested is not None:
            report.notes.append(_regions_note(nested))
        elif note := _nesting_note(rel.taxonomy, terms):
            report.notes.append(note)
        atomic_write_json(staging / "dataset.json", {
            "channel_names": names,
            "labels": labels, **({"regions_class_order": nested.class_order} if nested is not None else {}),
            "numTraining": len(training), "file_ending": ".nii.gz",
            "name": name, "description": f"exported by curator from {rel.info.get('collection')} "
                                         f"{rel.info.get('version')} (where: {where})",
            "licence": licence_line(sources),
        }, indent=1)
        val = [c for c in training if split_of[c] == "val"]
        unit_of = _units(rel, {s.name: s.cases[0].case_id for s in studies if s.name in split_of})
        folds = grouped_folds(training, unit_of) if not val else []
        if val:
            atomic_write_json(staging / "splits_final.json",
                              [{"train": [c for c in training if split_of[c] != "val"], "val": val}], indent=1)
        elif folds:
            atomic_write_json(staging / "splits_final.json", folds, indent=1)
            report.notes.append(f"no exported training case is in the release's val split, so splits_final.json "
                                f"holds {len(folds)} folds that keep each split unit (a patient's cases, a study's "
                                "sequences, a duplicate group: the splits table's group_key) in one fold; train "
                                f"folds 0-{len(folds) - 1} for nnU-Net's cross-validation")
        elif training:
            report.notes.append("no exported training case is in the release's val split, and they form one split "
                                "unit (one patient), so no splits_final.json: nnU-Net will draw its own folds by "
                                "case; export more cases (--partial takes cases lacking a term, their voxels that "
                                "the term could occupy marked with nnU-Net's ignore label)")
        atomic_write_json(staging / "curator_export.json", {
            "release": rel.info.get("version"), "cases": report.cases, "skipped": report.skipped,
            "overlaps": report.overlaps, "test": [c for c in report.cases if split_of[c] == "test"],
            "test_images_without_labels": report.images_only,
            "partial": {"missing": missing if partial else None, "ignore_label": labels.get("ignore"),
                        "unknown_terms": report.unknown, "ignored_voxels": report.ignored,
                        "no_background": report.no_background,
                        "unknown_by_reason": unknown_by_reason(report, terms),
                        "unknown_reasons": {c: why for c, why in report.unknown_why.items() if c in report.cases}},
            "channels": None if channels is None else {  # each exported case's channels: source case ids
                "sequences": list(channels), "cases": {s.name: [c.case_id for c in s.cases] for s in studies
                                                       if s.name in split_of}, "resampled": report.resampled},
            "left_out_duplicates": sorted(view.dropped_duplicates),
            "qc_filter": qc_filter, **evaluation, "test_only": test_only,
            "may_include": report.may_include, **sources,
            **grid_section(rel, {s.name: s.cases[0].case_id for s in studies if s.name in split_of}, grid)}, indent=1)
    return report


def _units(rel: Release, case_of: dict[str, str]) -> dict[str, str]:
    """Each exported name's split unit (``splits.group_key`` of its first case; the case itself
    when the release has no splits table)."""
    if "splits" not in rel.table_names():
        return {name: cid for name, cid in case_of.items()}
    key = dict(rel.sql("select case_id, group_key from splits").fetchall())
    return {name: key.get(cid) or cid for name, cid in case_of.items()}


def grouped_folds(names: Sequence[str], unit_of: Mapping[str, str], k: int = 5) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` with ``k`` folds (fewer when there are fewer units) in which
    each unit's names share a fold: units, largest first (ties by unit key), go to the fold with
    the fewest names so far (ties to the lower fold). Deterministic; [] for fewer than two units.

    >>> grouped_folds(["a1", "a2", "b", "c"], {"a1": "A", "a2": "A", "b": "B", "c": "C"}, k=2)
    [{'train': ['b', 'c'], 'val': ['a1', 'a2']}, {'train': ['a1', 'a2'], 'val': ['b', 'c']}]
    """
    units: dict[str, list[str]] = {}
    for n in names:
        units.setdefault(unit_of.get(n, n), []).append(n)
    k = min(k, len(units))
    if k < 2:
        return []
    folds: list[list[str]] = [[] for _ in range(k)]
    for _, members in sorted(units.items(), key=lambda u: (-len(u[1]), u[0])):
        min(folds, key=len).extend(members)
    held = [set(fold) for fold in folds]
    return [{"train": [n for n in names if n not in h], "val": [n for n in names if n in h]} for h in held]


def _note_unknown(report: ExportReport, terms: list[str], split_of: dict[str, str | None], missing: str) -> None:
    """Say how the cases exported without some of the terms (--partial) label them."""
    if not report.unknown:
        return
    cases = sorted(report.unknown)
    by_term = {t: sum(t in report.unknown[c] for c in cases) for t in terms}
    lacking = ", ".join(f"{t} ({n})" for t, n in by_term.items() if n)
    if missing == "background":
        report.notes.append(f"{len(cases)} exported cases lack terms their dataset does not annotate — {lacking}: "
                            "they are written as background, so nnU-Net learns them as absent there "
                            "(--missing ignore marks them unknown instead)")
        return
    report.notes.append(f"{len(cases)} exported cases lack terms their dataset does not annotate — {lacking}: "
                        + (f"the voxels those terms could occupy are the ignore label {len(terms) + 1} in "
                           f"dataset.json ({sum(report.ignored.values())} voxels in {len(report.ignored)} cases), "
                           "left out of nnU-Net's loss" if report.ignored else
                           "no voxel of theirs could hold those terms, so no ignore label is needed"))
    if report.no_background:
        report.notes.append(_no_background_note(report, split_of))
    if any(split_of.get(c) == "test" for c in report.ignored):
        report.notes.append("labelsTs files hold the ignore label too: nnUNetv2_evaluate_folder given this "
                            "dataset.json (-djfile) leaves those voxels out")


def _no_background_note(report: ExportReport, split_of: Mapping[str, str | None]) -> str:
    """Warn that cases keep no background voxel: the ignore label took all of it, as a term their
    dataset does not annotate could lie anywhere outside the known terms."""
    bare = report.no_background
    train = [c for c in report.cases if split_of.get(c) != "test"]
    bare_train = [c for c in bare if split_of.get(c) != "test"]
    by_term = {t: n for t in dict.fromkeys(t for c in bare for t in report.unknown.get(c, []))
               if (n := sum(t in report.unknown.get(c, []) for c in bare))}
    lacking = ", ".join(f"{t} in {n}" for t, n in by_term.items())
    left = len(train) - len(bare_train)
    return (f"warning: {len(bare)} of {len(report.cases)} exported cases ({len(bare_train)} of {len(train)} "
            f"training cases) keep no background voxel: each voxel outside their known terms is the ignore "
            f"label, as a term their dataset does not annotate ({lacking}) could lie anywhere there — "
            + ("no training case teaches nnU-Net background, so it may predict the terms everywhere" if not left
               else f"only {left} training case{'s' * (left != 1)} teach{'es' * (left == 1)} nnU-Net background")
            + "; export those terms from the datasets that annotate them (--where), or request with them a term "
            "whose label bounds them (a term they are part of, or whose label may hold them: the taxonomy's "
            "part_of and may_include — with kidney requested, a kidney_tumor is unknown only inside a kidney "
            "labelled with its masses); curator_export.json's partial.no_background lists the cases")


def _regions_note(nested: Regions) -> str:
    """Say how nested terms were written (nnU-Net regions)."""
    said = "; ".join(f"{t} = values {', '.join(map(str, v))}" for t, v in nested.labels.items())
    return (f"some terms are part of others, so they are nnU-Net regions (region-based training, sigmoid outputs): "
            f"{said} — each voxel holds the value of the innermost term there (painted {', '.join(nested.order)}); "
            "dataset.json's regions_class_order is the value each region is painted with at inference")


def _nesting_note(tax: Taxonomy, terms: list[str]) -> str | None:
    """Say which labels hold only their voxels outside the inner terms, and what --regions writes."""
    try:
        nested = as_regions(tax, terms)
    except ConfigError:  # a term inside two unnested ones: --regions would refuse it
        return nesting_note(tax, terms, "--regions refuses these terms (one is inside two unnested others)")
    said = ", ".join(f"{t} = {v}" for t, v in nested.labels.items() if len(v) > 1) if nested is not None else ""
    return nesting_note(tax, terms, f"--regions exports nnU-Net regions ({said}) instead")
