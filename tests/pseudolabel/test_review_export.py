"""What a radiologist reviewing an export in ITK-SNAP / 3D Slicer asked of ``curator review export``:
one code per structure in every case, previews to decide from quickly, cases reviewed in part
coming back, no dropped duplicates, cases by name, and the dataset's own label beside."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from curator.errors import ConfigError
from curator.pseudolabel.review import _write_editable, export_review
from curator.pseudolabel.review_import import import_review
from curator.pseudolabel.review_preview import HEADER_HEIGHT, NEIGHBOURS, case_preview, term_window
from curator.pseudolabel.stage import PseudolabelStage
from curator.runner.run import run_stage
from curator.schema import to_arrow
from curator.store import CaseStore
from curator.testing.segmodels import write_phantom_store
from tests.pseudolabel.conftest import CASES
from tests.pseudolabel.test_review_release import _accept


def _worklist(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "worklist.csv", newline="", encoding="utf-8") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def _codes(path: Path) -> dict[tuple[str, ...], int]:
    return {tuple(ts): int(c) for c, ts in json.loads(path.read_text()).items()}


def _labelled(phantom_ws) -> tuple[Any, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    return ctx.workspace, ctx.workspace.read_table("attention").to_pylist()


def test_a_term_has_one_code_in_every_case_of_an_export_and_the_root_holds_the_tables(
        phantom_ws, tmp_path: Path) -> None:
    """The pseudo layers number their terms per dataset (code 2 is pancreas here, spleen there): an
    ITK-SNAP label file loaded for one case named the wrong structures in the next. Each term now has one code in
    every case folder, the export's root holds codes.json and both colour tables of every code, a
    second export into the folder keeps the codes, and import reads the cases back."""
    ws, att = _labelled(phantom_ws)
    stores = {c: CaseStore(ws.stores_dir / f"{c}.zarr") for c, _, _ in CASES}
    store_codes = [{c: tuple(ts) for _, vals in s.planes("pseudo") for c, ts in vals.items()} for s in stores.values()]
    assert any(a[c] != b[c] for a in store_codes for b in store_codes for c in set(a) & set(b))  # the bug's premise
    out = tmp_path / "review"
    first = export_review(ws.root, att, out, top=1, images=False).cases
    export_review(ws.root, att, out, top=len(CASES), images=False)
    root = _codes(out / "codes.json")
    assert len(set(root.values())) == len(root)
    for cid, store in stores.items():
        mine = _codes(out / cid / "codes.json")
        assert all(root[ts] == c for ts, c in mine.items()), cid
        data = np.asarray(nib.load(out / cid / "pseudo.nii.gz").dataobj)
        for ts, c in mine.items():
            assert np.array_equal(data == c, store.mask(ts[0], "pseudo")), (cid, ts)
        snap = (out / cid / "labels_itksnap.txt").read_text()
        assert all(f'"{ts[0]}"' in snap for ts in mine)
    snap = [line.split() for line in (out / "labels_itksnap.txt").read_text().splitlines() if line[:1] == " "]
    assert {int(r[0]) for r in snap} == {0, *root.values()}
    slicer = [line.split()[0] for line in (out / "labels_slicer.txt").read_text().splitlines() if line[:1] != "#"]
    assert sorted(map(int, slicer)) == sorted({0, *root.values()})
    assert _codes(out / first[0] / "codes.json").items() <= root.items()  # the first export's codes kept
    # import reads each case's own codes.json / export.json: erase the liver in two cases
    liver = root[("liver",)]
    two = [c for c, _, _ in CASES[:1]] + [c for c, _, _ in CASES[2:3]]  # one case of each dataset
    for cid in two:
        img = nib.load(out / cid / "pseudo.nii.gz")
        data = np.asarray(img.dataobj).copy()
        assert (data == liver).any()
        data[data == liver] = 0
        nib.save(nib.Nifti1Image(data, img.affine), out / cid / "revised.nii.gz")
    assert import_review(ws, out) == (sorted(two), [])
    for cid in two:
        store = CaseStore(ws.stores_dir / f"{cid}.zarr")
        assert store.terms("revised") == ["liver"] and not store.mask("liver", "revised").any()


def _text(path: Path) -> dict[str, str]:
    with Image.open(path) as img:
        return dict(img.text)  # type: ignore[attr-defined]


def test_previews_show_two_views_neighbours_and_say_case_term_slice_and_window(phantom_ws, tmp_path: Path) -> None:
    """A preview was one unlabelled axial slice in a soft-tissue window. It now has an axial and a
    coronal view, the neighbouring structures outlined in blue, a header naming case, term, slices
    and window, and the same in its PNG text chunks."""
    ws, att = _labelled(phantom_ws)
    out = tmp_path / "review"
    cid = export_review(ws.root, att, out, top=1, images=False).cases[0]
    row = next(r for r in att if r["case_id"] == cid and r["term_id"] == "liver")
    path = out / cid / "preview_liver.png"
    text = _text(path)
    assert text["case_id"] == cid and text["term_id"] == "liver"
    assert text["axial_slice"] == str(row["peak_slice"]) and text["window"] == "soft tissue [-160, 240]"
    assert text["coronal_slice"].startswith("j=")
    png = np.asarray(Image.open(path).convert("RGB"))
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    nx = store.geometry.shape[0]
    assert png.shape[1] > 2 * 3 * nx  # two views side by side, 3 pixels a voxel
    assert (png[:HEADER_HEIGHT].min(axis=-1) > 150).sum() > 50  # white header text
    assert (png == np.array(NEIGHBOURS)).all(axis=-1).sum() > 10  # neighbours' outlines


class _NoAttention:
    def mask(self, term: str, z: int | None = None, box: Any = None) -> Any:
        shape = (40, 32) if z is not None else tuple(1 if s.stop is not None else n for s, n in zip(box, (40, 32, 20)))
        return np.zeros(shape, bool)


@pytest.mark.parametrize(("term", "window"), [("lung_left", "lung [-1350, 150]"), ("rib_left_5", "bone [-500, 1300]"),
                                              ("liver", "soft tissue [-160, 240]")])
def test_ct_previews_are_windowed_by_term(tmp_path: Path, term: str, window: str) -> None:
    """Every CT preview was in a soft-tissue window, where a lung is black and bone white."""
    store = write_phantom_store(tmp_path / "c.zarr", 5, {})
    plane = np.zeros(store.geometry.shape, np.uint8)
    plane[10:20, 10:20, 5:15] = 1
    store.write_layer("pseudo", [(plane, {1: [term]})], {"origin": "pseudo"})
    img, text = case_preview(CaseStore(store.path), _NoAttention(), term, 10, "CT")
    assert text["window"] == window
    assert img.width > 0 and term_window("lung_upper_lobe_left", "MR") == "percentile"


def test_a_case_reviewed_in_part_comes_back_for_its_flagged_terms_not_reviewed(phantom_ws, tmp_path: Path) -> None:
    """A case with its liver revised and its other flagged terms still pseudo disappeared from the
    next export as if reviewed. It comes back (worklist.csv's to_review names what is left), and
    once every flagged term is revised or accepted it is left out."""
    ws, att = _labelled(phantom_ws)
    first = tmp_path / "r1"
    cid = export_review(ws.root, att, first, top=1, images=False).cases[0]
    liver = _codes(first / cid / "codes.json")[("liver",)]
    img = nib.load(first / cid / "pseudo.nii.gz")
    data = np.asarray(img.dataobj).copy()
    data[data == liver] = 0
    nib.save(nib.Nifti1Image(data, img.affine), first / cid / "revised.nii.gz")
    assert import_review(ws, first) == ([cid], [])
    flagged = [r["term_id"] for r in sorted((r for r in att if r["case_id"] == cid and r["attention_size"] > 0),
                                            key=lambda r: (-r["attention_size"], r["term_id"]))]
    assert "liver" in flagged and len(flagged) > 1

    second = tmp_path / "r2"
    res = export_review(ws.root, att, second, top=1, images=False)
    assert res.cases == [cid] and res.partial == [cid] and res.reviewed == []
    row = _worklist(second)[cid]
    assert row["to_review"].split(";") == [t for t in flagged if t != "liver"] and row["reviewed"] == "True"
    assert row["open_label"] == f"{cid}/revised.nii.gz"

    _accept(second, {cid: "all"})
    assert import_review(ws, second)[0] == [cid]
    third = tmp_path / "r3"
    res = export_review(ws.root, att, third, top=1, images=False)
    assert cid not in res.cases and res.reviewed == [cid] and res.partial == []


def test_duplicates_dedup_dropped_are_never_exported(phantom_ws, tmp_path: Path) -> None:
    """A duplicate dedup dropped is not released, yet --top / --fraction exported it for review."""
    ws, att = _labelled(phantom_ws)
    ranked = [c for _, c in sorted({(r["review_rank"], r["case_id"]) for r in att})]
    dropped, kept = ranked[0], ranked[1]
    group = [{"group_id": "g1", "case_id": c, "dataset": "MSD_Spleen", "kept": c == kept, "kept_case_id": kept,
              "group_size": 2, "reason": "same scan"} for c in (dropped, kept)]
    ws.write_table("duplicates", to_arrow("duplicates", group))
    out = tmp_path / "review"
    res = export_review(ws.root, att, out, top=len(CASES), images=False)
    assert dropped not in res.cases and res.duplicates == {dropped: kept}
    assert sorted(res.cases) == sorted(set(ranked) - {dropped}) and not (out / dropped).exists()
    assert dropped not in _worklist(out)
    assert export_review(ws.root, att, tmp_path / "f", fraction=1.0, images=False).duplicates == {dropped: kept}
    with pytest.raises(ConfigError, match=f"{dropped}.*duplicate dedup dropped.*{kept}"):
        export_review(ws.root, att, tmp_path / "named", cases=[dropped], images=False)


def test_cases_are_exported_by_name_and_an_unknown_name_says_the_close_ones(phantom_ws, tmp_path: Path) -> None:
    """--case exports the cases named whatever their rank (the last-ranked one here)."""
    ws, att = _labelled(phantom_ws)
    ranked = [c for _, c in sorted({(r["review_rank"], r["case_id"]) for r in att})]
    out = tmp_path / "review"
    res = export_review(ws.root, att, out, cases=[ranked[-1], ranked[-1]], images=False)
    assert res.cases == [ranked[-1]] and list(_worklist(out)) == [ranked[-1]]
    with pytest.raises(ConfigError, match="'MSD_Spleen__spleen_9' is no case.*did you mean 'MSD_Spleen__spleen_"):
        export_review(ws.root, att, tmp_path / "x", cases=["MSD_Spleen__spleen_9"], images=False)
    with pytest.raises(ConfigError, match="--case, or --top"):
        export_review(ws.root, att, tmp_path / "y", cases=[ranked[0]], top=1, images=False)


def test_the_datasets_own_label_is_written_read_only_in_the_exports_codes(phantom_ws, tmp_path: Path) -> None:
    """The reviewer had no view of the dataset's own label of the case. original.nii.gz holds it,
    in the export's codes (the root's label files colour it), read-only, said in README and
    worklist; a case with no label of its dataset gets none."""
    ws, att = _labelled(phantom_ws)
    out = tmp_path / "review"
    cid = export_review(ws.root, att, out, top=1, images=False).cases[0]
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    root = _codes(out / "codes.json")
    path = out / cid / "original.nii.gz"
    data = np.asarray(nib.load(path).dataobj)
    (term,) = store.terms("original")
    assert np.array_equal(data == root[(term,)], store.mask(term, "original")) and data.any()
    assert set(np.unique(data).tolist()) == {0, root[(term,)]}
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert _worklist(out)[cid]["original_label"] == f"{cid}/original.nii.gz"
    assert "original.nii.gz" in (out / "README.txt").read_text()
    assert (term,) not in _codes(out / cid / "codes.json")  # not a code to paint
    export_review(ws.root, att, out, top=1, images=False)  # written again over the read-only file

    bare = write_phantom_store(tmp_path / "bare.zarr", 3, {})
    bare.write_layer("pseudo", [(np.ones(bare.geometry.shape, np.uint8), {1: ["liver"]})], {"origin": "pseudo"})
    (tmp_path / "bare").mkdir()
    _write_editable(CaseStore(bare.path), tmp_path / "bare", images=False)
    assert (tmp_path / "bare" / "pseudo.nii.gz").is_file() and not (tmp_path / "bare" / "original.nii.gz").exists()
