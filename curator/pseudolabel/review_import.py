"""The review loop's second half: ``curator review import`` brings revised label files back.

A reviewer saves the corrected label as ``<out>/<case_id>/revised.nii.gz`` in a folder written
by :func:`curator.pseudolabel.review.export_review` (same grid and codes); :func:`import_review`
writes it as the case's ``revised`` layer and returns ``labels`` rows with origin ``revised``
(stored in the private table ``_labels_revised``). Only the codes the reviewer changed from what
the export wrote become revised labels. The workspace keeps its own copy of each imported
revision (``<workspace>/revised/<case_id>.npz``), from which preprocess rebuilds the layer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, InputError, LabelError
from curator.pseudolabel.review import (
    check_listed,
    mask_digest,
    read_manifest,
    read_record,
    revision_files,
    save_revised_copy,
)
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore

log = logging.getLogger("curator")


def _merge_revision(store: CaseStore, data: NDArray[Any], codes: dict[int, list[str]],
                    edited: dict[int, list[str]], annotated: set[str]) -> tuple[NDArray[Any], dict[int, list[str]]]:
    """The new revised plane and its codes: the ``edited`` codes of ``data`` over the store's
    earlier revision of every other term (kept under the export's code for the same terms where
    there is one; where both claim a voxel, this edit wins)."""
    earlier: list[tuple[list[str], NDArray[np.bool_]]] = []
    if "revised" in store.layers():
        now = {t for ts in edited.values() for t in ts} | annotated
        for arr, vals in store.planes("revised"):
            a = np.asarray(arr[...])
            earlier += [(rest, a == rc) for rc, rts in vals.items() if (rest := [t for t in rts if t not in now])]
    values: dict[int, list[str]] = dict(edited)
    spare = iter(range(max([*codes, 0]) + 1, 1 << 16))
    placed: list[tuple[int, NDArray[np.bool_]]] = []
    for ts, mask in earlier:
        code = next((c for c, cts in codes.items() if cts == ts and c not in values), None) or next(spare)
        values[code] = ts
        placed.append((code, mask))
    merged = np.zeros(data.shape, np.uint8 if max([*values, 0]) < 256 else np.uint16)
    for code, mask in placed:
        merged[mask] = code
    for c in edited:
        merged[data == c] = c
    return merged, values


def import_case(store: CaseStore, folder: Path, annotated: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Write ``folder/revised.nii.gz`` as the store's revised layer; (labels rows, terms) of it."""
    from curator.io.formats import read_volume

    path = revision_file(folder)
    try:
        codes = {int(k): list(v) for k, v in json.loads((folder / "codes.json").read_text()).items()}
    except (OSError, ValueError) as e:
        raise InputError("revised_label_invalid", "codes.json is missing or unreadable", path=str(folder),
                         remedy="keep the codes.json that `curator review export` wrote next to the label") from e
    grid = store.geometry
    try:  # a file from outside: no more voxels than the grid it must be on (a small .nii.gz can claim 4 GB)
        vol = read_volume(path, role="label", max_voxels=grid.n_voxels)
    except InputError as e:
        if e.kind != "too_large":
            raise
        raise LabelError("revised_label_invalid", f"the revised label is not on the case's grid ({e.detail}; the "
                         f"grid {tuple(grid.shape)} has {grid.n_voxels:,})", path=str(path),
                         remedy="save the revision on the grid of pseudo.nii.gz") from e
    why = vol.geometry.mismatch(grid, tol_mm=0.01)
    if why:
        raise LabelError("revised_label_invalid", f"the revised label is not on the case's grid ({why})",
                         path=str(path), remedy="save the revision on the grid of pseudo.nii.gz")
    record = read_record(folder)
    exported = {int(c): list(ts) for c, ts in record["codes"].items()}
    changed = sorted(c for c, ts in codes.items() if exported.get(c) != ts)
    if changed:  # a code or term the export did not write would enter the release as a label unchecked
        raise InputError("revised_label_invalid", "codes.json differs from the one the export wrote (code "
                         + ", ".join(f"{c}: {codes[c]}" + (f", exported as {exported[c]}" if c in exported else
                                                             ", not a code of the case's pseudo labels")
                                     for c in changed) + ")", path=str(folder / "codes.json"),
                         remedy="keep the codes.json that `curator review export` wrote; paint with its codes only")
    data = np.asarray(vol.array)
    if data.dtype.kind == "f" and not np.all(np.equal(np.mod(data, 1), 0)):
        raise LabelError("label_not_integer", "the revised label holds non-integer values", path=str(path))
    # the values as written, before any cast (257 would wrap to 1 in uint8: another term's code)
    undeclared = sorted(set(np.unique(data).astype(np.int64).tolist()) - set(codes) - {0})
    if undeclared:
        raise LabelError("revised_label_invalid", f"values {undeclared} are not in codes.json", path=str(path),
                         remedy="use only the codes of codes.json (0 = background)")
    data = data.astype(np.uint8 if max(codes, default=0) < 256 else np.uint16)
    keep = {c: [t for t in ts if t not in annotated] for c, ts in codes.items()}
    # a code the reviewer left exactly as exported keeps its state: only what was edited becomes
    # a person's label (and joins QC's reference cohorts, and outranks pseudo labels). "As
    # exported" is the export's record, not the store's pseudo layer now: pseudolabel may have
    # re-run since, and every code would then differ from it
    # A reviewed case is exported with its revision as revised.nii.gz to start from; a code equal
    # to that, or to the exported pseudo.nii.gz (the reviewer opened that instead), was not edited
    # now: it keeps the store's state — an earlier revision stays, it is not reverted.
    start, pseudo_masks = record["start_masks"], record.get("pseudo_masks", record["start_masks"])
    edited = {c: ts for c, ts in keep.items()
              if ts and mask_digest(data == c) not in (start.get(str(c)), pseudo_masks.get(str(c)))}
    merged, values = _merge_revision(store, data, codes, edited, annotated)
    save_revised_copy(store, merged, values)  # first: the store's layer can be rebuilt from it, not the reverse
    store.write_layer("revised", [(merged, values)], {"origin": "revised", "source": "curator review import"})
    ml = store.geometry.voxel_volume_mm3 / 1000.0
    rows = []
    terms = [t for ts in values.values() for t in ts]
    for t in terms:
        n = int(np.isin(merged, [c for c, ts in values.items() if t in ts]).sum())
        rows.append({"case_id": store.path.stem, "term_id": t, "term": term_name(t), "origin": "revised",
                     "layer": "revised", "derived": False, "annotated": False, "present": n > 0, "voxels": n,
                     "volume_ml": n * ml, "modality": store.attrs.get("modality")})
    return rows, terms


READABLE = ("revised.nii.gz", "revised.nii", "revised.nrrd")


def revision_file(folder: Path) -> Path:
    """The one revision file of a case folder, or an ``InputError`` saying why it cannot be read:
    several, a 3D Slicer segmentation (``.seg.nrrd``), or a name import does not know."""
    files = revision_files(folder)
    names = [f.name for f in files]
    if len(files) > 1:
        raise InputError("revised_label_invalid", f"the case folder holds several revisions ({', '.join(names)})",
                         path=str(folder), remedy="keep only the one to import, saved as revised.nii.gz")
    path = files[0] if files else folder / "revised.nii.gz"
    if path.name.lower().endswith(".seg.nrrd"):
        raise InputError("revised_label_invalid", f"{path.name} is a 3D Slicer segmentation: its segments may be "
                         "layers and its values Slicer's, not the codes of codes.json", path=str(path),
                         remedy="in Slicer export the segmentation as a labelmap with the colour table "
                                "labels_slicer.txt (Segmentations > Export to files, or right-click > Export "
                                "visible segments to binary labelmap, then save it) as revised.nii.gz")
    if path.name not in READABLE:
        raise InputError("revised_label_invalid", f"{path.name!r} is not a name import reads", path=str(path),
                         remedy="save the revision as revised.nii.gz (revised.nii and revised.nrrd are read too)")
    return path


def unrevised_cases(folder: Path) -> list[str]:
    """The case folders of an export (those with codes.json) that hold no revision yet."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "codes.json").is_file()
                  and not revision_files(p))


def revised_cases(folder: Path) -> list[Path]:
    """The case folders of the review export ``folder`` that hold a revision (``revised.nii.gz``,
    or any file named ``revised*``: :func:`revision_file` says why one cannot be read; none yet
    is no error). A ``ConfigError`` saying what was expected when ``folder`` is not a
    review export, or one written without editable labels (a release's ``review/`` folder)."""
    if not folder.is_dir():
        raise ConfigError("config_error", "no such folder", path=str(folder),
                          remedy="give the folder `curator review export` wrote")
    cases = sorted(p for p in folder.iterdir() if p.is_dir())
    revised = [p for p in cases if revision_files(p)]
    if revised or any((p / "codes.json").is_file() for p in cases):
        return revised
    save = "then save each corrected label as <case>/revised.nii.gz"
    if (folder / "worklist.csv").is_file():
        raise ConfigError("config_error", "this review export holds previews only, no labels to edit (no "
                          "<case>/codes.json)", path=str(folder),
                          remedy=f"export editable labels from the workspace (`curator review export pipeline.yaml "
                                 f"-o FOLDER`), {save}")
    raise ConfigError("config_error", "not a review export: it holds no worklist.csv, no <case>/codes.json and no "
                      "<case>/revised.nii.gz", path=str(folder),
                      remedy=f"give the folder `curator review export` wrote, {save}")


def record_import_problems(workspace: Any, done: list[str], problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write ``problems__review``: this import's rows, plus the earlier imports' rows of cases
    this one did not touch (a refusal stays until that case imports); returns what was written.
    An earlier row of a folder that is no case of the workspace (renamed, since renamed back or
    removed) is not kept: nothing could ever import it and clear it, and it would reach every
    release; while the folder is there, each import reports it again."""
    from curator.schema import to_arrow

    old = workspace.read_table("problems__review")
    cases = workspace.read_table("cases", columns=["case_id"])
    known = set(cases.column("case_id").to_pylist()) if cases is not None else set()
    touched = set(done) | {p["case_id"] for p in problems}
    kept = [r for r in (old.to_pylist() if old is not None else [])
            if r["case_id"] in known and r["case_id"] not in touched]
    rows = kept + problems
    workspace.write_table("problems__review", to_arrow("problems", rows))
    return rows


def check_has_cases(workspace: Any) -> None:
    """A ``ConfigError`` when the workspace holds no cases (never built: nothing to import into)."""
    cases = workspace.read_table("cases")
    if cases is None or cases.num_rows == 0:
        raise ConfigError("config_error", "this workspace holds no cases: run the pipeline first",
                          path=str(workspace.root), remedy="check that pipeline.yaml is the one the review "
                          "was exported from (its `workspace:`), or run `curator run pipeline.yaml` first")


def import_review(workspace: Any, folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Import every ``<folder>/<case_id>/revised.nii.gz``; returns (imported case ids, problem rows).
    A folder that is not a review export is refused (:func:`revised_cases`).

    ``workspace`` is a :class:`~curator.workspace.Workspace`; the ``_labels_revised`` table is
    rewritten with the new rows replacing those of the imported cases.
    """
    from curator.errors import CuratorError
    from curator.runner.stage import problem_row
    from curator.schema import to_arrow

    revised = revised_cases(folder)
    check_has_cases(workspace)
    manifest = read_manifest(folder)
    cases = workspace.read_table("cases")
    dataset = {r["case_id"]: r["dataset"] for r in (cases.to_pylist() if cases is not None else [])}
    old = workspace.read_table("_labels_revised")
    rows = old.to_pylist() if old is not None else []
    done: list[str] = []
    problems: list[dict[str, Any]] = []
    for case_dir in revised:
        cid = case_dir.name
        try:
            check_listed(case_dir, manifest, workspace.key)
            if cid not in dataset:
                raise InputError("revised_label_invalid", f"no case {cid!r} in this workspace",
                                 path=str(case_dir), remedy="keep the case folder names of the export")
            store = CaseStore(workspace.stores_dir / f"{cid}.zarr")
            annotated = set(store.terms("original")) if "original" in store.layers() else set()
            new, _ = import_case(store, case_dir, annotated)
        except CuratorError as e:
            name = revision_files(case_dir)[0].name if len(revision_files(case_dir)) == 1 else "revised.nii.gz"
            problems.append(problem_row("review", e, dataset=dataset.get(cid), case_id=cid,
                                        path=f"review:{cid}/{name}"))
            continue
        rows = [r for r in rows if r["case_id"] != cid] + [{**r, "dataset": dataset[cid]} for r in new]
        done.append(cid)
    workspace.write_table("_labels_revised", to_arrow("labels", rows))
    return done, problems
