"""Checks of what a reviewer saved in a review export: a correction saved over the exported
``pseudo.nii.gz``, a revised structure painted over the dataset's own labels, the remedy of
a revision file that cannot be read, and whether a case folder is still fresh enough to import.

* An editor's *Save* (ITK-SNAP's Ctrl+S, Slicer's quick save) writes over the file it opened, and
  the README has the reviewer open ``pseudo.nii.gz``. :func:`pseudo_edit` tells such an edit from
  the export by the checksums of each code's mask that the case's ``export.json`` holds. Import
  refuses it, naming the file and saying to rename it to ``revised.nii.gz`` — it is not taken as
  the revision on its own: what a reviewer saves over the file they opened may be unfinished, and
  a rename says it is the correction —; an export into the folder refuses to overwrite it.
* The dataset's own labels outrank reviewed ones (original > revised > pseudo): a revised term
  keeps no voxel of an original label of another term (:func:`clip_to_originals`), with a
  warning naming the terms and the voxels — a brush that spilled over the spleen no longer makes
  the revised liver 25 % larger. A structure part of the revised term (a liver tumour in the
  liver), or a whole it is part of, is not another structure.
* A case folder exported before the case's store changed under it — rebuilt on another grid
  (:func:`check_grid`), or its revised labels changed by a later import or a revert
  (:func:`check_fresh`, which says what changed them: :func:`_last_change`) — is refused:
  importing it would put the labels it was exported with back over the later ones.
  :func:`unrevised_cases` lists the case folders that hold no revision yet.

>>> related("liver_tumor", ["liver"]), related("spleen", ["liver"])
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, CuratorError, InputError, LabelError
from curator.pseudolabel.review_provenance import imported_by
from curator.pseudolabel.review_records import (
    RECORD,
    exported_grid,
    grid_text,
    layer_digest,
    mask_digest,
    read_accepts,
    read_record,
    revised_copy_path,
    revision_files,
)
from curator.pseudolabel.terms import ancestors, term_name
from curator.store import CaseStore

PSEUDO = "pseudo.nii.gz"
# a revision is the reviewer's own save: ingest's remedies ("download the file again") do not apply
SAVE_AGAIN = ("save the corrected label again from the editor as revised.nii.gz (one 3-D label map on the grid of "
              "pseudo.nii.gz, with the codes of codes.json); it is the reviewer's own file, so there is nothing to "
              "download")


def as_reviewers_file(e: CuratorError) -> CuratorError:
    """The read error ``e`` of a revision file, its remedy the reviewer's (save it again)."""
    return type(e)(e.kind, e.detail, path=e.path, remedy=SAVE_AGAIN, case_id=e.case_id)


def _codes_text(codes: dict[str, list[str]], which: Sequence[str]) -> str:
    return ", ".join(f"{' + '.join(term_name(t) for t in codes[c])} (code {c})" for c in which)


def pseudo_edit(folder: Path, record: dict[str, Any]) -> str | None:
    """How the case folder's ``pseudo.nii.gz`` differs from what the export wrote (the record's
    checksum of each code's mask), or None: as exported, not there, or a record too old to tell."""
    path = folder / PSEUDO
    digests = record.get("pseudo_masks")
    if digests is None and record.get("start", PSEUDO) == PSEUDO:
        digests = record.get("start_masks")
    if not path.is_file() or not isinstance(digests, dict):
        return None
    codes = {str(c): list(ts) for c, ts in record["codes"].items()}
    grid = exported_grid(folder, record)
    try:
        img: Any = nib.load(path)
        if grid is not None and tuple(img.shape) != tuple(grid.shape):
            return f"its shape is {tuple(img.shape)}, not the exported {tuple(grid.shape)}"
        data = np.asarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - a file the export wrote that no longer reads was changed
        return f"it no longer reads as the file the export wrote ({e.__class__.__name__})"
    changed = [c for c in sorted(codes, key=int) if mask_digest(data == int(c)) != digests.get(c)]
    other = sorted(set(np.unique(data).tolist()) - {0} - {int(c) for c in codes})
    said = [f"{_codes_text(codes, changed)} changed"] if changed else []
    if other:
        said.append(f"values it did not write: {other[:5]}{' …' if len(other) > 5 else ''}")
    return "; ".join(said) or None


def saved_over_pseudo(folder: Path, manifest: dict[str, Any] | None, accepts: dict[str, str]) -> dict[Path, str]:
    """The export's case folders whose ``pseudo.nii.gz`` was edited (an editor's Save over the file it
    opened), with how it differs — but those accepted without a revision file: import reads that
    pseudo.nii.gz as accepted and refuses it itself (``review_accept_invalid``)."""
    out: dict[Path, str] = {}
    for case in sorted((manifest or {}).get("cases", {})):
        case_dir = folder / case
        if case_dir.parent != folder or case in (".", "..") or not case_dir.is_dir() \
                or (case in accepts and not revision_files(case_dir)):
            continue
        try:
            how = pseudo_edit(case_dir, read_record(case_dir))
        except InputError:  # no record: nothing to compare with (an import of a revision there says why)
            continue
        if how is not None:
            out[case_dir] = how
    return out


def check_pseudo_kept(out: Path, chosen: list[str]) -> None:
    """A ``ConfigError`` naming each case folder of ``out`` this export would write whose
    ``pseudo.nii.gz`` was edited since its export (an editor's Save writes over the file it
    opened): rewriting it would lose the correction."""
    edited = []
    for cid in chosen:
        try:
            how = pseudo_edit(out / cid, read_record(out / cid)) if (out / cid / RECORD).is_file() else None
        except InputError:  # a record this curator does not read: nothing to compare the file with
            how = None
        if how is not None:
            edited.append(f"{cid}/pseudo.nii.gz ({how})")
    if edited:
        raise ConfigError("config_error", f"{len(edited)} case folder(s) hold a pseudo.nii.gz changed since the "
                          f"export — a correction saved over it? — which this export would overwrite: "
                          f"{'; '.join(edited)}", path=str(out),
                          remedy="to import the correction, rename that pseudo.nii.gz to revised.nii.gz and run "
                                 "`curator review import pipeline.yaml FOLDER` first; if it is not wanted, delete "
                                 "it; or export into another folder")


def pseudo_edited(folder: Path, how: str, beside: str | None = None, imported: bool = False) -> InputError:
    """The refusal of a case folder whose ``pseudo.nii.gz`` was edited: with no revision file, or
    ``beside`` one that changes nothing (the export's own); with ``imported``, the warning that it
    was edited beside the revision file imported."""
    said = f"{PSEUDO} was changed after the export ({how})"
    if imported:
        return InputError("review_pseudo_edited", f"{said} too; {beside} was imported, {PSEUDO} was not",
                          path=str(folder / PSEUDO),
                          remedy=f"if {PSEUDO} holds corrections {beside} lacks, add them to {beside} and import "
                                 f"again; then delete {PSEUDO} (an export into this folder refuses to overwrite it)")
    if beside is None:
        why = "the case folder holds no revised.nii.gz: import reads corrections from revised.nii.gz only"
        todo = f"rename {PSEUDO} to revised.nii.gz in this case folder and import again"
    else:
        why = f"the case folder's {beside} changes nothing: import reads corrections from {beside}, not {PSEUDO}"
        todo = f"replace {beside} with it (delete {beside}, rename {PSEUDO} to revised.nii.gz) and import again"
    return InputError("review_pseudo_edited", f"{said}, and {why}, so this edit was not imported",
                      path=str(folder / PSEUDO),
                      remedy=f"{todo} (an editor's Save writes over the file it opened; save corrections with Save "
                             "As revised.nii.gz); if the edit is not wanted, delete the file and export the case again")


def related(original: str, terms: Sequence[str]) -> bool:
    """Whether the original label ``original`` is one of ``terms``, a part of one of them (a liver
    tumour in the liver) or a whole one of them is part of: its voxels may be theirs."""
    return original in terms or any(t in ancestors(original) or original in ancestors(t) for t in terms)


def clip_to_originals(store: CaseStore, plane: NDArray[Any], values: dict[int, list[str]]
                      ) -> list[tuple[list[str], str, int]]:
    """Clear, in the revised ``plane`` (in place), each code's voxels an original label of another
    structure claims; ``(the code's terms, the original term, voxels cleared)`` per such pair.
    Smaller original labels are tried first, so a voxel is counted against the most specific one."""
    if "original" not in store.layers() or tuple(plane.shape) != tuple(store.geometry.shape):
        return []
    originals = store.terms("original")
    masks = dict(zip(originals, store.masks(originals, "original"), strict=True)) if originals else {}
    order = sorted(masks, key=lambda t: (int(masks[t].sum()), t))
    out: list[tuple[list[str], str, int]] = []
    for code, terms in sorted(values.items()):
        mine = plane == code
        for o in order:
            if related(o, terms):
                continue
            hit = mine & masks[o]
            n = int(hit.sum())
            if n:
                plane[hit] = 0
                mine &= ~hit
                out.append((list(terms), o, n))
    return out


def overlap_warning(path: Path, clipped: list[tuple[list[str], str, int]], voxel_ml: float) -> InputError:
    """The warning of :func:`clip_to_originals`' voxels (the revision was imported without them)."""
    pairs = "; ".join(f"the revised {' + '.join(term_name(t) for t in ts)} covered {n:,} voxel(s) ({n * voxel_ml:.3g} "
                      f"ml) of the dataset's own {term_name(o)} label" for ts, o, n in clipped)
    return InputError("revised_overlaps_original", f"{pairs}; those voxels were left out of the revised label "
                      "(original > revised > pseudo: the dataset's own labels are not revised by review)",
                      path=str(path), remedy="nothing, if the brush spilled over; otherwise correct the revision "
                      "so that it stops at the dataset's label (its structures are not on the worklist)")


def declared_shape(path: Path) -> tuple[int, ...] | None:
    """The shape a label file's header declares (read without its voxels), or None."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        try:
            img: Any = nib.load(path)
            return tuple(int(n) for n in img.shape)
        except Exception:  # noqa: BLE001 - the revision's own read says what is wrong with the file
            return None
    try:  # NRRD: SimpleITK reads the header only
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return tuple(int(n) for n in reader.GetSize())
    except Exception:  # noqa: BLE001 - the revision's own read says what is wrong with the file
        return None


def where(mask: NDArray[np.bool_]) -> str:
    """How many voxels ``mask`` holds and their bounding box in the file's voxel indices, as a
    reviewer finds them in an editor: ``16 voxel(s) at i 60–63, j 60–63, k (slice) 30``.

    >>> m = np.zeros((4, 4, 4), bool); m[1:3, 2, 3] = True
    >>> where(m)
    '2 voxel(s) at i 1–2, j 2, k (slice) 3 (voxel indices of the file, from 0)'
    """
    spans = []
    for ax, name in enumerate(("i", "j", "k (slice)")):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        lo, hi = int(hit[0]), int(hit[-1])
        spans.append(f"{name} {lo}" if lo == hi else f"{name} {lo}–{hi}")
    return f"{int(mask.sum()):,} voxel(s) at {', '.join(spans)} (voxel indices of the file, from 0)"


def wrong_case(path: Path, stamped: str, case_id: str) -> InputError:
    """The refusal of a revision whose header says it was exported for another case."""
    other = "another case" if stamped.startswith("#") else f"case {stamped}"
    return InputError("review_wrong_case", f"{path.name} was exported for {other}, not for {case_id} (its header "
                      "says so): it was saved into, or copied to, the folder of another case", path=str(path),
                      remedy=f"check that this file belongs to {case_id}: save each case's revision in the folder of "
                             "the case it was exported for (open that folder's pseudo.nii.gz, or its revised.nii.gz "
                             "for a case reviewed before) and import again")


# a revised structure that moved this much, both ways, is more likely another case's file than a correction
DICE_BELOW = 0.9
MOVED_SHARE = 0.05  # of the structure's voxels before the import, added and removed alike
MOVED_ML = 1.0


def _ml(v: float) -> str:
    """``3,800``, ``27.5``, ``0.42``: millilitres as a reader takes them in."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def large_changes(before: dict[str, NDArray[np.bool_]], after: dict[str, NDArray[np.bool_]], voxel_ml: float
                  ) -> list[str]:
    """Per structure of ``after`` (term -> mask imported) whose label ``before`` this import was
    replaced by one that both gained and lost a large part of it (Dice under 0.9, at least 5 % of
    its voxels and 1 ml each way): what it says. A correction erases a leak or paints a missing
    part; a label that moved both ways is more often another case's (same grid, other anatomy).
    A structure erased whole, or painted where there was none, is a correction."""
    said = []
    for term, new in sorted(after.items()):
        old = before.get(term)
        a, b = int(new.sum()), int(old.sum()) if old is not None else 0
        if not a or not b or old is None:
            continue
        both = int((new & old).sum())
        added, removed = a - both, b - both
        floor = max(MOVED_SHARE * b, MOVED_ML / voxel_ml)
        dice = 2 * both / (a + b)
        if dice < DICE_BELOW and added >= floor and removed >= floor:
            said.append(f"{term_name(term)}: Dice {dice:.2f} to its label before this import, {added:,} voxel(s) "
                        f"({_ml(added * voxel_ml)} ml) added and {removed:,} ({_ml(removed * voxel_ml)} ml) removed")
    return said


def large_change_warning(path: Path, said: list[str], case_id: str, revised: int) -> InputError:
    """The warning of :func:`large_changes` (the revision was imported), of ``revised`` structures."""
    return InputError("review_large_change", f"{len(said)} of the {revised} structure(s) revised moved a large part "
                      f"of themselves both ways — {'; '.join(said)} — is this {case_id}'s revision? A correction "
                      "erases or adds parts of a structure; a label of another case on the same grid moves both "
                      "ways", path=str(path),
                      remedy=f"check the file in the folder of {case_id} against its image; if it is another case's, "
                             f"withdraw it (`curator review revert pipeline.yaml {case_id}`) and save the revision in "
                             "the right case's folder; if the correction is right, nothing to do")


def reviewed_before(store: CaseStore) -> bool:
    """Whether a revision of the case was imported before (its workspace copy, or the layer)."""
    return revised_copy_path(store.path).is_file() or "revised" in store.layers()


def _imported(store: Path) -> bool:
    return revised_copy_path(store).is_file() or ((store / "zarr.json").is_file() and reviewed_before(CaseStore(store)))


def unrevised_cases(folder: Path, stores: Path | None = None) -> list[str]:
    """The case folders of an export (those with codes.json) that hold no revision yet and are not
    accepted in worklist.csv — nor, given the workspace's ``stores`` folder, reviewed already (an
    accept imported before, whose row a later export into the folder left out)."""
    accepted = read_accepts(folder)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "codes.json").is_file()
                  and not revision_files(p) and p.name not in accepted
                  and not (stores is not None and _imported(stores / f"{p.name}.zarr")))


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
