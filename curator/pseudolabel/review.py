"""The review loop: export the cases most in need of review, import what reviewers revised.

``export_review`` writes, for the top cases of the ``attention`` table (or those named)::

    <out>/worklist.csv                  rank, case, dataset, attention, terms by attention, each
                                        term's review state (pseudo, or revised / accepted in
                                        round N), the terms still to review, files
    <out>/codes.json                    every code of the export -> its term ids: ONE code per
                                        term list in every case (:mod:`.review_codes`)
    <out>/labels_itksnap.txt            those codes as an ITK-SNAP label description file
    <out>/labels_slicer.txt             ... and as a 3D Slicer colour table
    <out>/<case_id>/preview_<term>.png  axial slice of most attention and a coronal slice: image
                                        windowed for the term, the label a release uses (green:
                                        revised where reviewed, else pseudo), attention (red
                                        outline), neighbours (blue outlines) (:mod:`.review_preview`)
    <out>/<case_id>/pseudo.nii.gz       the pseudo label layer (codes in codes.json), to edit
    <out>/<case_id>/image.nii.gz        the image in physical units (optional)
    <out>/<case_id>/original.nii.gz     the dataset's own label of the case (read-only reference;
                                        only where there is one)
    <out>/<case_id>/codes.json          the case's codes -> term ids (those of <out>/codes.json)
    <out>/<case_id>/labels_itksnap.txt  the case's codes as an ITK-SNAP label description file
    <out>/<case_id>/labels_slicer.txt   ... and as a 3D Slicer colour table
    <out>/<case_id>/export.json         what was exported: a checksum of each code's exported mask,
                                        the store's grid
    <out>/README.txt                    how to review, for the reviewer
    <out>/export.json                   the export's id and its cases (import takes no other folder)

A reviewer saves the corrected label as ``<out>/<case_id>/revised.nii.gz`` (same grid and
codes); ``import_review`` (in :mod:`curator.pseudolabel.review_import`) writes it as the case's ``revised`` layer and returns ``labels``
rows with origin ``revised`` (stored in the private table ``_labels_revised``). Only the codes
the reviewer changed from what the export wrote (``export.json`` holds a checksum of each
code's exported mask) become revised labels: a code left as exported keeps its state in the
store as it is at import — a pseudo label, re-computed if pseudolabel re-ran in between —
unless the reviewer accepted it (worklist.csv's ``accept`` column: ``all`` or term ids), which
makes it a revised label as exported.

Cases already reviewed (a revision imported, and every flagged term revised or accepted) are
left out of later exports: the attention ranking does not change when a revision comes in. A
case reviewed in part is exported again, from its revision, for the rest (worklist.csv's
``to_review``). Duplicates dedup dropped are never exported. ``include_reviewed=True``
exports them again, with their revision as ``revised.nii.gz`` to edit further (a later
import replaces the earlier one).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, InputError
from curator.io.csvtext import formula_safe
from curator.io.fsutil import atomic_path, check_output_dir
from curator.io.nifti import write_nifti
from curator.io.volume import Geometry, Volume
from curator.pseudolabel.outputs import attention_path, read_attention
from curator.pseudolabel.review_checks import check_pseudo_kept
from curator.pseudolabel.review_codes import (
    CODES,
    ORIGINAL,
    PALETTE,
    codes_json,
    export_codes,
    make_read_only,
    original_plane,
    read_codes,
    recoded,
    write_codes,
)
from curator.pseudolabel.review_preview import write_previews
from curator.pseudolabel.review_provenance import case_stamp
from curator.pseudolabel.review_readme import README, README_REVIEWED
from curator.pseudolabel.review_records import (
    RECORD,
    RECORD_FORMAT,
    grid_record,
    layer_digest,
    mask_digest,
    read_manifest,
    read_record,
    revised_copy_path,
    revision_files,
    worklist_rows,
    write_manifest,
)
from curator.pseudolabel.review_select import (
    named_cases,
    select_cases,
    to_review,
    workspace_duplicates,
)
from curator.pseudolabel.review_state import State, case_states, workspace_states
from curator.store import CaseStore

__all__ = ["PALETTE", "ReviewExport", "export_review", "select_cases"]
ExportCodes = dict[tuple[str, ...], int]

log = logging.getLogger("curator")


@dataclass
class ReviewExport:
    folder: Path
    cases: list[str] = field(default_factory=list)
    previews: int = 0
    reviewed: list[str] = field(default_factory=list)  # selected, already reviewed, left out
    reviewed_included: list[str] = field(default_factory=list)  # exported, already reviewed (include_reviewed)
    partial: list[str] = field(default_factory=list)  # exported again: reviewed in part, flagged terms left
    duplicates: dict[str, str] = field(default_factory=dict)  # selected, dropped by dedup, left out: their kept member


def _save_nifti(data: NDArray[Any], geometry: Geometry, dest: Path, case_id: str) -> None:
    """Write a file of the case's export, its header naming the case (import refuses a revision
    whose header names another: a file saved into another case's folder)."""
    write_nifti(dest, Volume(data, geometry), descrip=case_stamp(case_id))


def _code_digests(label: NDArray[Any], codes: dict[str, list[str]]) -> dict[str, str]:
    return {c: mask_digest(label == int(c)) for c in codes}


def _editable(store: CaseStore, codes: ExportCodes | None = None,
              ) -> tuple[dict[str, list[str]], NDArray[Any], NDArray[Any] | None, dict[str, Any]]:
    """(codes, the pseudo plane, the revision to start from or None, the export record) of one
    case, in the export's ``codes`` (:mod:`curator.pseudolabel.review_codes`: one code per term
    in every case of the export; by default this case's own)."""
    codes = export_codes([store]) if codes is None else codes
    values = {int(c): ts for _, vals in store.planes("pseudo") for c, ts in vals.items()}
    plane = recoded(np.asarray(next(iter(store.planes("pseudo")))[0][...]), values, codes)
    mine = codes_json({tuple(ts): codes[tuple(ts)] for ts in values.values()})
    shown = None
    if "revised" in store.layers():  # the revised terms, under the export's codes of the same terms,
        by_terms = {tuple(ts): int(c) for c, ts in mine.items()}  # over the pseudo labels left as they were
        shown = plane.copy()
        pairs = [(np.asarray(arr[...]), int(rc), by_terms[tuple(rts)]) for arr, vals in store.planes("revised")
                 for rc, rts in vals.items() if tuple(rts) in by_terms]
        for _, _, pc in pairs:
            shown[shown == pc] = 0
        for rev, rc, pc in pairs:
            shown[rev == rc] = pc
    start = plane if shown is None else shown
    record = {"format": RECORD_FORMAT, "case_id": store.path.stem, "codes": mine,
              "start": "pseudo.nii.gz" if shown is None else "revised.nii.gz",
              "start_masks": _code_digests(start, mine), "pseudo_masks": _code_digests(plane, mine),
              "pseudo_layer": layer_digest(store, "pseudo"), "revised_layer": layer_digest(store, "revised"),
              "grid": grid_record(store.geometry)}
    return mine, plane, shown, record


def _write_editable(store: CaseStore, folder: Path, images: bool, keep_revision: bool = False,
                    codes: ExportCodes | None = None) -> dict[str, Any]:
    """``codes.json`` (the case's codes of the export's ``codes``), ``pseudo.nii.gz`` (and
    ``image.nii.gz``) of one case for a reviewer to edit; a case reviewed before also gets its
    revision as ``revised.nii.gz``, to edit further (unless ``keep_revision``: a reviewer's
    revision of the same export is there); a case whose dataset labels structures itself gets
    them as ``original.nii.gz`` (read-only: a reference, never imported). ``export.json``
    records what was written (returned): per code, a checksum of its exported mask in the label
    the reviewer starts from and in pseudo.nii.gz, and of the store's layers at export."""
    codes = export_codes([store]) if codes is None else codes
    mine, plane, shown, record = _editable(store, codes)
    write_codes(folder, mine)
    cid = store.path.stem
    _save_nifti(plane, store.geometry, folder / "pseudo.nii.gz", cid)
    if shown is not None and not keep_revision:
        _save_nifti(shown, store.geometry, folder / "revised.nii.gz", cid)
    if images:
        _save_nifti(store.physical_image(), store.geometry, folder / "image.nii.gz", cid)  # HU, not stored units
    original = original_plane(store, codes)
    if original is not None:
        _save_nifti(original, store.geometry, folder / ORIGINAL, cid)
        make_read_only(folder / ORIGINAL)
    elif (folder / ORIGINAL).is_file():  # an earlier export's, of labels the store no longer holds
        (folder / ORIGINAL).unlink()
    with atomic_path(folder / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return record


def _check_target(out: Path) -> None:
    """A ``ConfigError`` unless ``out`` is new, empty, or a review export (not a release)."""
    for p in (out, *out.parents):
        if (p / "release.json").is_file():
            raise ConfigError("config_error", "this folder is part of a release (release.json), which `curator "
                              "run` writes and checksums", path=str(out), remedy="export into a new folder")
    if out.is_dir() and any(out.iterdir()) and read_manifest(out) is None and not (out / "worklist.csv").is_file():
        raise ConfigError("config_error", "this folder is not empty and holds no review export (no export.json, "
                          "no worklist.csv)", path=str(out),
                          remedy="export into a new or empty folder, or one `curator review export` wrote")


def _unsafe_to_rewrite(store: CaseStore, folder: Path, codes: ExportCodes) -> bool:
    """Whether the case folder holds a revision this export would overwrite or judge against a
    new record: a revision is kept when the record is unchanged, overwritten only when it is
    exactly the ``revised.nii.gz`` the export writes."""
    files = revision_files(folder)
    if not files or _same_record(store, folder, codes):
        return False
    shown = _editable(store, codes)[2]
    if shown is None or [f.name for f in files] != ["revised.nii.gz"]:
        return True
    try:
        img: Any = nib.load(folder / "revised.nii.gz")
        saved = np.asarray(img.dataobj)
    except Exception:  # noqa: BLE001 - an unreadable file is the reviewer's to keep
        return True
    return not np.array_equal(saved, shown)


def _accept_imported(store: CaseStore, folder: Path, cell: str) -> bool:
    """Whether the case folder's accept (its worklist cell) is what was imported already: its
    revised layer then changed the store's record, which is no revision this export overwrites."""
    from curator.pseudolabel.review_checks import reviewed_before
    from curator.pseudolabel.review_revision import accepted_codes, original_terms, same_as_imported

    try:
        accepted = accepted_codes(cell, folder)
    except InputError:
        return False
    return reviewed_before(store) and same_as_imported(store, folder, original_terms(store), accepted)


def _same_record(store: CaseStore, folder: Path, codes: ExportCodes) -> bool:
    """Whether the case folder's record is the one an export of the store would write now (its
    labels did not change since it was exported)."""
    try:
        old = read_record(folder)
    except InputError:
        return False
    record = _editable(store, codes)[3]  # (a record by an older curator holds no grid)
    return old == record or ("grid" not in old and {**old, "grid": record["grid"]} == record)


def _choose(workspace: Path, attention: list[dict[str, Any]], res: ReviewExport, fraction: float | None,
            top: int | None, include_reviewed: bool, cases: Sequence[str] | None,
            states: dict[tuple[str, str], State] | None, dropped: dict[str, str] | None,
            ) -> tuple[list[str], set[str], dict[tuple[str, str], State], dict[str, list[str]]]:
    """(the cases to export, those reviewed before, the label states, each case's terms to review):
    the named ``cases``, else by rank; never a duplicate dedup ``dropped`` (counted in ``res``); a
    case reviewed before only with ``include_reviewed`` or while a flagged term of it is not
    reviewed (``res.partial``)."""
    dropped = workspace_duplicates(workspace) if dropped is None else dropped
    if cases:
        if top is not None or fraction is not None:
            raise ConfigError("config_error", "give --case, or --top / --fraction, not both",
                              remedy="--case exports the cases named whatever their rank")
        chosen = named_cases(attention, cases, dropped)
    else:
        chosen = select_cases(attention, fraction, top)
        res.duplicates = {c: dropped[c] for c in chosen if c in dropped}  # those the selection held
        if top is not None and not include_reviewed:  # the top N cases not reviewed yet (and those passed over)
            chosen = select_cases(attention, None, len({r["case_id"] for r in attention}) or 1)
        chosen = [c for c in chosen if c not in dropped]
    if states is None:
        states = workspace_states(workspace, chosen)
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in attention:
        by_case.setdefault(r["case_id"], []).append(r)
    left = {c: to_review(c, by_case[c], states) for c in chosen}
    reviewed = {c for c in chosen if revised_copy_path(workspace / "stores" / f"{c}.zarr").is_file()
                or "revised" in CaseStore(workspace / "stores" / f"{c}.zarr").layers()}
    done = {c for c in reviewed if not left[c]}  # every flagged term revised or accepted
    if not include_reviewed and not cases:
        fresh = [c for c in chosen if c not in done][:top]  # (top None: every one)
        last = chosen.index(fresh[-1]) if fresh and top is not None else len(chosen) - 1
        res.reviewed = [c for c in chosen[:last + 1] if c in done]  # ranked above the last one exported
        chosen = fresh
    res.reviewed_included = [c for c in chosen if c in reviewed]
    res.partial = [c for c in res.reviewed_included if c not in done]
    return chosen, reviewed, states, left


def _write_root(out: Path, codes: ExportCodes, records: dict[str, dict[str, Any]], workspace: Path,
                cases: list[str]) -> None:
    """The export's own files: export.json, codes.json and colour tables of every code, README.txt."""
    from curator.workspace import Workspace

    write_manifest(out, records, Workspace(workspace).key)
    write_codes(out, codes_json(codes))
    with atomic_path(out / "README.txt") as tmp:
        started = [c for c in cases if records[c]["start"] == "revised.nii.gz"]
        extra = README_REVIEWED.format(cases="\n".join(f"  {c}" for c in started)) if started else ""
        tmp.write_text(README.format(reviewed=extra), encoding="utf-8")


def export_review(workspace: Path, attention: list[dict[str, Any]], out: Path, *, fraction: float | None = None,
                  top: int | None = None, images: bool = True, editable: bool = True,
                  include_reviewed: bool = False, states: dict[tuple[str, str], State] | None = None,
                  cases: Sequence[str] | None = None, dropped: dict[str, str] | None = None,
                  ) -> ReviewExport:
    """Write previews, editable labels and ``worklist.csv`` for the selected cases (see the
    module docstring): the ``cases`` named, whatever their rank, else the flagged ones or the
    top ``fraction`` / ``top``; those reviewed already only with ``include_reviewed`` or while
    a flagged term of theirs is not reviewed (worklist.csv's ``to_review``). A duplicate dedup
    dropped (``dropped``: ``{case: kept member}``, by default the workspace's ``duplicates``
    table) is never exported: it is not released.

    ``editable=False`` writes only the worklist and the previews (what a release carries:
    the editable files come from ``curator review export`` on the workspace). ``states``: each
    (case, term)'s review state (:mod:`curator.pseudolabel.review_state`; a release passes its
    own), else read from the workspace. A preview shows the label a release uses (original >
    revised > pseudo), so a reviewed case's shows its revision, not the pseudo label it replaced.
    """
    res = ReviewExport(check_output_dir(out))
    if editable:
        _check_target(out)
    chosen, reviewed, states, left = _choose(workspace, attention, res, fraction, top, include_reviewed, cases,
                                             states, dropped)
    for c, kept_as in sorted(res.duplicates.items()):
        log.debug("review: %s left out: a duplicate dedup dropped (its group keeps %s), not released", c, kept_as)
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in attention:
        by_case.setdefault(r["case_id"], []).append(r)
    stores = {c: CaseStore(workspace / "stores" / f"{c}.zarr") for c in chosen}
    codes = export_codes(stores.values(), read_codes(out / CODES)) if editable else {}
    kept: set[str] = set()
    earlier = worklist_rows(out) if editable else []  # a worklist of this folder, its accept marks
    accepts = {r.get("case_id", ""): r["accept"] for r in earlier if r.get("accept")}
    if editable:  # before anything is written: a reviewer's revision not imported yet is not overwritten
        check_pseudo_kept(out, chosen)
        unsafe = []
        for cid in chosen:
            folder, store = out / cid, stores[cid]
            if _unsafe_to_rewrite(store, folder, codes) or (
                    cid in accepts and not _same_record(store, folder, codes)
                    and not _accept_imported(store, folder, accepts[cid])):
                unsafe.append(cid)
            elif revision_files(folder):
                kept.add(cid)
        if unsafe:
            raise ConfigError("config_error", f"case folder(s) {', '.join(unsafe)} hold a revision not imported yet (a "
                              "revised file, or an accept in worklist.csv), which this export would overwrite (or "
                              "judge against labels that changed since)",
                              path=str(out), remedy="import the revisions first (`curator review import "
                              "pipeline.yaml FOLDER`), or export into another folder")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    records: dict[str, dict[str, Any]] = {}
    for cid in chosen:
        rows = sorted(by_case[cid], key=lambda r: (-r["attention_size"], r["term_id"]))
        store = stores[cid]
        folder = out / cid
        folder.mkdir(exist_ok=True)
        amap = read_attention(attention_path(workspace, cid))
        if editable:
            records[cid] = _write_editable(store, folder, images, keep_revision=cid in kept, codes=codes)
        files = write_previews(store, amap, rows, folder)
        res.previews += len(files)
        lines.append({"review_rank": rows[0]["review_rank"], "case_id": cid, "dataset": rows[0]["dataset"],
                      "case_attention_size": round(rows[0]["case_attention_size"], 4),
                      "terms": ";".join(f"{r['term_id']}:{r['attention_size']:.3f}" for r in rows),
                      "label_states": case_states(cid, [r["term_id"] for r in rows], states),
                      "to_review": ";".join(left[cid]),
                      "previews": ";".join(f"{cid}/{f}" for f in files),
                      "pseudo_label": f"{cid}/pseudo.nii.gz" if editable else "",
                      "open_label": f"{cid}/{records[cid]['start']}" if editable else "",
                      "original_label": f"{cid}/{ORIGINAL}" if editable and (folder / ORIGINAL).is_file() else "",
                      "save_revised_as": f"{cid}/revised.nii.gz" if editable else "",
                      "reviewed": cid in reviewed, "accept": accepts.get(cid, "")})
        res.cases.append(cid)
    # an accept of an earlier export into this folder, for a case not exported now: its row stays
    # (its folder and its listing in export.json stay too, so it still imports)
    lines += [r for r in earlier if r.get("accept") and r.get("case_id") not in res.cases and (out / r.get("case_id", "")).is_dir()]
    if editable:
        _write_root(out, codes, records, workspace, res.cases)
    with atomic_path(out / "worklist.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        cols = ["review_rank", "case_id", "dataset", "case_attention_size", "terms", "label_states", "to_review",
                "previews", "pseudo_label", "open_label", "original_label", "save_revised_as", "reviewed",
                ] + (["accept"] if editable else [])
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()  # for people, opened in a spreadsheet: no cell may run as a formula
        w.writerows({k: formula_safe(v) for k, v in r.items()} for r in lines)
    return res
