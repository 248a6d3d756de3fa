"""The review loop: export the cases most in need of review, import what reviewers revised.

``export_review`` writes, for the top cases of the ``attention`` table::

    <out>/worklist.csv                  rank, case, dataset, attention, terms by attention, each
                                        term's review state (pseudo, or revised / accepted in
                                        round N), files
    <out>/<case_id>/preview_<term>.png  slice of most attention: image, the label a release uses
                                        (green: revised where reviewed, else pseudo), attention
                                        (red outline)
    <out>/<case_id>/pseudo.nii.gz       the pseudo label layer (codes in codes.json), to edit
    <out>/<case_id>/image.nii.gz        the image in physical units (optional)
    <out>/<case_id>/codes.json          label code -> term id
    <out>/<case_id>/labels_itksnap.txt  the codes as an ITK-SNAP label description file
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

Cases already reviewed (a revision was imported) are left out of later exports: the
attention ranking does not change when a revision comes in. ``include_reviewed=True``
exports them again, with their revision as ``revised.nii.gz`` to edit further (a later
import replaces the earlier one).
"""

from __future__ import annotations

import csv
import json
import logging
import math
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
from curator.pseudolabel.review_preview import write_previews
from curator.pseudolabel.review_provenance import case_stamp
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
from curator.pseudolabel.review_state import State, case_states, workspace_states
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore

log = logging.getLogger("curator")


@dataclass
class ReviewExport:
    folder: Path
    cases: list[str] = field(default_factory=list)
    previews: int = 0
    reviewed: list[str] = field(default_factory=list)  # selected, already reviewed, left out
    reviewed_included: list[str] = field(default_factory=list)  # exported, already reviewed (include_reviewed)


def select_cases(attention: list[dict[str, Any]], fraction: float | None, top: int | None) -> list[str]:
    """Case ids by review rank: the ``review`` flag, or the top ``fraction`` / ``top`` cases."""
    if top is not None and fraction is not None:
        raise ConfigError("config_error", "give --fraction or --top, not both")
    if top is not None and top < 1:
        raise ConfigError("config_error", f"--top {top}: give a number of cases, at least 1")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError("config_error", f"--fraction {fraction}: give a share in (0, 1], e.g. 0.05 for 5 %")
    ranks = sorted({(r["review_rank"], r["case_id"], r["case_attention_size"], r["review"]) for r in attention})
    if top is not None:
        return [c for _, c, _, _ in ranks[:top]]
    if fraction is not None:
        k = math.ceil(fraction * len(ranks))
        return [c for _, c, size, _ in ranks[:k] if size > 0]
    return [c for _, c, _, flagged in ranks if flagged]


def _save_nifti(data: NDArray[Any], geometry: Geometry, dest: Path, case_id: str) -> None:
    """Write a file of the case's export, its header naming the case (import refuses a revision
    whose header names another: a file saved into another case's folder)."""
    write_nifti(dest, Volume(data, geometry), descrip=case_stamp(case_id))


# distinct colours for label codes 1, 2, ... (cycled); 0 is background
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40))

README = """Review export written by `curator review export`
=================================================

worklist.csv lists the cases, most in need of review first, with each case's terms by
attention (inconsistency + uncertainty + overlap of the model ensemble, in ml), and in
label_states each term's label as it is now: pseudo (the model's, not reviewed), or revised
(a reviewer changed it) / accepted (a reviewer accepted it) in the case's review round N.

For each case folder:
  preview_<term>.png  the slice of most attention: image, the term's label (green: your earlier
                      revision where the case was reviewed, else the pseudo label), attention
                      (red outline)
  image.nii.gz        the image (physical units: HU for CT)
  pseudo.nii.gz       the pseudo labels to correct; codes.json says which term each value is
  labels_itksnap.txt  the same codes for ITK-SNAP (Segmentation > Import Label Descriptions)
  labels_slicer.txt   and for 3D Slicer (load it as a colour table, then choose it for the
                      segmentation's label map)

To review a case: open image.nii.gz with the label of worklist.csv's open_label column as
its segmentation — pseudo.nii.gz, or revised.nii.gz for a case reviewed before (see below) —
correct it painting only with the codes of codes.json (0 = background), and save the result
in the case's folder as revised.nii.gz, on the same grid (do not crop or resample) — with
Save As: an editor's Save (ITK-SNAP's Ctrl+S) writes over pseudo.nii.gz, which import does
not read as a correction (it says so; rename such a file to revised.nii.gz). Leave
codes.json and export.json as they are, and do not rename the case folders: import takes
only the case folders this export wrote. Only the labels you change become reviewed labels;
a code left exactly as exported stays a pseudo label — saving a file unchanged records nothing.

To record that labels are correct as they are, write in worklist.csv's accept column, on
the case's row: `all` (every structure of the case), or the term ids you checked separated by
`;` (e.g. `liver;spleen`). Accepted labels become reviewed labels as exported (as the file
you opened shows them), with or without a revised.nii.gz; the structures you changed in a
revised.nii.gz are taken as you saved them. A case you neither correct nor accept needs
nothing: it stays on the worklist. Keep the worklist's other columns as they are.

Then: curator review import pipeline.yaml <this folder>
Save as revised.nii.gz (revised.nii and revised.nrrd are read too; a 3D Slicer .seg.nrrd is
not: export the segmentation as a labelmap with labels_slicer.txt and save that).
A revision with values outside codes.json, or on another grid, is refused with the reason;
the other cases are imported. The dataset's own labels are not revised: where a structure
you paint covers one of them, those voxels are left out of it (the import says how many). Re-export a case with --include-reviewed to edit it again.
If the pipeline is re-run on another voxel spacing after this export, this folder's labels are
on the old grid: export again (into a new folder) and revise there.
{reviewed}"""

README_REVIEWED = """
Cases reviewed before (worklist.csv: reviewed = True) hold their earlier revision as
revised.nii.gz, drawn over the pseudo labels left as they were: open revised.nii.gz (not
pseudo.nii.gz, which shows the pseudo labels only), correct it and save it again as
revised.nii.gz. A structure you leave as exported keeps its earlier revision. These cases:
{cases}
"""


def _write_colour_tables(codes: dict[str, list[str]], folder: Path) -> None:
    """``labels_itksnap.txt`` (ITK-SNAP label description file) and ``labels_slicer.txt`` (3D
    Slicer colour table) naming each code of ``codes.json`` by its term(s)."""
    rows = [(int(c), " + ".join(term_name(t) for t in ts), PALETTE[(int(c) - 1) % len(PALETTE)])
            for c, ts in sorted(codes.items(), key=lambda kv: int(kv[0]))]
    snap = ["################################################", "# ITK-SnAP Label Description File",
            "# Columns = IDX -R- -G- -B- -A-- VIS MSH -LABEL-",
            '    0     0    0    0        0  0  0    "Clear Label"']
    snap += [f'{c:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{name.replace(chr(34), chr(39))}"'
             for c, name, (r, g, b) in rows]
    slicer = ["# Color table file written by curator review export", f"# {len(rows) + 1} values",
              "0 background 0 0 0 0"]
    slicer += [f"{c} {name.replace(' ', '_')} {r} {g} {b} 255" for c, name, (r, g, b) in rows]
    for name, lines in (("labels_itksnap.txt", snap), ("labels_slicer.txt", slicer)):
        with atomic_path(folder / name) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _code_digests(label: NDArray[Any], codes: dict[str, list[str]]) -> dict[str, str]:
    return {c: mask_digest(label == int(c)) for c in codes}


def _editable(store: CaseStore) -> tuple[dict[str, list[str]], NDArray[Any], NDArray[Any] | None, dict[str, Any]]:
    """(codes, the pseudo plane, the revision to start from or None, the export record) of one case."""
    codes = {str(c): ts for arr, vals in store.planes("pseudo") for c, ts in vals.items()}
    plane = np.asarray(next(iter(store.planes("pseudo")))[0][...])
    shown = None
    if "revised" in store.layers():  # the revised terms, under the pseudo layer's codes of the same terms,
        by_terms = {tuple(ts): int(c) for c, ts in codes.items()}  # over the pseudo labels left as they were
        shown = plane.copy()
        pairs = [(np.asarray(arr[...]), int(rc), by_terms[tuple(rts)]) for arr, vals in store.planes("revised")
                 for rc, rts in vals.items() if tuple(rts) in by_terms]
        for _, _, pc in pairs:
            shown[shown == pc] = 0
        for rev, rc, pc in pairs:
            shown[rev == rc] = pc
    start = plane if shown is None else shown
    record = {"format": RECORD_FORMAT, "case_id": store.path.stem, "codes": codes,
              "start": "pseudo.nii.gz" if shown is None else "revised.nii.gz",
              "start_masks": _code_digests(start, codes), "pseudo_masks": _code_digests(plane, codes),
              "pseudo_layer": layer_digest(store, "pseudo"), "revised_layer": layer_digest(store, "revised"),
              "grid": grid_record(store.geometry)}
    return codes, plane, shown, record


def _write_editable(store: CaseStore, folder: Path, images: bool, keep_revision: bool = False) -> dict[str, Any]:
    """``codes.json``, ``pseudo.nii.gz`` (and ``image.nii.gz``) of one case for a reviewer to edit;
    a case reviewed before also gets its revision as ``revised.nii.gz``, to edit further (unless
    ``keep_revision``: a reviewer's revision of the same export is there). ``export.json``
    records what was written (returned): per code, a checksum of its exported mask in the label
    the reviewer starts from and in pseudo.nii.gz, and of the store's layers at export."""
    codes, plane, shown, record = _editable(store)
    with atomic_path(folder / "codes.json") as tmp:
        tmp.write_text(json.dumps(codes, indent=1) + "\n")
    _write_colour_tables(codes, folder)
    cid = store.path.stem
    _save_nifti(plane, store.geometry, folder / "pseudo.nii.gz", cid)
    if shown is not None and not keep_revision:
        _save_nifti(shown, store.geometry, folder / "revised.nii.gz", cid)
    if images:
        _save_nifti(store.physical_image(), store.geometry, folder / "image.nii.gz", cid)  # HU, not stored units
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


def _unsafe_to_rewrite(store: CaseStore, folder: Path) -> bool:
    """Whether the case folder holds a revision this export would overwrite or judge against a
    new record: a revision is kept when the record is unchanged, overwritten only when it is
    exactly the ``revised.nii.gz`` the export writes."""
    files = revision_files(folder)
    if not files or _same_record(store, folder):
        return False
    shown = _editable(store)[2]
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
    from curator.pseudolabel.review_import import (
        accepted_codes,
        original_terms,
        reviewed_before,
        same_as_imported,
    )

    try:
        accepted = accepted_codes(cell, folder)
    except InputError:
        return False
    return reviewed_before(store) and same_as_imported(store, folder, original_terms(store), accepted)


def _same_record(store: CaseStore, folder: Path) -> bool:
    """Whether the case folder's record is the one an export of the store would write now (its
    labels did not change since it was exported)."""
    try:
        old = read_record(folder)
    except InputError:
        return False
    record = _editable(store)[3]  # (a record by an older curator holds no grid)
    return old == record or ("grid" not in old and {**old, "grid": record["grid"]} == record)


def export_review(workspace: Path, attention: list[dict[str, Any]], out: Path, *, fraction: float | None = None,
                  top: int | None = None, images: bool = True, editable: bool = True,
                  include_reviewed: bool = False, states: dict[tuple[str, str], State] | None = None,
                  ) -> ReviewExport:
    """Write previews, editable labels and ``worklist.csv`` for the selected cases (those
    reviewed already only with ``include_reviewed``; see the module docstring).

    ``editable=False`` writes only the worklist and the previews (what a release carries:
    the editable files come from ``curator review export`` on the workspace). ``states``: each
    (case, term)'s review state (:mod:`curator.pseudolabel.review_state`; a release passes its
    own), else read from the workspace. A preview shows the label a release uses (original >
    revised > pseudo), so a reviewed case's shows its revision, not the pseudo label it replaced.
    """
    res = ReviewExport(check_output_dir(out))
    if editable:
        _check_target(out)
    chosen = select_cases(attention, fraction, top)
    if top is not None and not include_reviewed:  # the top N cases not reviewed yet (and those passed over)
        chosen = select_cases(attention, None, len({r["case_id"] for r in attention}) or 1)
    reviewed = {c for c in chosen if revised_copy_path(workspace / "stores" / f"{c}.zarr").is_file()
                or "revised" in CaseStore(workspace / "stores" / f"{c}.zarr").layers()}
    if not include_reviewed:
        fresh = [c for c in chosen if c not in reviewed][:top]  # (top None: every one)
        last = chosen.index(fresh[-1]) if fresh and top is not None else len(chosen) - 1
        res.reviewed = [c for c in chosen[:last + 1] if c in reviewed]  # ranked above the last one exported
        chosen = fresh
    res.reviewed_included = [c for c in chosen if c in reviewed]
    if states is None:
        states = workspace_states(workspace, chosen)
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in attention:
        by_case.setdefault(r["case_id"], []).append(r)
    kept: set[str] = set()
    earlier = worklist_rows(out) if editable else []  # a worklist of this folder, its accept marks
    accepts = {r.get("case_id", ""): r["accept"] for r in earlier if r.get("accept")}
    if editable:  # before anything is written: a reviewer's revision not imported yet is not overwritten
        check_pseudo_kept(out, chosen)
        unsafe = []
        for cid in chosen:
            folder, store = out / cid, CaseStore(workspace / "stores" / f"{cid}.zarr")
            if _unsafe_to_rewrite(store, folder) or (cid in accepts and not _same_record(store, folder)
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
        store = CaseStore(workspace / "stores" / f"{cid}.zarr")
        folder = out / cid
        folder.mkdir(exist_ok=True)
        amap = read_attention(attention_path(workspace, cid))
        if editable:
            records[cid] = _write_editable(store, folder, images, keep_revision=cid in kept)
        files = write_previews(store, amap, rows, folder)
        res.previews += len(files)
        lines.append({"review_rank": rows[0]["review_rank"], "case_id": cid, "dataset": rows[0]["dataset"],
                      "case_attention_size": round(rows[0]["case_attention_size"], 4),
                      "terms": ";".join(f"{r['term_id']}:{r['attention_size']:.3f}" for r in rows),
                      "label_states": case_states(cid, [r["term_id"] for r in rows], states),
                      "previews": ";".join(f"{cid}/{f}" for f in files),
                      "pseudo_label": f"{cid}/pseudo.nii.gz" if editable else "",
                      "open_label": f"{cid}/{records[cid]['start']}" if editable else "",
                      "save_revised_as": f"{cid}/revised.nii.gz" if editable else "",
                      "reviewed": cid in reviewed, "accept": accepts.get(cid, "")})
        res.cases.append(cid)
    # an accept of an earlier export into this folder, for a case not exported now: its row stays
    # (its folder and its listing in export.json stay too, so it still imports)
    lines += [r for r in earlier if r.get("accept") and r.get("case_id") not in res.cases and (out / r.get("case_id", "")).is_dir()]
    if editable:
        from curator.workspace import Workspace

        write_manifest(out, records, Workspace(workspace).key)
        with atomic_path(out / "README.txt") as tmp:
            started = [c for c in res.cases if records[c]["start"] == "revised.nii.gz"]
            extra = README_REVIEWED.format(cases="\n".join(f"  {c}" for c in started)) if started else ""
            tmp.write_text(README.format(reviewed=extra), encoding="utf-8")
    with atomic_path(out / "worklist.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        cols = ["review_rank", "case_id", "dataset", "case_attention_size", "terms", "label_states", "previews",
                "pseudo_label", "open_label", "save_revised_as", "reviewed"] + (["accept"] if editable else [])
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()  # for people, opened in a spreadsheet: no cell may run as a formula
        w.writerows({k: formula_safe(v) for k, v in r.items()} for r in lines)
    return res


