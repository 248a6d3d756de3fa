"""The review loop's second half: ``curator review import`` brings revised label files back.

A reviewer saves the corrected label as ``<out>/<case_id>/revised.nii.gz`` in a folder written
by :func:`curator.pseudolabel.review.export_review` (same grid and codes); :func:`import_review`
writes it as the case's ``revised`` layer and returns ``labels`` rows with origin ``revised``
(stored in the private table ``_labels_revised``). Only the codes the reviewer changed from what
the export wrote become revised labels, and those the reviewer accepted as correct (worklist.csv's
``accept`` column: ``all`` or term ids), which become revised labels as exported. The workspace keeps its own copy of each imported
revision (``<workspace>/revised/<case_id>.npz``), from which preprocess rebuilds the layer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, CuratorError, InputError, LabelError
from curator.ingest.core import some
from curator.io.fsutil import sha256_file
from curator.io.volume import Geometry
from curator.pseudolabel.review_checks import (
    as_reviewers_file,
    clip_to_originals,
    declared_shape,
    large_change_warning,
    large_changes,
    overlap_warning,
    pseudo_edited,
    saved_over_pseudo,
    where,
    wrong_case,
)
from curator.pseudolabel.review_provenance import (
    FIELDS,
    STAMP,
    case_stamp,
    imported_by,
    layer_review,
    log_review,
    now_utc,
    provenance,
    stamped_case,
)
from curator.pseudolabel.review_records import (
    ACCEPT_ALL,
    check_listed,
    exported_grid,
    grid_text,
    layer_digest,
    load_revised_copy,
    mask_digest,
    read_accepts,
    read_manifest,
    read_record,
    revised_copy_path,
    revision_file,
    revision_files,
    save_revised_copy,
)
from curator.pseudolabel.review_state import next_round
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore

log = logging.getLogger("curator")
ON_GRID = ("check first that this file belongs to this case (a label saved from another case's folder is on that "
           "case's grid); if it does, save the revision on the grid of pseudo.nii.gz: open pseudo.nii.gz (or the "
           "revised.nii.gz the export wrote) as the segmentation of image.nii.gz and save it as revised.nii.gz "
           "without cropping, resampling or reorienting it (for a file of this case, copying pseudo.nii.gz's header "
           "— shape, spacing, origin, direction — onto it does the same)")


def _merge_revision(before: list[tuple[Any, dict[int, list[str]]]], data: NDArray[Any], codes: dict[int, list[str]],
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


def _read_revision(folder: Path, grid: Geometry, annotated: set[str], accepted: frozenset[int] = frozenset(),
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


@dataclass(frozen=True)
class Review:
    """Who imports, when, and from which export: the provenance every label imported gets."""

    reviewer: str | None = None
    at: dt.datetime = field(default_factory=now_utc)
    export_id: str | None = None


class Outcome(NamedTuple):
    """What an import did to a case's labels (terms): revised or accepted now; edited or accepted
    but equal to the revision held, so kept as it was (its state and round); saved as the
    exported pseudo label where the case holds a revision of it, which an import does not undo."""

    revised: list[str]
    accepted: list[str]
    kept: tuple[str, ...] | list[str] = ()
    pseudo: tuple[str, ...] | list[str] = ()


@dataclass
class Imported:
    rows: list[dict[str, Any]]
    outcome: Outcome
    warnings: list[CuratorError]
    sha256: str | None = None  # of the file read


def _held(planes: list[tuple[Any, dict[int, list[str]]]]) -> dict[str, NDArray[np.bool_]]:
    """term -> its mask in the revised ``planes``."""
    out: dict[str, NDArray[np.bool_]] = {}
    for arr, vals in planes:
        a = np.asarray(arr[...])
        for c, ts in vals.items():
            for t in ts:
                out[t] = out[t] | (a == c) if t in out else a == c
    return out


def _pseudo_over_revision(data: NDArray[Any], codes: dict[int, list[str]], record: dict[str, Any],
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


def import_case(store: CaseStore, folder: Path, annotated: set[str], accepted: frozenset[int] = frozenset(),
                earlier: list[dict[str, Any]] | None = None, review: Review | None = None) -> Imported | None:
    """Write ``folder/revised.nii.gz`` (with the ``accepted`` codes) as the store's revised layer;
    its labels rows, what it did (:class:`Outcome`) and its warnings (voxels left out because an
    original label of another structure claims them; a structure that moved a large part of itself
    both ways, as another case's label does), or None when no code was edited or accepted (nothing
    is written: the case's labels stay as they are). Nothing is written either when every label
    edited or accepted equals the revision held (the outcome's ``kept``, no rows).

    Each row says how its label was reviewed (``review_state`` revised | accepted), in which of
    the case's review rounds (``review_round``), by whom, when, from which export and file
    (``review``): this import's round (one more than the case's ``earlier`` revised rows') for the
    terms edited or accepted now; a label equal to the revision held, and an earlier revision kept
    of another term, keep their row's state, round and provenance."""
    data, codes, edited, changed = _read_revision(folder, store.geometry, annotated, accepted)
    record = read_record(folder)
    before = list(store.planes("revised")) if "revised" in store.layers() else []
    held = _held(before)
    pseudo = _pseudo_over_revision(data, codes, record, annotated, accepted, held, store)
    if not edited:
        return None
    merged, values = _merge_revision(before, data, codes, edited, annotated)
    clipped = clip_to_originals(store, merged, values)
    now = {t: np.isin(merged, [c for c, ts in values.items() if t in ts]) for ts in values.values() for t in ts}
    cid, review = store.path.stem, review or Review()
    earlier_rows = {r["term_id"]: r for r in earlier or []}
    kept = sorted(t for ts in edited.values() for t in ts
                  if t in held and t in earlier_rows and np.array_equal(now[t], held[t]))
    revised_now = sorted({t for c in changed if c in edited for t in edited[c]} - set(kept))
    accepted_now = sorted({t for c, ts in edited.items() if c not in changed for t in ts} - set(kept))
    outcome = Outcome(revised_now, accepted_now, kept, pseudo)
    if not revised_now and not accepted_now:
        return Imported([], outcome, [])
    path = revision_file(folder) if revision_files(folder) else folder / "pseudo.nii.gz"
    ml = store.geometry.voxel_volume_mm3 / 1000.0
    reference = {t: held[t] if t in held else store.mask(t, "pseudo") for t in revised_now
                 if t in held or ("pseudo" in store.layers() and t in store.terms("pseudo"))}
    moved = large_changes(reference, {t: now[t] for t in revised_now}, ml)
    rnd = next_round(earlier or [])
    sha = sha256_file(path)
    mine = provenance(review.reviewer, review.at, review.export_id, sha)
    rows = []
    for t, mask in now.items():
        n = int(mask.sum())
        old = earlier_rows.get(t, {})
        state, at, prov = (("revised", rnd, mine) if t in revised_now else ("accepted", rnd, mine)
                           if t in accepted_now else (old.get("review_state") or "revised", old.get("review_round"),
                                                      {k: old.get(k) for k in FIELDS}))
        rows.append({"case_id": cid, "term_id": t, "term": term_name(t), "origin": "revised",
                     "layer": "revised", "derived": False, "annotated": False, "present": n > 0, "voxels": n,
                     "volume_ml": n * ml, "modality": store.attrs.get("modality"), "review_state": state,
                     "review_round": at, **prov})
    layer = layer_review(rows, {"action": "import", "export_id": review.export_id, "reviewed_by": review.reviewer,
                                "at": review.at})
    save_revised_copy(store, merged, values, layer)  # first: the store's layer is rebuilt from it, not the reverse
    store.write_layer("revised", [(merged, values)], {"origin": "revised", "source": "curator review import",
                                                      "review": layer})
    warnings: list[CuratorError] = [overlap_warning(path, clipped, ml)] if clipped else []
    if moved:
        warnings.append(large_change_warning(path, moved, cid, len(revised_now)))
    return Imported(rows, outcome, warnings, sha)


def original_terms(store: CaseStore) -> set[str]:
    """The terms the dataset itself labels in the case (its ``original`` layer): a revision leaves them."""
    return set(store.terms("original"))  # none when the store has no original layer


def reviewed_before(store: CaseStore) -> bool:
    """Whether a revision of the case was imported before (its workspace copy, or the layer)."""
    return revised_copy_path(store.path).is_file() or "revised" in store.layers()


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
        data, codes, edited, _ = _read_revision(folder, grid, annotated, accepted)
    except CuratorError:
        return False
    merged, merged_values = _merge_revision([(plane, values)], data, codes, edited, annotated)
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
        data, codes, _, _ = _read_revision(folder, grid, annotated, accepted)
        record = read_record(folder)
    except CuratorError:
        return []
    on_store = store.geometry.mismatch(grid, tol_mm=0.01) is None
    return _pseudo_over_revision(data, codes, record, annotated, accepted, _held([(plane, values)]),
                                 store if on_store else None)


def _last_change(attrs: dict[str, Any] | None) -> str:
    """`` (the import of export 3f2a… on 2026-12-09T10:00:00+00:00 by Dr A)``: what wrote the
    revised layer, as its attributes say (empty when they say nothing)."""
    last = ((attrs or {}).get("review") or {}).get("last") or {}
    if not last:
        return ""
    what = f"the import of export {last['export_id']}" if last.get("action") == "import" and last.get("export_id") \
        else "an import" if last.get("action") == "import" else "a revert"
    return (f" ({what}" + (f" on {last['at']}" if last.get("at") else "")
            + (f" by {last['reviewed_by']}" if last.get("reviewed_by") else "") + ")")


def check_fresh(store: CaseStore, folder: Path, earlier: bool, export_id: str | None = None) -> None:
    """A ``review_export_stale`` error when ``folder`` was exported before the case's store changed
    under it: rebuilt on another grid (:func:`check_grid`), or its revised labels changed since
    (``export.json``'s ``revised_layer``): a later import — of another export folder, e.g. a later
    round — or a revert. Importing it would put the labels it was exported with back over the
    later ones and call them a new round. A change by the import of this same export (its id,
    ``export_id``) is no change under it: the folder's revision, amended, imports again."""
    check_grid(store, folder, earlier)
    record = read_record(folder)
    if "revised_layer" not in record:  # an export by a curator that did not record it
        return
    then, now = record["revised_layer"], layer_digest(store, "revised")
    attrs = store.layer_attrs("revised")
    if then == now or (export_id is not None and imported_by(attrs) == export_id):
        return
    how = _last_change(attrs)
    what = (f"a revision of the case was imported since{how}" if then is None else
            "the case's revision was withdrawn since (`curator review revert`)" if now is None else f"the case's revised labels changed since{how}")
    raise LabelError("review_export_stale", f"this case folder was exported before the case's reviewed labels last "
                     f"changed: {what}; importing it would put the labels it was exported with back over the later "
                     "ones" + ("; the case's revised labels are kept as they are" if earlier else ""),
                     path=str(folder), remedy="export the case again with --include-reviewed (into a new folder), "
                     "redo the revision there from the labels as they are now, and import that folder")


def check_grid(store: CaseStore, folder: Path, earlier: bool) -> None:
    """A ``review_export_stale`` error when ``folder`` was exported on another grid than the
    store's now: preprocess rebuilt the store since (a new target spacing), and a revision saved
    on the export's grid has no place on it — said as that, not as a revision on the wrong grid."""
    exported = exported_grid(folder, read_record(folder))
    if exported is None or exported.mismatch(store.geometry, tol_mm=0.01) is None:
        return
    kept = "; the earlier import of this case is kept (carried over onto the new grid)" if earlier else ""
    raise LabelError("review_export_stale", "this case folder was exported before the store was rebuilt on a new "
                     f"grid (exported on {grid_text(exported)}, the store is now on {grid_text(store.geometry)})"
                     + kept, path=str(folder),
                     remedy=("to revise again, export again with --include-reviewed (into a new folder) and save the "
                             "revision there" if earlier else "export the case again (into a new folder) and save "
                             "the revision there, on the grid of its pseudo.nii.gz"))


def unrevised_cases(folder: Path, stores: Path | None = None) -> list[str]:
    """The case folders of an export (those with codes.json) that hold no revision yet and are not
    accepted in worklist.csv — nor, given the workspace's ``stores`` folder, reviewed already (an
    accept imported before, whose row a later export into the folder left out)."""
    accepted = read_accepts(folder)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "codes.json").is_file()
                  and not revision_files(p) and p.name not in accepted
                  and not (stores is not None and _imported(stores / f"{p.name}.zarr")))


def _imported(store: Path) -> bool:
    return revised_copy_path(store).is_file() or ((store / "zarr.json").is_file() and reviewed_before(CaseStore(store)))


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


def import_review(workspace: Any, folder: Path, unchanged: dict[str, str] | None = None,
                  outcome: dict[str, Outcome] | None = None, reviewer: str | None = None,
                  ) -> tuple[list[str], list[dict[str, Any]]]:
    """Import every ``<folder>/<case_id>/revised.nii.gz`` and every case worklist.csv's ``accept``
    column accepts; returns (imported case ids, problem rows). ``outcome`` gets, per imported
    case, what the import did (:class:`Outcome`: the terms edited, those accepted as exported,
    ...). A folder that is not a review export is refused (:func:`revised_cases`). Each label
    imported records ``reviewer`` (None: not said), the import's time (UTC), the export's id and
    the file's SHA-256 (:mod:`curator.pseudolabel.review_provenance`); each case imported is a
    line of the workspace's review log.

    A case folder exported before the case's store changed under it (rebuilt on another grid, or
    its revised labels changed by a later import or a revert) is refused (:func:`check_fresh`).

    A revision that changes nothing and accepts nothing is no import: the case goes into
    ``unchanged`` with the reason (its labels stay pseudo labels, and the case stays on the
    worklist), nothing is written.

    A revision that is the one imported already (:func:`same_as_imported`) is no import and no
    problem: its case goes into ``unchanged`` (``{case id: why}``), nothing is written. A
    refused revision of a case reviewed before is a warning, not an error: the earlier import
    stays the case's revised labels (and the release's).

    ``workspace`` is a :class:`~curator.workspace.Workspace`; the ``_labels_revised`` table is
    rewritten with the new rows replacing those of the imported cases.
    """
    from curator.runner.stage import problem_row
    from curator.schema import to_arrow

    revised = revised_cases(folder)
    check_has_cases(workspace)
    accepts = read_accepts(folder)
    manifest = read_manifest(folder)
    over_pseudo = saved_over_pseudo(folder, manifest, accepts)
    review = Review(reviewer, now_utc(), (manifest or {}).get("export_id"))
    log: list[dict[str, Any]] = []
    revised = sorted({*revised, *(folder / c for c in accepts), *over_pseudo})
    cases = workspace.read_table("cases")
    dataset = {r["case_id"]: r["dataset"] for r in (cases.to_pylist() if cases is not None else [])}
    old = workspace.read_table("_labels_revised")
    rows = old.to_pylist() if old is not None else []
    done: list[str] = []
    problems: list[dict[str, Any]] = []
    for case_dir in revised:
        cid = case_dir.name
        earlier = False
        try:
            if not case_dir.is_dir() or case_dir.parent != folder or cid in (".", ".."):
                raise InputError("review_accept_invalid", f"worklist.csv accepts case {cid!r}, which has no folder "
                                 "in this export", path=str(folder / "worklist.csv"),
                                 remedy="accept only cases of the export (the worklist's rows as it wrote them)")
            check_listed(case_dir, manifest, workspace.key)
            if cid not in dataset:
                raise InputError("revised_label_invalid", f"no case {cid!r} in this workspace",
                                 path=str(case_dir), remedy="keep the case folder names of the export")
            accepted = accepted_codes(accepts[cid], case_dir) if cid in accepts else frozenset()
            store = CaseStore(workspace.stores_dir / f"{cid}.zarr")
            earlier = reviewed_before(store)
            if case_dir in over_pseudo and not revision_files(case_dir):
                raise pseudo_edited(case_dir, over_pseudo[case_dir])
            annotated = original_terms(store)
            if earlier and same_as_imported(store, case_dir, annotated, accepted):
                if case_dir in over_pseudo:  # the revision file is the export's: the correction is in pseudo.nii.gz
                    raise pseudo_edited(case_dir, over_pseudo[case_dir], beside=revision_file(case_dir).name)
                moved = exported_grid(case_dir, read_record(case_dir))
                pseudo = pseudo_over_imported(store, case_dir, annotated, accepted)
                if unchanged is not None and pseudo:  # saved to undo the import: an import cannot
                    every = set(pseudo) >= set(store.terms("revised")) if "revised" in store.layers() else True
                    unchanged[cid] = (f"its revision holds the exported pseudo label of {', '.join(pseudo)}, not "
                                      "the revision imported: an import never puts a pseudo label back over a "
                                      "revision (a structure left as exported keeps its revision), so nothing was "
                                      "imported; to withdraw the revision, run `curator review revert "
                                      f"pipeline.yaml {cid}" + ("" if every else "".join(f" --term {t}" for t in pseudo))
                                      + "`")
                elif unchanged is not None:
                    unchanged[cid] = "its revision is the one imported already: nothing to import" + (
                        "" if moved is None or moved.mismatch(store.geometry, tol_mm=0.01) is None else
                        f" (exported on {grid_text(moved)}, before the store was rebuilt on a new grid, "
                        f"{grid_text(store.geometry)}; the earlier import of this case is kept, carried over onto "
                        "it; to revise again, export again with --include-reviewed)")
                continue
            check_fresh(store, case_dir, earlier, review.export_id)
            imported = import_case(store, case_dir, annotated, accepted,
                                   earlier=[r for r in rows if r["case_id"] == cid], review=review)
            if imported is not None and not imported.rows:  # every label edited is the one held already
                if unchanged is not None:
                    unchanged[cid] = (f"its revision of {', '.join(imported.outcome.kept)} is the one imported "
                                      "already: nothing to import")
                continue
            if imported is None:
                if case_dir in over_pseudo:
                    raise pseudo_edited(case_dir, over_pseudo[case_dir], beside=revision_file(case_dir).name)
                if unchanged is not None:
                    unchanged[cid] = ("its revision changes no structure of the export: nothing to import" + (
                        " (the earlier import of this case is kept)" if earlier else
                        "; its labels stay pseudo labels and the case stays on the worklist. To record that they "
                        "are correct, write `all` (or their term ids) in worklist.csv's accept column and import "
                        "again"))
                continue
        except CuratorError as e:
            files = revision_files(case_dir) if case_dir.is_dir() else []
            name = "pseudo.nii.gz" if e.kind == "review_pseudo_edited" else files[0].name if len(files) == 1 \
                else "revised.nii.gz" if files or cid not in accepts else "worklist.csv"
            said = e
            if earlier and e.kind != "review_export_stale":  # the stale message says so itself
                said = CuratorError(e.kind, f"{e.detail}; the earlier import of this case is kept", path=e.path,
                                    remedy=e.remedy, case_id=e.case_id)
            problems.append(problem_row("review", said, dataset=dataset.get(cid), case_id=cid,
                                        path=f"review:{cid}/{name}" if name != "worklist.csv" else "review:worklist.csv", severity="warning" if earlier else "error"))
            continue
        rows = [r for r in rows if r["case_id"] != cid] + [{**r, "dataset": dataset[cid]} for r in imported.rows]
        done.append(cid)
        warnings = list(imported.warnings)  # imported: voxels of the dataset's labels left out, a large change
        if case_dir in over_pseudo:  # imported, and pseudo.nii.gz was saved over too
            warnings.append(pseudo_edited(case_dir, over_pseudo[case_dir], beside=revision_file(case_dir).name,
                                          imported=True))
        problems += [problem_row("review", w, dataset=dataset[cid], case_id=cid,
                                 path=f"review:{cid}/{Path(w.path or 'revised.nii.gz').name}", severity="warning")
                     for w in warnings]
        if outcome is not None:
            outcome[cid] = imported.outcome
        log.append({"action": "import", "case_id": cid, "export_id": review.export_id, "folder": str(folder),
                    "reviewed_by": review.reviewer, "at": review.at, "revised": imported.outcome.revised,
                    "accepted": imported.outcome.accepted, "sha256": imported.sha256})
    workspace.write_table("_labels_revised", to_arrow("labels", rows))
    log_review(workspace.root, log)  # after the table: the log never names an import the labels do not hold
    return done, problems
