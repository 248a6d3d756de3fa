"""What an import must not do to reviewed labels (tester 42): an older export folder imported again
reverted a later round; another case's file came in as this patient's labels; an import could
not be withdrawn; and a reviewed label did not say who reviewed it, when, from what."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest

from curator.errors import ConfigError
from curator.pseudolabel.release import assembled_mask
from curator.pseudolabel.review import export_review
from curator.pseudolabel.review_import import import_review
from curator.pseudolabel.review_provenance import read_log
from curator.pseudolabel.review_records import load_revised_copy, load_revised_review, read_manifest
from curator.pseudolabel.review_revert import revert_case
from curator.pseudolabel.stage import PseudolabelStage
from curator.release.build import build_release
from curator.runner.run import run_stage
from curator.store import CaseStore
from tests.pseudolabel.test_review_release import _exported, _layer_digest, _rebuild_coarser


def _code(folder: Path, term: str) -> int:
    return next(int(c) for c, ts in json.loads((folder / "codes.json").read_text()).items() if ts == [term])


def _save(folder: Path, erase: dict[str, float], start: str = "pseudo.nii.gz", header: bool = False) -> None:
    """Save ``folder``'s ``start`` label as its revision, the first share (along x) of each term's
    voxels erased (``{term: share}``, 1.0: the whole structure); ``header``: keep the exported
    header (an editor that copies it), else a new one (as most do)."""
    img = nib.load(folder / start)
    data = np.asarray(img.dataobj).copy()
    for term, share in erase.items():
        code = _code(folder, term)
        xs = np.flatnonzero((data == code).any(axis=(1, 2)))
        cut = xs[0] + max(1, round(float(share * (xs[-1] - xs[0] + 1))))
        data[:cut][data[:cut] == code] = 0
    nib.save(nib.Nifti1Image(data, img.affine, img.header if header else None), folder / "revised.nii.gz")


def _rows(ws: Any, cid: str) -> dict[str, tuple[str, int]]:
    return {r["term_id"]: (r["review_state"], r["review_round"])
            for r in ws.read_table("_labels_revised").to_pylist() if r["case_id"] == cid}


def test_an_export_older_than_the_cases_revision_is_refused_and_a_label_left_as_held_keeps_its_round(
        phantom_ws, tmp_path: Path) -> None:
    """Round 1 from one folder, round 2 from a later export, then the round-1 folder imported again
    (a script importing every folder, a second reviewer): it put round 1's labels back, called
    them round 3, exit 0. The export records the case's revised layer; a folder exported before
    it changed is refused (`review_export_stale`). A label an import leaves as held keeps its round."""
    first = tmp_path / "first"
    ws, (cid,) = _exported(phantom_ws, first, top=1)
    att = ws.read_table("attention").to_pylist()
    other = tmp_path / "other"  # a second reviewer's export of the same case, before any import
    export_review(ws.root, att, other, top=1, images=False)
    _save(first / cid, {"liver": 0.5})
    assert import_review(ws, first) == ([cid], [])
    assert _rows(ws, cid) == {"liver": ("revised", 1)}

    # the same folder, amended after its own import (the aorta too): imported, liver keeps round 1
    _save(first / cid, {"liver": 0.5, "aorta": 1.0})
    assert import_review(ws, first) == ([cid], [])
    assert _rows(ws, cid) == {"liver": ("revised", 1), "aorta": ("revised", 2)}

    layer = _layer_digest(ws.stores_dir / f"{cid}.zarr", "revised")
    _save(other / cid, {"liver": 0.25})  # the other reviewer's work, exported before round 1
    done, problems = import_review(ws, other)
    assert done == [] and [(p["kind"], p["severity"]) for p in problems] == [("review_export_stale", "warning")]
    said = problems[0]["message"]
    first_id = read_manifest(first)["export_id"]
    assert f"a revision of the case was imported since (the import of export {first_id}" in said
    assert "--include-reviewed" in said and "kept as they are" in said
    assert _layer_digest(ws.stores_dir / f"{cid}.zarr", "revised") == layer
    assert _rows(ws, cid) == {"liver": ("revised", 1), "aorta": ("revised", 2)}

    # round 3 from a new export changes the liver again; the round-1 folder imported again is stale
    third = tmp_path / "third"
    export_review(ws.root, att, third, top=1, images=False, include_reviewed=True)
    _save(third / cid, {"liver": 0.75}, start="revised.nii.gz")
    assert import_review(ws, third) == ([cid], [])
    assert _rows(ws, cid) == {"liver": ("revised", 3), "aorta": ("revised", 2)}
    layer = _layer_digest(ws.stores_dir / f"{cid}.zarr", "revised")
    done, problems = import_review(ws, first)
    assert done == [] and [p["kind"] for p in problems] == ["review_export_stale"]
    assert f"imported since (the import of export {read_manifest(third)['export_id']}" in problems[0]["message"]
    assert _layer_digest(ws.stores_dir / f"{cid}.zarr", "revised") == layer
    assert _rows(ws, cid) == {"liver": ("revised", 3), "aorta": ("revised", 2)}


def test_another_cases_file_is_refused_by_its_header_and_warned_of_without_it(phantom_ws, tmp_path: Path) -> None:
    """A correction saved into another case's folder on the same grid became that patient's labels,
    the only hint an overlap warning saying "nothing" to do. The export names the case in each
    file's header: a revision naming another case is refused; one whose header an editor rewrote
    is imported with a warning per structure that moved a large part of itself both ways. A
    wrong-grid revision's remedy first says to check the file is the case's."""
    out = tmp_path / "review"
    ws, (a, b, c, *_) = _exported(phantom_ws, out, top=4)
    assert nib.load(out / a / "pseudo.nii.gz").header["descrip"].tobytes().rstrip(b"\0").decode().endswith(a)
    shutil.copy(out / a / "pseudo.nii.gz", out / b / "pseudo_a.nii.gz")
    _save(out / b, {"liver": 0.2}, start="pseudo_a.nii.gz", header=True)  # a's label, edited, saved in b's folder
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)), out / c / "revised.nii.gz")
    done, problems = import_review(ws, out)
    why = {p["case_id"]: (p["kind"], p["message"]) for p in problems}
    assert done == [] and why[b][0] == "review_wrong_case"
    assert f"revised.nii.gz was exported for case {a}, not for {b}" in why[b][1]
    assert "revised" not in CaseStore(ws.stores_dir / f"{b}.zarr").layers()
    assert why[c][0] == "revised_label_invalid" and "What to do: check first that this file belongs to this case" \
        in why[c][1]

    _save(out / b, {"liver": 0.2}, start="pseudo_a.nii.gz")  # the same file from an editor writing a new header
    (out / c / "revised.nii.gz").unlink()
    done, problems = import_review(ws, out)
    kinds = {p["kind"]: (p["severity"], p["message"]) for p in problems}
    assert done == [b] and kinds["review_large_change"][0] == "warning", problems
    said = kinds["review_large_change"][1]
    # the liver and the pancreas of the other patient moved both ways; its aorta lies inside this one's
    assert said.startswith("2 of the 3 structure(s) revised moved a large part of themselves both ways — liver: Dice")
    assert "; pancreas: Dice" in said and "aorta" not in said
    assert f"is this {b}'s revision?" in said and f"curator review revert pipeline.yaml {b}" in said
    # the case's own correction erasing part of a structure is no large change
    _save(out / a, {"liver": 0.5, "aorta": 1.0})
    assert import_review(ws, out) == ([a], [])


def test_a_revert_withdraws_an_import_which_the_pseudo_label_saved_again_cannot(phantom_ws, tmp_path: Path) -> None:
    """An imported revision could not be withdrawn: the pseudo label saved as the revision was said
    to be "the revision imported already". It is said as the pseudo label an import does not put
    back, naming `curator review revert`, which removes the copy, the layer and the rows."""
    out = tmp_path / "review"
    ws, (cid,) = _exported(phantom_ws, out, top=1)
    path = ws.stores_dir / f"{cid}.zarr"
    _save(out / cid, {"liver": 0.5, "aorta": 1.0})
    assert import_review(ws, out) == ([cid], [])
    shutil.copy(out / cid / "pseudo.nii.gz", out / cid / "revised.nii.gz")  # to undo it
    unchanged: dict[str, str] = {}
    assert import_review(ws, out, unchanged) == ([], [])
    assert "the one imported already" not in unchanged[cid]
    assert "holds the exported pseudo label of aorta, liver, not the revision imported" in unchanged[cid]
    assert f"`curator review revert pipeline.yaml {cid}`" in unchanged[cid]
    assert sorted(CaseStore(path).terms("revised")) == ["aorta", "liver"]

    assert revert_case(ws, cid, ["liver"], reviewer="Dr R") == (["liver"], ["aorta"])
    store = CaseStore(path)
    assert store.terms("revised") == ["aorta"] and assembled_mask(store, "liver")[1] == "pseudo"
    copy = load_revised_copy(path)
    assert copy is not None and list(copy[2].values()) == [["aorta"]] and set(np.unique(copy[0])) <= {0, *copy[2]}
    assert _rows(ws, cid) == {"aorta": ("revised", 1)}
    assert list(load_revised_review(path)["terms"]) == ["aorta"]
    assert store.layer_attrs("revised")["source"] == "curator review revert"
    last = read_log(ws.root)[-1]
    assert (last["action"], last["case_id"], last["terms"], last["reviewed_by"]) == ("revert", cid, ["liver"], "Dr R")

    with pytest.raises(ConfigError, match="--term spleen: the revision of .* holds no such label"):
        revert_case(ws, cid, ["spleen"])
    assert revert_case(ws, cid) == (["aorta"], [])
    assert "revised" not in CaseStore(path).layers() and load_revised_copy(path) is None and _rows(ws, cid) == {}
    with pytest.raises(ConfigError, match="nothing to revert"):
        revert_case(ws, cid)
    again = export_review(ws.root, ws.read_table("attention").to_pylist(), tmp_path / "again", top=1, images=False)
    assert again.cases == [cid] and again.reviewed == []  # unreviewed again: back on the worklist


def test_each_reviewed_label_records_who_when_from_which_export_and_file(phantom_ws, tmp_path: Path) -> None:
    """A revised label said nothing of who reviewed it, when, from which export or file. Each
    records the reviewer, the import's time (UTC), the export id and the file's SHA-256: in the
    labels table, the revised layer's attributes (kept through a store rebuild) and release.json."""
    ctx, _ = phantom_ws()
    ws = ctx.workspace
    run_stage(ctx, PseudolabelStage)
    out = tmp_path / "review"
    cid = export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=1, images=False).cases[0]
    _save(out / cid, {"liver": 0.5})
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert import_review(ws, out, reviewer="Dr A") == ([cid], [])
    (row,) = [r for r in ws.read_table("_labels_revised").to_pylist() if r["case_id"] == cid]
    export_id = read_manifest(out)["export_id"]
    sha = hashlib.sha256((out / cid / "revised.nii.gz").read_bytes()).hexdigest()
    assert (row["reviewed_by"], row["review_export_id"], row["review_sha256"]) == ("Dr A", export_id, sha)
    assert before <= row["reviewed_at"] <= dt.datetime.now(dt.UTC) and row["reviewed_at"].utcoffset() == dt.timedelta(0)
    path = ws.stores_dir / f"{cid}.zarr"
    review = CaseStore(path).layer_attrs("revised")["review"]
    assert review["terms"]["liver"]["reviewed_by"] == "Dr A" and review["terms"]["liver"]["review_sha256"] == sha
    assert review["last"]["action"] == "import" and review["last"]["export_id"] == export_id
    entry = read_log(ws.root)[-1]
    assert (entry["action"], entry["reviewed_by"], entry["revised"], entry["sha256"]) == ("import", "Dr A", ["liver"],
                                                                                         sha)
    release = build_release(ctx)
    (rel,) = [r for r in pq.read_table(release / "labels.parquet").to_pylist()
              if r["case_id"] == cid and r["origin"] == "revised"]
    assert (rel["reviewed_by"], rel["review_export_id"], rel["review_sha256"]) == ("Dr A", export_id, sha)
    assert all(r["reviewed_by"] is None for r in pq.read_table(release / "labels.parquet").to_pylist()
               if r["origin"] != "revised")
    meta = json.loads((release / "release.json").read_text())
    assert meta["review"]["reviewed_labels"] == {"labels": 1, "states": {"revised": 1}, "reviewers": {"Dr A": 1},
                                                 "exports": 1}
    _rebuild_coarser(path)
    assert CaseStore(path).layer_attrs("revised")["review"] == review
