"""Reading back what a reviewer saved in a review export: a case folder's revision file
(:func:`read_revision`: on the case's grid, with the export's codes, and which codes were edited
or accepted), merged over the revision held (:func:`merge_revision`), compared with the revision
imported already (:func:`same_as_imported`, :func:`pseudo_over_imported`); the codes worklist.csv's
``accept`` column names (:func:`accepted_codes`) and the case folders holding a revision
(:func:`revised_cases`). :mod:`curator.pseudolabel.review_import` writes what they read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, CuratorError, InputError, LabelError
from curator.ingest.core import some
from curator.io.volume import Geometry
from curator.pseudolabel.review_checks import (
    as_reviewers_file,
    clip_to_originals,
    declared_shape,
    where,
    wrong_case,
)
from curator.pseudolabel.review_provenance import STAMP, case_stamp, stamped_case
from curator.pseudolabel.review_records import (
    ACCEPT_ALL,
    exported_grid,
    load_revised_copy,
    mask_digest,
    read_record,
    revision_file,
    revision_files,
)
from curator.store import CaseStore

ON_GRID = ("check first that this file belongs to this case (a label saved from another case's folder is on that "
           "case's grid); if it does, save the revision on the grid of pseudo.nii.gz: open pseudo.nii.gz (or the "
           "revised.nii.gz the export wrote) as the segmentation of image.nii.gz and save it as revised.nii.gz "
           "without cropping, resampling or reorienting it (for a file of this case, copying pseudo.nii.gz's header "
           "— shape, spacing, origin, direction — onto it does the same)")


def merge_revision(before: list[tuple[Any, dict[int, list[str]]]], data: NDArray[Any], codes: dict[int, list[str]],
                   edited: dict[int, list[str]], annotated: set[str]) -> tuple[NDArray[Any], dict[int, list[str]]]:
    """The new revised plane and its codes: the ``edited`` codes of ``data`` over the earlier
    revision ``before`` (the store's revised planes) of every other term (kept under the export's
    code for the same terms where there is one; where both claim a voxel, this edit wins)."""
    earlier: list[tuple[list[str], NDArray[np.bool_]]] = []
    now = {t for ts in edited.values() for t in ts} | annotated
    for arr, vals in before:
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


def read_revision(folder: Path, grid: Geometry, annotated: set[str], accepted: frozenset[int] = frozenset(),
                  ) -> tuple[NDArray[Any], dict[int, list[str]], dict[int, list[str]], set[int]]:
    """(the revision of ``folder`` on ``grid``, its codes, the codes to import — those the reviewer
    edited, and the ``accepted`` ones as they are —, the codes edited), or the error saying why it
    cannot be imported. A case accepted without a revision file is read from its ``pseudo.nii.gz``,
    which must be as the export wrote it."""
    from curator.io.formats import read_volume

    from_export = accepted and not revision_files(folder)
    if from_export and read_record(folder).get("start", "pseudo.nii.gz") != "pseudo.nii.gz":
        raise InputError("review_accept_invalid", "worklist.csv accepts this case, reviewed before, but its "
                         "revised.nii.gz (the export's, holding the earlier revision) is gone", path=str(folder),
                         remedy="export the case again with --include-reviewed and accept it there")
    path = folder / "pseudo.nii.gz" if from_export else revision_file(folder)
    stamped = stamped_case(path)  # the case the export wrote the file for, while its header says so
    if stamped is not None and stamped != case_stamp(folder.name)[len(STAMP):]:
        raise wrong_case(path, stamped, folder.name)
    try:
        codes = {int(k): list(v) for k, v in json.loads((folder / "codes.json").read_text()).items()}
    except (OSError, ValueError) as e:
        raise InputError("revised_label_invalid", "codes.json is missing or unreadable", path=str(folder),
                         remedy="keep the codes.json that `curator review export` wrote next to the label") from e
    try:  # a file from outside: no more voxels than the grid it must be on (a small .nii.gz can claim 4 GB)
        vol = read_volume(path, role="label", max_voxels=grid.n_voxels)
    except CuratorError as e:
        if e.kind != "too_large":  # empty, truncated, 4-D ...: the reviewer saves it again, nothing to download
            raise as_reviewers_file(e) from e
        shape = declared_shape(path)
        said = (f"shape {shape} vs {tuple(grid.shape)}" if shape is not None else
                f"more voxels than the {tuple(grid.shape)} of the case's grid")
        raise LabelError("revised_label_invalid", f"the revised label is not on the case's grid ({said}: the "
                         "revision vs pseudo.nii.gz)", path=str(path), remedy=ON_GRID) from e
    as_saved = vol.array  # the voxels in the file's own index order, where a reviewer finds them
    if vol.geometry.mismatch(grid, tol_mm=0.01):  # axes permuted or flipped, the same voxel centres: re-indexed
        if grid.axis_map(vol.geometry, tol_mm=0.01) is None:  # as ingest does for a dataset's labels
            raise LabelError("revised_label_invalid", "the revised label is not on the case's grid "
                             f"({vol.geometry.mismatch(grid, tol_mm=0.01)}: the revision vs pseudo.nii.gz)",
                             path=str(path), remedy=ON_GRID)
        vol = vol.on_grid(grid, tol_mm=0.01)
    record = read_record(folder)
    exported = {int(c): list(ts) for c, ts in record["codes"].items()}
    differ = sorted(c for c, ts in codes.items() if exported.get(c) != ts)
    if differ:  # a code or term the export did not write would enter the release as a label unchecked
        raise InputError("revised_label_invalid", "codes.json differs from the one the export wrote (code "
                         + ", ".join(f"{c}: {codes[c]}" + (f", exported as {exported[c]}" if c in exported else
                                                             ", not a code of the case's pseudo labels")
                                     for c in differ) + ")", path=str(folder / "codes.json"),
                         remedy="keep the codes.json that `curator review export` wrote; paint with its codes only")
    data = np.asarray(vol.array)
    if data.dtype.kind == "f" and not np.all(np.equal(np.mod(data, 1), 0)):
        raise LabelError("label_not_integer", "the revised label holds non-integer values", path=str(path))
    # the values as written, before any cast (257 would wrap to 1 in uint8: another term's code)
    undeclared = sorted(set(np.unique(data).astype(np.int64).tolist()) - set(codes) - {0})
    if undeclared:  # a few of them: the image saved as the revision listed each of its 2,000 HU values
        image = (f" — {len(undeclared):,} distinct values: it looks like an image (image.nii.gz?), not a label map"
                 if len(undeclared) > 64 else "")
        stray = "" if image else f": {where(np.isin(np.asarray(as_saved), undeclared))}"
        raise LabelError("revised_label_invalid", f"values {some(undeclared, 12)} are not in codes.json{stray}{image}",
                         path=str(path), remedy="use only the codes of codes.json (0 = background): paint those "
                         "voxels with a code of codes.json, or erase them"
                         + ("; save the segmentation, not the image, as revised.nii.gz" if image else ""))
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
    changed = {c for c, ts in keep.items()
               if ts and mask_digest(data == c) not in (start.get(str(c)), pseudo_masks.get(str(c)))}
    if from_export and changed:  # an edit saved over pseudo.nii.gz: accepting it would take it unseen
        raise InputError("review_accept_invalid", "worklist.csv accepts this case, and its pseudo.nii.gz was "
                         "changed after the export (no revised.nii.gz was saved)", path=str(path),
                         remedy="rename pseudo.nii.gz to revised.nii.gz and import again (the codes left as "
                                "exported and accepted are taken as they are)")
    # an accepted code is a reviewer's label as exported: the start file's (an earlier revision
    # over the pseudo labels left as they were), or the revision's code where it is unchanged
    edited = {c: ts for c, ts in keep.items() if ts and (c in changed or c in accepted)}
    return data, codes, edited, changed


def held_masks(planes: list[tuple[Any, dict[int, list[str]]]]) -> dict[str, NDArray[np.bool_]]:
    """term -> its mask in the revised ``planes``."""
    out: dict[str, NDArray[np.bool_]] = {}
    for arr, vals in planes:
        a = np.asarray(arr[...])
        for c, ts in vals.items():
            for t in ts:
                out[t] = out[t] | (a == c) if t in out else a == c
    return out


def pseudo_over_revision(data: NDArray[Any], codes: dict[int, list[str]], record: dict[str, Any],
                         annotated: set[str], accepted: frozenset[int], held: dict[str, NDArray[np.bool_]],
                         store: CaseStore | None) -> list[str]:
    """The terms whose code in the revision ``data`` is the exported pseudo label (the record's
    checksum) while the revision ``held`` differs from it: a code left as exported keeps the
    revision, so such a file does not put the pseudo label back (``store``: clip as an import does)."""
    pseudo = record.get("pseudo_masks") or {}
    same = {c: [t for t in ts if t not in annotated and t in held] for c, ts in codes.items()
            if c not in accepted and mask_digest(data == c) == pseudo.get(str(c))}
    same = {c: ts for c, ts in same.items() if ts}
    if not same:
        return []
    plane = np.where(np.isin(data, list(same)), data, 0)
    if store is not None:
        clip_to_originals(store, plane, same)
    return sorted(t for c, ts in same.items() for t in ts if not np.array_equal(plane == c, held[t]))


def original_terms(store: CaseStore) -> set[str]:
    """The terms the dataset itself labels in the case (its ``original`` layer): a revision leaves them."""
    return set(store.terms("original"))  # none when the store has no original layer


def _term_masks(plane: NDArray[Any], values: dict[int, list[str]]) -> dict[tuple[str, ...], NDArray[np.bool_]]:
    return {tuple(ts): plane == c for c, ts in values.items()}


def same_as_imported(store: CaseStore, folder: Path, annotated: set[str], accepted: frozenset[int] = frozenset(),
                     ) -> bool:
    """Whether importing ``folder``'s revision would give the revision imported already: the
    workspace's copy of it (on the grid it was imported on), merged with the revision as an
    import does, is that copy — the same folder imported again, before or after preprocess
    rebuilt the store on another grid. False when there is no copy, the folder was exported on
    another grid than the copy's, or its revision cannot be read (import says why)."""
    copy = load_revised_copy(store.path)
    if copy is None:
        return False
    plane, affine, values = copy
    grid = Geometry.from_affine(tuple(plane.shape), affine)
    try:
        exported = exported_grid(folder, read_record(folder))
        if exported is None or exported.mismatch(grid, tol_mm=0.01):
            return False
        data, codes, edited, _ = read_revision(folder, grid, annotated, accepted)
    except CuratorError:
        return False
    merged, merged_values = merge_revision([(plane, values)], data, codes, edited, annotated)
    if store.geometry.mismatch(grid, tol_mm=0.01) is None:  # as an import does (on the store's grid)
        clip_to_originals(store, merged, merged_values)
    now, then = _term_masks(merged, merged_values), _term_masks(plane, values)
    return now.keys() == then.keys() and all(np.array_equal(now[t], then[t]) for t in now)


def pseudo_over_imported(store: CaseStore, folder: Path, annotated: set[str],
                         accepted: frozenset[int] = frozenset()) -> list[str]:
    """For a folder whose revision is the one imported already (:func:`same_as_imported`): the
    terms it holds as the exported pseudo label while the revision imported differs — a reviewer
    who saved the pseudo label to undo an import, which an import never does."""
    copy = load_revised_copy(store.path)
    if copy is None:
        return []
    plane, affine, values = copy
    grid = Geometry.from_affine(tuple(plane.shape), affine)
    try:
        data, codes, _, _ = read_revision(folder, grid, annotated, accepted)
        record = read_record(folder)
    except CuratorError:
        return []
    on_store = store.geometry.mismatch(grid, tol_mm=0.01) is None
    return pseudo_over_revision(data, codes, record, annotated, accepted, held_masks([(plane, values)]),
                                store if on_store else None)


def accepted_codes(cell: str, folder: Path) -> frozenset[int]:
    """The codes of the case folder's export that the accept cell ``cell`` names: every code for
    ``all`` (or yes / x), else the codes of the term ids it lists (``liver; spleen``)."""
    codes = {int(c): [str(t) for t in ts] for c, ts in read_record(folder)["codes"].items()}
    if cell.lower() in ACCEPT_ALL:
        return frozenset(codes)
    by_term = {t.lower(): c for c, ts in codes.items() for t in ts}
    names = [n for n in re.split(r"[;,\s]+", cell) if n]
    unknown = [n for n in names if n.lower() not in by_term]
    if unknown:
        raise InputError("review_accept_invalid", f"worklist.csv's accept column names {', '.join(map(repr, unknown))}, "
                         f"which is no structure of the case's export (its terms: "
                         f"{', '.join(t for ts in codes.values() for t in ts)})", path=str(folder.parent / "worklist.csv"),
                         remedy="write `all` to accept every structure of the case, or the term ids of codes.json "
                                "separated by ';'")
    return frozenset(by_term[n.lower()] for n in names)


def revised_cases(folder: Path) -> list[Path]:
    """The case folders of the review export ``folder`` that hold a revision (``revised.nii.gz``,
    or any file named ``revised*``: :func:`~curator.pseudolabel.review_records.revision_file` says why one cannot be read; none yet
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
