"""``curator export monai``: NIfTI images/labels + a Decathlon-style datalist JSON.

MONAI's ``load_decathlon_datalist(path, True, "training")`` reads it; ``validation`` and
``test`` hold the release's split when the release has a ``splits`` table. A split with no
exported case has no key (MONAI's loader fails on an empty list with an IndexError; a missing
key it names), and the export's notes say so. The release's
training view is exported (:mod:`curator.release.training`). Cases lacking a term (their dataset
does not annotate it) are skipped unless ``partial``; then the term is background (0) in their
label file — unlike the nnU-Net export, no ignore value, which MONAI's usual one-hot transforms
and losses would take for a class — and each entry's ``annotated`` key lists the terms its label
does annotate (a term annotated but absent in the case, a true negative, is in it), ``nonempty``
those with at least one voxel in its label file. MONAI's loaders do not read ``annotated``: mask
the loss with it (per term, e.g. sigmoid outputs), or the model learns the unannotated terms as
absent. ``present`` is the same list as ``annotated`` under its old, misleading name: deprecated,
to be removed in the next minor version (docs/upgrading.md). A test case lacking one (an official test image
without labels) is listed under ``test`` with its image only, as the Decathlon's own test lists
are, for inference. Terms one of which is part of another (``liver,liver_tumor``) are painted
containers first, an inner term over its container (MSD Task03's 1 = liver outside the tumour),
and a note says so (:func:`curator.export.regions.nesting_note`).

With ``channels`` (sequence names) each study is one entry whose ``image`` lists its channels'
files (``images/<name>_0000.nii.gz`` ..., in that order: MONAI's ``LoadImaged`` stacks them as
channels), every one on the first channel's grid, with its label (:mod:`curator.export.channels`);
the datalist's ``channel_names`` name them, each entry's ``channels`` lists its source cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from curator.export.channels import note_resampled, pet_window_note, preprocess_settings, studies_of
from curator.export.common import (
    DEFAULT_LAYERS,
    CaseJob,
    ExportCase,
    ExportReport,
    select_cases,
    write_cases,
)
from curator.export.evaluation import may_include_notes, test_section, unknown_by_reason
from curator.export.on_source import SourceReader
from curator.export.on_source import check_request as check_grid
from curator.export.regions import nesting_note, painting_order
from curator.export.scope import leave_out_foreign_tests, no_case_error
from curator.export.source_grid import grid_section
from curator.export.sources import FILES, licence_line, write_sources
from curator.io.fsutil import atomic_write_json, check_free, check_output_dir, staged_dir
from curator.release.query import Release, check_outside_releases
from curator.release.training import check_request

KEYS = {"train": "training", "val": "validation", "test": "test", None: "training"}

# MONAI's ConvertToMultiChannelBasedOnBratsClassesd: 1 = necrotic core, 2 = edema, `et_label` (4) = enhancing
BRATS = ("necrotic_brain_tumor_core", "brain_edema", "enhancing_brain_tumor")


def brats_note(terms: Sequence[str]) -> str | None:
    """How to build BraTS' regions from a label map of the painted ``terms`` with MONAI's
    ``ConvertToMultiChannelBasedOnBratsClassesd``, which reads 1 as the necrotic core, 2 as the
    edema and ``et_label`` (4 by default, BraTS 2018–2022) as the enhancing tumour: curator paints
    the enhancing tumour with its position in ``terms`` (3 for the BraTS order), so the default
    gives an empty ET channel. None unless ``enhancing_brain_tumor`` is requested.

    >>> brats_note(["necrotic_brain_tumor_core", "brain_edema", "enhancing_brain_tumor"])[:75]
    "MONAI's ConvertToMultiChannelBasedOnBratsClassesd: pass et_label=3 (label 3"
    """
    if BRATS[2] not in terms:
        return None
    et = list(terms).index(BRATS[2]) + 1
    if list(terms[:2]) == list(BRATS[:2]) and et not in (1, 2):
        return (f"MONAI's ConvertToMultiChannelBasedOnBratsClassesd: pass et_label={et} (label {et} is "
                f"{BRATS[2]}; its default, 4, is BraTS 2018-2022's and gives an empty enhancing-tumour channel)")
    return (f"label {et} is {BRATS[2]}: MONAI's ConvertToMultiChannelBasedOnBratsClassesd reads 1 as the "
            "necrotic core and 2 as the edema, so request --terms " + ",".join(BRATS) + " (in that order) and pass "
            "et_label=3 to use it, or build the regions from the datalist's 'labels' yourself")


def export_monai(release: str | Path, out: str | Path, *, terms: list[str], where: str = "true",
                 partial: bool = False, layers: Sequence[str] = DEFAULT_LAYERS, duplicates: bool = False,
                 qc_filter: bool = True, workers: int = 1, channels: Sequence[str] | None = None,
                 grid: str = "preprocessed", pipeline: str | Path | None = None,
                 qc_filter_test: bool = False) -> ExportReport:
    """Write ``<out>/images``, ``<out>/labels`` and ``<out>/datalist.json`` (paths relative to ``out``);
    ``workers``: cases written at once (processes; the export is the same whatever the number);
    ``channels``: the sequences of each study as one entry's channels (see the module);
    ``grid="source"``: each case on its source grid, read from the files of ``pipeline``'s sources
    (:mod:`curator.export.on_source`; ``layers`` must be ``("original",)``);
    ``qc_filter_test``: QC's exclusions apply to the test split too (not by default; the datalist's
    ``test_withheld`` and ``test_qc_flagged`` say what that changes: :mod:`curator.export.evaluation`)."""
    rel = Release(release)
    folder = Path(out)
    check_outside_releases(folder, "the export", rel.path)
    check_output_dir(folder)
    check_free(folder, ("images", "labels", "datalist.json", *FILES))
    check_request(rel, terms, layers)
    check_grid(grid, pipeline, layers)
    terms = painting_order(rel.taxonomy, terms)  # one term per voxel: an inner term over its container
    cases, view, dropped = select_cases(rel, where, duplicates=duplicates, qc_filter=qc_filter, terms=terms,
                                        layers=layers, qc_filter_test=qc_filter_test)
    report = ExportReport(folder)
    lists: dict[str, list[dict[str, object]]] = {"training": [], "validation": [], "test": []}
    with staged_dir(folder) as staging:  # a failed export leaves nothing behind (datalist.json moves in last)
        studies, names = studies_of(cases, channels, report, rel.path, dropped)
        studies = leave_out_foreign_tests(rel, studies, terms, layers, report)  # an image nobody can score
        image = {s.name: [f"images/{s.name}_{k:04d}.nii.gz" for k in range(len(s.cases))] if channels is not None
                 else [f"images/{s.name}.nii.gz"] for s in studies}
        jobs = [CaseJob(s.cases[0], staging / image[s.name][0], staging / "labels" / f"{s.name}.nii.gz",
                        image_only=s.cases[0].split == "test",  # an unlabelled test image is listed for inference
                        channels=tuple((c, staging / f) for c, f in zip(s.cases[1:], image[s.name][1:], strict=True)))
                for s in studies]
        source = None if pipeline is None else SourceReader(rel, pipeline, [c.case_id for s in studies for c in s.cases])
        for s, present in zip(studies, write_cases(rel, jobs, terms, partial, report, layers, view, workers=workers,
                                                   source=source), strict=True):
            c = s.cases[0]
            if present is not None:
                label = {} if c.case_id in report.images_only else {"label": f"labels/{s.name}.nii.gz"}
                lists[KEYS.get(c.split, "training")].append({
                    "image": image[s.name] if channels is not None else image[s.name][0], **label,
                    "case_id": s.name, "dataset": c.dataset, **({"modality": c.modality} if channels is None else {
                        "modality": [x.modality for x in s.cases], "channels": [x.case_id for x in s.cases]}),
                    "annotated": present, **({} if c.case_id in report.images_only else
                                             {"nonempty": report.nonempty.get(c.case_id, [])}),
                    "present": present})  # deprecated: the same as annotated (docs/upgrading.md)
        report.note_stand_ins(view, {s.cases[0].case_id for s in studies})  # what was written
        report.rename({s.cases[0].case_id: s.name for s in studies})
        note_resampled(report)
        if not report.cases:
            raise no_case_error(rel, [s.cases[0] for s in studies], terms, layers, partial, view,
                                skipped=report.skipped)
        written = {e["case_id"] for entries in lists.values() for e in entries}
        may_include_notes(report, terms)
        evaluation = test_section(rel, report, view, cases, dropped, {s.cases[0].case_id: s.name for s in studies},
                                  terms, layers, qc_filter=qc_filter, qc_filter_test=qc_filter_test)
        sources = write_sources(rel, staging, [s.cases[0].dataset for s in studies if s.name in written], report,
                                "this MONAI export")
        atomic_write_json(staging / "datalist.json", {
            "description": f"curator {rel.info.get('collection')} {rel.info.get('version')} (where: {where})",
            "labels": {"0": "background", **{str(i): t for i, t in enumerate(terms, start=1)}},
            **({"channel_names": names} if channels is not None else {}),
            **{k: v for k, v in lists.items() if v or k == "training"},
            "skipped": report.skipped,  # name -> why, as nnU-Net's curator_export.json lists them
            "qc_filter": qc_filter, **evaluation, "may_include": report.may_include,
            "unknown_by_reason": unknown_by_reason(report, terms),
            "licence": licence_line(sources), **sources,
            **grid_section(rel, {s.name: s.cases[0].case_id for s in studies if s.name in written}, grid)}, indent=1)
    if report.unknown:
        lacking = sorted({t for ts in report.unknown.values() for t in ts}, key=terms.index)
        report.notes.append(f"{len(report.unknown)} exported cases lack terms their dataset does not annotate "
                            f"({', '.join(lacking)}): their labels hold them as background; each datalist "
                            "entry's 'annotated' key lists the case's annotated terms — mask the loss with it, MONAI's "
                            "loaders do not")
    note = nesting_note(rel.taxonomy, terms, "MONAI label maps have no regions: build a container as the union "
                        "of its label and its inner terms' when training")
    if note is not None:
        report.notes.append(note)
    note = brats_note(terms)
    if note is not None:
        report.notes.append(note)
    preprocess = preprocess_settings(rel.info)
    if pet := pet_window_note(preprocess, [s for s in studies if s.name in written], names, tool="monai"):
        report.notes.append(pet)
    for key, split in (("validation", "val"), ("test", "test")):  # MONAI's loader fails on an empty list
        if not lists[key]:  # (IndexError), and says "not specified" for a missing key: the export says why
            report.notes.append(f"the datalist has no {key!r} list: {_why_empty(rel, split, cases)}; "
                                f"load_decathlon_datalist(..., {key!r}) will say it is not specified")
    return report


def _why_empty(rel: Release, split: str, selected: Sequence[ExportCase]) -> str:
    """Why no case of the release's ``split`` was exported: the ``selected`` ones of it were left
    out (skipped: a test case of a dataset annotating none of the terms), the selection holds none
    of it, or the release has none."""
    if "splits" not in rel.table_names():
        return f"no exported case is in the release's {split!r} split (the release has no splits table)"
    mine = sum(c.split == split for c in selected)
    if mine:
        return (f"the {mine} case(s) of the release's {split!r} split the selection holds were not exported "
                "(`skipped` says why)")
    ((total,),) = rel.sql(f"select count(*) from splits where split = '{split}'").fetchall()
    if total:
        return f"the selection holds none of the {total} case(s) of the release's {split!r} split"
    return f"the release's {split!r} split is empty"

