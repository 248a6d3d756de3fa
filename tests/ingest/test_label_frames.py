"""M&Ms-1: a 4-D cine with a 4-D label map of as many frames. With ``channels:`` declared, each
frame's case gets the label's frame of the same number (the label was refused as not_3d with a
remedy saying to declare the channels it had declared); where that cannot be, the remedy says
what can (split the label into 3-D files), not the key that was already there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from curator.testing.phantoms import grid
from curator.testing.pipelines import make_pipeline, run, table, write_dataset_yaml

FRAMES = 3


def _cine(root: Path, case: str, label_frames: int | None, image_frames: int = FRAMES) -> np.ndarray:
    """``<case>/<case>_sa.nii.gz`` (4-D image) and ``<case>/<case>_sa_gt.nii.gz``: 4-D with
    ``label_frames`` frames, or 3-D when None. Frame t of the label codes 1 (LV) in slab t only,
    and 2 (myocardium) in frame 0 only: each frame's values differ."""
    g = grid((12, 10, 8), (1.5, 1.5, 10.0), "RAS")
    rng = np.random.default_rng(len(case))
    img = rng.normal(100, 10, (*g.shape, image_frames)).astype(np.float32)
    (root / case).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img, g.matrix), root / case / f"{case}_sa.nii.gz")
    n = label_frames or 1
    lab = np.zeros((*g.shape, n), np.uint8)
    for t in range(n):
        lab[2:5, 2:5, t + 1, t] = 1
    lab[8:10, 6:8, 4:6, 0] = 2
    nib.save(nib.Nifti1Image(lab if label_frames else lab[..., 0], g.matrix), root / case / f"{case}_sa_gt.nii.gz")
    return lab


def _pipeline(tmp_path: Path, root: Path) -> Path:
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}/{case}_sa.nii.gz", "label": "{case}/{case}_sa_gt.nii.gz",
                                         "channels": {t: f"t{t}" for t in range(FRAMES)}}],
                             {"values": {1: "left ventricle", 2: "myocardium"}}, name="MnM", modality="MR",
                             sequences={f"t{t}": "MR" for t in range(FRAMES)}, patterns={"case": "A\\d"})
    return make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}])


def test_a_4d_label_is_split_with_its_image(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    lab = _cine(root, "A1", FRAMES)
    pipe = _pipeline(tmp_path, root)
    run(pipe, stages=["ingest", "preprocess"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert {c: (r["label_status"], r["label_values"]) for c, r in cases.items()} == {
        "MnM__A1__t0": ("ok", [1, 2]), "MnM__A1__t1": ("ok", [1]), "MnM__A1__t2": ("ok", [1])}
    raw = {(r["case_id"], r["raw_value"]): r["voxels"] for r in table(pipe, "raw_labels").to_pylist()}
    for t in range(FRAMES):
        assert raw[(f"MnM__A1__t{t}", 1)] == int(np.count_nonzero(lab[..., t] == 1))
    assert not [p for p in table(pipe, "problems__ingest").to_pylist() if p["severity"] != "info"]
    # preprocess reads the same frame: each store's LV lies in its own frame's slab
    from curator.store import CaseStore

    ws = tmp_path / "workspace"
    z = {}
    for t in range(FRAMES):
        store = CaseStore(ws / "stores" / f"MnM__A1__t{t}.zarr")
        mask = store.mask("left_ventricle")
        z[t] = sorted({int(k) for k in np.nonzero(mask.any(axis=(0, 1)))[0]})
        assert ("myocardium" in store.terms()) == (t == 0)
    assert len({tuple(v) for v in z.values()}) == FRAMES  # three different slabs


def test_a_4d_label_that_cannot_be_split_says_what_can(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    _cine(root, "A1", FRAMES + 1)  # the label holds another number of frames than its image
    _cine(root, "A2", None)  # a 3-D label beside the 4-D image: every frame's label, as before
    pipe = _pipeline(tmp_path, root)
    run(pipe, stages=["ingest"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert {c: r["label_status"] for c, r in cases.items()} == {
        **{f"MnM__A1__t{t}": "rejected" for t in range(FRAMES)}, **{f"MnM__A2__t{t}": "ok" for t in range(FRAMES)}}
    rows = [p for p in table(pipe, "problems__ingest").to_pylist() if p["kind"] == "not_3d"]
    assert len(rows) == FRAMES and all(p["path"] == "MnM:A1/A1_sa_gt.nii.gz" for p in rows)
    msg = rows[0]["message"]
    assert "holds 4 frames where its image holds 3" in msg
    assert "split the label into 3-D files" in msg


def test_a_4d_label_beside_a_3d_image_is_not_told_to_declare_channels(tmp_path: Path) -> None:
    from curator.errors import CuratorError
    from curator.io.formats import read_volume

    root = tmp_path / "raw"
    _cine(root, "A1", FRAMES)
    try:
        read_volume(root / "A1" / "A1_sa_gt.nii.gz", role="label")
    except CuratorError as e:
        assert e.kind == "not_3d" and "beside a 3-D image" in str(e)
        assert "split the label into 3-D files" in (e.remedy or "")
    else:
        raise AssertionError("a 4-D label read alone was accepted")


def test_an_empty_frame_is_not_annotated_not_absent(tmp_path: Path) -> None:
    """M&Ms masks annotate ED and ES only: a frame of the 4-D label holding only background is a
    case without labels (no structure 'annotated, absent'), said in an info row."""
    root = tmp_path / "raw"
    g = grid((12, 10, 8), (1.5, 1.5, 10.0), "RAS")
    (root / "A1").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(100, 10, (*g.shape, FRAMES)).astype(np.float32),
                             g.matrix), root / "A1" / "A1_sa.nii.gz")
    lab = np.zeros((*g.shape, FRAMES), np.uint8)
    lab[2:5, 2:5, 1:3, 0] = 1  # ED drawn, frames 1 and 2 not
    nib.save(nib.Nifti1Image(lab, g.matrix), root / "A1" / "A1_sa_gt.nii.gz")
    pipe = _pipeline(tmp_path, root)
    run(pipe, stages=["ingest"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert {c: (r["has_label"], r["label_status"], r["label_paths"]) for c, r in cases.items()} == {
        "MnM__A1__t0": (True, "ok", ["A1/A1_sa_gt.nii.gz"]), "MnM__A1__t1": (False, "missing", []),
        "MnM__A1__t2": (False, "missing", [])}
    assert {r["case_id"] for r in table(pipe, "raw_labels").to_pylist()} == {"MnM__A1__t0"}
    rows = {(p["case_id"], p["kind"], p["severity"]) for p in table(pipe, "problems__ingest").to_pylist()}
    assert rows == {("MnM__A1__t1", "label_frame_unannotated", "info"),
                    ("MnM__A1__t2", "label_frame_unannotated", "info")}


def test_only_cases_of_a_4d_label_are_ingested_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a 4-D label by frame changed only the cases holding one: a workspace ingested by a
    curator before that (whose keys carried no ``label_frames``) keeps the cached results of the
    channel cases with a 3-D label, read as before (it ingested every channel case again)."""
    from curator.ingest.stage import IngestStage

    root = tmp_path / "raw"
    _cine(root, "A1", FRAMES)  # a 4-D label: read anew
    _cine(root, "A2", None)  # a 3-D label beside the 4-D image: read as before
    pipe = _pipeline(tmp_path, root)
    plan = IngestStage.plan

    def before(self: IngestStage) -> list[Any]:  # the keys of a curator before 4-D labels were split
        tasks = plan(self)
        for t in tasks:
            t.payload.pop("label_frames", None)
        return tasks

    with monkeypatch.context() as m:
        m.setattr(IngestStage, "plan", before)
        run(pipe, stages=["ingest"])
    again = {r.stage: r.ran for r in run(pipe, stages=["ingest"]).reports}
    assert again == {"ingest": FRAMES}  # A1's frames alone
    assert {r.stage: r.ran for r in run(pipe, stages=["ingest"]).reports} == {"ingest": 0}
    cases = {c["case_id"]: c["label_status"] for c in table(pipe, "cases").to_pylist()}
    assert set(cases.values()) == {"ok"} and len(cases) == 2 * FRAMES
