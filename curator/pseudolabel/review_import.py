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
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from curator.errors import ConfigError, CuratorError, InputError
from curator.io.fsutil import sha256_file
from curator.pseudolabel.review_checks import (
    check_fresh,
    check_grid,
    clip_to_originals,
    large_change_warning,
    large_changes,
    overlap_warning,
    pseudo_edited,
    reviewed_before,
    saved_over_pseudo,
    unrevised_cases,
)
from curator.pseudolabel.review_provenance import (
    FIELDS,
    layer_review,
    log_review,
    now_utc,
    provenance,
)
from curator.pseudolabel.review_records import (
    check_listed,
    exported_grid,
    grid_text,
    read_accepts,
    read_manifest,
    read_record,
    revision_file,
    revision_files,
    save_revised_copy,
)
from curator.pseudolabel.review_revision import (
    accepted_codes,
    held_masks,
    merge_revision,
    original_terms,
    pseudo_over_imported,
    pseudo_over_revision,
    read_revision,
    revised_cases,
    same_as_imported,
)
from curator.pseudolabel.review_state import next_round
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore

# with the names moved to review_checks and review_revision, still importable from here
__all__ = [
    "Imported",
    "Outcome",
    "Review",
    "accepted_codes",
    "check_fresh",
    "check_grid",
    "check_has_cases",
    "import_case",
    "import_review",
    "original_terms",
    "pseudo_over_imported",
    "record_import_problems",
    "reviewed_before",
    "revised_cases",
    "same_as_imported",
    "unrevised_cases",
]

log = logging.getLogger("curator")


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
    data, codes, edited, changed = read_revision(folder, store.geometry, annotated, accepted)
    record = read_record(folder)
    before = list(store.planes("revised")) if "revised" in store.layers() else []
    held = held_masks(before)
    pseudo = pseudo_over_revision(data, codes, record, annotated, accepted, held, store)
    if not edited:
        return None
    merged, values = merge_revision(before, data, codes, edited, annotated)
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
    ...). A folder that is not a review export is refused (:func:`~curator.pseudolabel.review_revision.revised_cases`). Each label
    imported records ``reviewer`` (None: not said), the import's time (UTC), the export's id and
    the file's SHA-256 (:mod:`curator.pseudolabel.review_provenance`); each case imported is a
    line of the workspace's review log.

    A case folder exported before the case's store changed under it (rebuilt on another grid, or
    its revised labels changed by a later import or a revert) is refused (:func:`~curator.pseudolabel.review_checks.check_fresh`).

    A revision that changes nothing and accepts nothing is no import: the case goes into
    ``unchanged`` with the reason (its labels stay pseudo labels, and the case stays on the
    worklist), nothing is written.

    A revision that is the one imported already (:func:`~curator.pseudolabel.review_revision.same_as_imported`) is no import and no
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
