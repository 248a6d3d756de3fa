"""Review rounds: a later round's worklist says which labels earlier rounds revised or accepted,
the release's worklist keeps its reviewed cases (with their states), and previews show the label
the release uses."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curator.pseudolabel.outputs import attention_path, read_attention
from curator.pseudolabel.review import export_review
from curator.pseudolabel.review_import import import_review
from curator.pseudolabel.review_preview import HEADER_HEIGHT, neighbours, preview
from curator.pseudolabel.stage import PseudolabelStage
from curator.release.build import build_release
from curator.runner.run import run_stage
from curator.store import CaseStore
from tests.pseudolabel.test_review_release import _accept


def _worklist(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "worklist.csv", newline="", encoding="utf-8") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def _erase(folder: Path, term: str, start: str = "pseudo.nii.gz") -> None:
    """Save ``folder``'s ``start`` label with ``term`` erased as its revision."""
    code = next(int(c) for c, ts in json.loads((folder / "codes.json").read_text()).items() if ts == [term])
    img = nib.load(folder / start)
    data = np.asarray(img.dataobj).copy()
    assert (data == code).any()
    data[data == code] = 0
    nib.save(nib.Nifti1Image(data, img.affine), folder / "revised.nii.gz")


def _states(cell: str) -> dict[str, str]:
    return dict(part.split(": ", 1) for part in cell.split("; "))


def test_a_second_round_worklist_says_which_labels_were_revised_accepted_or_still_pseudo(
        phantom_ws, tmp_path: Path) -> None:
    """Round 2's worklist gave no hint which of a case's labels round 1 had revised or accepted:
    the reviewer re-checked them all. Each term now says pseudo, or revised / accepted (round N)."""
    ctx, _ = phantom_ws()
    ws = ctx.workspace
    run_stage(ctx, PseudolabelStage)
    att = ws.read_table("attention").to_pylist()
    first = tmp_path / "round1"
    edited, approved = export_review(ws.root, att, first, top=2, images=False).cases
    assert {c: set(_states(r["label_states"]).values()) for c, r in _worklist(first).items()} == {
        edited: {"pseudo"}, approved: {"pseudo"}}
    _erase(first / edited, "liver")
    _accept(first, {approved: "aorta"})
    assert import_review(ws, first) == (sorted([approved, edited]), [])
    rows = {(r["case_id"], r["term_id"]): (r["review_state"], r["review_round"])
            for r in ws.read_table("_labels_revised").to_pylist()}
    assert rows == {(edited, "liver"): ("revised", 1), (approved, "aorta"): ("accepted", 1)}

    second = tmp_path / "round2"
    export_review(ws.root, att, second, top=2, images=False, include_reviewed=True)
    work = _worklist(second)
    terms = {c: [t.split(":")[0] for t in r["terms"].split(";")] for c, r in work.items()}
    got = {c: _states(r["label_states"]) for c, r in work.items()}
    assert list(got[edited]) == terms[edited]  # in the order of the terms column (attention)
    assert got[edited] == {t: "revised (round 1)" if t == "liver" else "pseudo" for t in terms[edited]}
    assert got[approved] == {t: "accepted (round 1)" if t == "aorta" else "pseudo" for t in terms[approved]}

    # round 2 revises the case's aorta accepted in round 1: its round and state change, liver's stay
    _erase(second / edited, "aorta", start="revised.nii.gz")
    assert import_review(ws, second)[0] == [edited]
    rows = {(r["case_id"], r["term_id"]): (r["review_state"], r["review_round"])
            for r in ws.read_table("_labels_revised").to_pylist()}
    assert rows[(edited, "liver")] == ("revised", 1) and rows[(edited, "aorta")] == ("revised", 2)
    third = tmp_path / "round3"
    export_review(ws.root, att, third, top=2, images=False, include_reviewed=True)
    states = _states(_worklist(third)[edited]["label_states"])
    assert states["liver"] == "revised (round 1)" and states["aorta"] == "revised (round 2)"


def _top_case_reviewed(phantom_ws, tmp_path: Path) -> tuple[Any, str]:  # type: ignore[no-untyped-def]
    """A workspace after pseudolabel whose flagged (rank 1) case came back with its liver erased."""
    ctx, _ = phantom_ws()
    ws = ctx.workspace
    run_stage(ctx, PseudolabelStage)
    att = ws.read_table("attention").to_pylist()
    flagged = sorted({(r["review_rank"], r["case_id"]) for r in att if r["review"]})
    assert [rank for rank, _ in flagged] == [1]
    cid = flagged[0][1]
    out = tmp_path / "review"
    assert export_review(ws.root, att, out, top=1, images=False).cases == [cid]
    _erase(out / cid, "liver")
    assert import_review(ws, out) == ([cid], [])
    return ctx, cid


def test_the_release_worklist_keeps_reviewed_cases_with_their_label_states(phantom_ws, tmp_path: Path) -> None:
    """The release's review/worklist.csv silently left out a flagged case once it was reviewed (an
    empty worklist here, and release.json's review.cases 0). It lists every flagged case, the
    reviewed ones with reviewed = True and their label states; release.json counts them, and the
    release's attention table says each term's state."""
    ctx, cid = _top_case_reviewed(phantom_ws, tmp_path)
    release = build_release(ctx)
    work = _worklist(release / "review")
    assert list(work) == [cid] and work[cid]["reviewed"] == "True"
    assert _states(work[cid]["label_states"])["liver"] == "revised (round 1)"
    assert {s for t, s in _states(work[cid]["label_states"]).items() if t != "liver"} == {"pseudo"}
    meta = json.loads((release / "release.json").read_text())
    assert meta["review"]["cases"] == 1 and meta["review"]["reviewed"] == 1
    att = pq.read_table(release / "attention.parquet").to_pylist()
    states = {(r["case_id"], r["term_id"]): (r["label_state"], r["review_round"]) for r in att}
    assert states[(cid, "liver")] == ("revised", 1)
    assert {s for (c, t), s in states.items() if (c, t) != (cid, "liver")} == {("pseudo", None)}
    labels = pq.read_table(release / "labels.parquet").to_pylist()
    assert [(r["review_state"], r["review_round"]) for r in labels
            if r["case_id"] == cid and r["term_id"] == "liver"] == [("revised", 1)]
    assert all(r["review_state"] is None for r in labels if r["origin"] != "revised")


def _png(path: Path) -> Any:
    return np.asarray(Image.open(path).convert("RGB"))


def test_previews_of_a_reviewed_case_show_the_label_the_release_uses(phantom_ws, tmp_path: Path) -> None:
    """A reviewed case's previews drew its pseudo label — here a liver the reviewer had erased —
    in the release and in a re-export to edit further; they draw the revised label (in the
    axial view, below the preview's header)."""
    ctx, cid = _top_case_reviewed(phantom_ws, tmp_path)
    ws = ctx.workspace
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    row = next(r for r in ws.read_table("attention").to_pylist() if r["case_id"] == cid and r["term_id"] == "liver")
    z = row["peak_slice"]
    att = read_attention(attention_path(ws.root, cid)).mask("liver", z)
    image = np.asarray(store.image[:, :, z])
    box = (slice(None), slice(None), slice(z, z + 1))
    others = neighbours(store, "liver", box)[:, :, 0]

    def drawn(layer: str) -> Any:
        return np.asarray(preview(image, store.mask("liver", layer, box)[:, :, 0], att, "CT",
                                  direction=store.geometry.direction, others=others))

    def axial(path: Path) -> Any:
        h, w = drawn("revised").shape[:2]
        return _png(path)[HEADER_HEIGHT:HEADER_HEIGHT + h, :w]

    assert not store.mask("liver", "revised").any() and store.mask("liver", "pseudo", box).any()
    assert not np.array_equal(drawn("revised"), drawn("pseudo"))
    again = tmp_path / "again"
    export_review(ws.root, ws.read_table("attention").to_pylist(), again, top=1, images=False, include_reviewed=True)
    assert np.array_equal(axial(again / cid / "preview_liver.png"), drawn("revised"))
    release = build_release(ctx)
    assert np.array_equal(axial(release / "review" / cid / "preview_liver.png"), drawn("revised"))
