"""A --partial nnU-Net export marks what a case's dataset did not annotate with nnU-Net's ignore
label, not background: training on background there teaches false negatives (a KiTS case's liver
as "no liver"). A term annotated but absent in a case stays background (a true negative)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from typer.testing import CliRunner

from curator.errors import ConfigError
from curator.export import export_monai, export_nnunet
from curator.export.common import ExportCase, ExportReport, label_map, write_case
from curator.store import CaseStore
from tests.preprocess.conftest import Tiny
from tests.preprocess.test_export import NNUNET_CHECK, _client, _run

KITS = [f"TinyKits__case_{i:05d}" for i in range(3)]


@pytest.fixture
def absent_rel(tiny: Tiny, tmp_path: Path) -> Path:
    """A copy of the tiny release whose TotalSegmentator s0000 is labelled for a gallbladder it
    lacks (annotated, no voxel); s0001 and the KiTS cases do not annotate gallbladders."""
    import pyarrow.parquet as pq

    from curator.schema import to_arrow
    from curator.testing.releases import reseal

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    rows = pq.read_table(rel / "labels.parquet").to_pylist() if (rel / "labels.parquet").is_file() else []
    rows.append({"case_id": "TinyTotalSeg__s0000", "dataset": "TinyTotalSeg", "term_id": "gallbladder",
                 "term": "gallbladder", "origin": "original", "layer": "original", "derived": False,
                 "annotated": True, "present": False, "voxels": 0, "volume_ml": 0.0})
    pq.write_table(to_arrow("labels", rows), rel / "labels.parquet")
    reseal(rel)
    return rel


def _label(folder: Path, case: str) -> NDArray[np.integer]:
    [path] = [p for sub in ("labelsTr", "labelsTs") if (p := folder / sub / f"{case}.nii.gz").is_file()]
    return np.asarray(cast(nib.Nifti1Image, nib.load(path)).dataobj)


def _union(store: CaseStore, *terms: str) -> NDArray[np.bool_]:
    return np.any([store.mask(t) for t in terms if t in store.terms()], axis=0)


def test_partial_nnunet_export_marks_unannotated_terms_ignore(absent_rel: Path, tmp_path: Path) -> None:
    terms = ["liver", "kidney", "gallbladder"]  # ignore = 4
    with pytest.warns(UserWarning, match="annotate it as absent"):
        rep = export_nnunet(absent_rel, tmp_path / "raw", dataset_id=601, name="Ign", terms=terms, partial=True)
    assert sorted(rep.cases) == sorted([*KITS, "TinyTotalSeg__s0000", "TinyTotalSeg__s0001"])
    ds = json.loads((rep.folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "liver": 1, "kidney": 2, "gallbladder": 3, "ignore": 4}
    assert ds["labels"]["ignore"] == max(ds["labels"].values())  # nnU-Net: the highest label
    assert rep.unknown == {**{c: ["liver", "gallbladder"] for c in KITS}, "TinyTotalSeg__s0001": ["gallbladder"]}
    stores = absent_rel / "stores"
    for case in KITS:  # no liver, no gallbladder annotated: everything but the kidney is unknown
        kidney = CaseStore(stores / f"{case}.zarr").mask("kidney")
        assert np.array_equal(_label(rep.folder, case), np.where(kidney, 2, 4))
        assert rep.ignored[case] == int((~kidney).sum())
    ts1 = CaseStore(stores / "TinyTotalSeg__s0001.zarr")  # no gallbladder annotated: background is unknown
    want = np.full(ts1.geometry.shape, 4, np.uint8)
    want[ts1.mask("liver")] = 1
    want[_union(ts1, "kidney", "kidney_left", "kidney_right")] = 2
    assert np.array_equal(_label(rep.folder, "TinyTotalSeg__s0001"), want)
    ts0 = CaseStore(stores / "TinyTotalSeg__s0000.zarr")  # gallbladder annotated, absent: true background
    want = np.zeros(ts0.geometry.shape, np.uint8)
    want[ts0.mask("liver")] = 1
    want[_union(ts0, "kidney", "kidney_left", "kidney_right")] = 2
    got = _label(rep.folder, "TinyTotalSeg__s0000")
    assert np.array_equal(got, want) and (got == 0).any() and "TinyTotalSeg__s0000" not in rep.ignored
    record = json.loads((rep.folder / "curator_export.json").read_text())["partial"]
    assert record["missing"] == "ignore" and record["ignore_label"] == 4 and record["unknown_terms"] == rep.unknown
    assert any("ignore label 4" in n for n in rep.notes)
    python = _client("nnunetv2")  # nnU-Net accepts the ignore label as declared and written
    assert "INTEGRITY OK" in _run(python, NNUNET_CHECK, str(rep.folder))


def test_an_unknown_part_makes_its_whole_unknown_not_the_background(tiny: Tiny, tmp_path: Path) -> None:
    """KiTS labels kidneys, not sides: its kidney voxels may be the left kidney (label 2 would win
    there), so they are unknown; its background is not — a left kidney is part of the kidneys.
    Kept as kidney they would teach "not the left kidney" on half of them."""
    rep = export_nnunet(tiny.release, tmp_path / "raw", dataset_id=602, name="Side", terms=["kidney", "kidney_left"],
                        partial=True)
    assert json.loads((rep.folder / "dataset.json").read_text())["labels"]["ignore"] == 3
    for case in KITS:
        kidney = CaseStore(tiny.release / "stores" / f"{case}.zarr").mask("kidney")
        assert kidney.any() and np.array_equal(_label(rep.folder, case), np.where(kidney, 3, 0))
    ts = CaseStore(tiny.release / "stores" / "TinyTotalSeg__s0000.zarr")  # holds both: unchanged
    got = _label(rep.folder, "TinyTotalSeg__s0000")
    assert np.array_equal(got == 2, ts.mask("kidney_left")) and not (got == 3).any()


class _Store:
    """What label_map reads of a store: masks by term."""

    def __init__(self, masks: dict[str, NDArray[np.bool_]]) -> None:
        self.m = masks

    def masks_from(self, chosen: object, terms: list[str]) -> NDArray[np.bool_]:
        return np.stack([self.m[t] for t in terms]) if terms else np.zeros((0, 6), bool)


def test_label_map_ignores_only_where_an_unknown_term_could_win() -> None:
    a = np.array([1, 1, 0, 0, 0, 0], bool)  # organ A, annotated
    b = np.array([0, 0, 1, 1, 0, 0], bool)  # organ B, annotated
    store = _Store({"A": a, "B": b})
    # T unknown, unrelated to A and B: background unknown, A and B stay
    out, _, n = label_map(store, ["A", "T", "B"], {}, {"A": ["A"], "T": [], "B": ["B"]}, ignore=4)  # type: ignore[arg-type]
    assert out.tolist() == [1, 1, 3, 3, 4, 4] and n == 2
    # T part of A (a tumour of organ A) and after it: A's voxels unknown, background known
    anatomy = {"A": ["A", "T"], "T": ["T"], "B": ["B"]}
    out, _, n = label_map(store, ["A", "B", "T"], {}, {"A": ["A"], "B": ["B"], "T": []}, ignore=4,  # type: ignore[arg-type]
                          anatomy=anatomy)
    assert out.tolist() == [4, 4, 2, 2, 0, 0] and n == 2
    # T part of A but before it: A wins wherever T is, nothing is unknown
    out, _, n = label_map(store, ["T", "A"], {}, {"T": [], "A": ["A"]}, ignore=3, anatomy=anatomy)  # type: ignore[arg-type]
    assert out.tolist() == [2, 2, 0, 0, 0, 0] and n == 0
    # without ignore (--missing background) or with every term known: the plain label map
    out, _, n = label_map(store, ["A", "T", "B"], {}, {"A": ["A"], "T": [], "B": ["B"]})  # type: ignore[arg-type]
    assert out.tolist() == [1, 1, 3, 3, 0, 0] and n == 0
    out, _, n = label_map(store, ["A", "B"], {}, {"A": ["A"], "B": ["B"]}, ignore=3)  # type: ignore[arg-type]
    assert out.tolist() == [1, 1, 2, 2, 0, 0] and n == 0


def test_full_terms_export_is_unchanged_by_partial(tiny: Tiny, tmp_path: Path) -> None:
    """Every KiTS case annotates kidney, tumour and cyst: --partial adds no ignore label, and the
    files are those of the export without it."""
    terms = ["kidney", "kidney_tumor", "kidney_cyst"]
    full = export_nnunet(tiny.release, tmp_path / "a", dataset_id=603, name="K", terms=terms,
                         where="dataset = 'TinyKits'")
    part = export_nnunet(tiny.release, tmp_path / "b", dataset_id=603, name="K", terms=terms,
                         where="dataset = 'TinyKits'", partial=True)
    assert full.cases == part.cases == KITS and not part.unknown and not part.ignored
    assert json.loads((full.folder / "dataset.json").read_text()) == json.loads(
        (part.folder / "dataset.json").read_text())
    assert "ignore" not in json.loads((part.folder / "dataset.json").read_text())["labels"]
    for case in KITS:
        assert np.array_equal(_label(full.folder, case), _label(part.folder, case))
    assert json.loads((part.folder / "curator_export.json").read_text())["partial"] == {
        "missing": "ignore", "ignore_label": None, "unknown_terms": {}, "ignored_voxels": {}, "no_background": [],
        "unknown_by_reason": {}, "unknown_reasons": {}}


def test_missing_background_keeps_the_old_labels(tiny: Tiny, tmp_path: Path) -> None:
    from curator.cli import app

    rep = export_nnunet(tiny.release, tmp_path / "raw", dataset_id=604, name="Bg", terms=["liver", "kidney"],
                        partial=True, missing="background")
    assert "ignore" not in json.loads((rep.folder / "dataset.json").read_text())["labels"]
    kidney = CaseStore(tiny.release / "stores" / f"{KITS[0]}.zarr").mask("kidney")
    assert np.array_equal(_label(rep.folder, KITS[0]), np.where(kidney, 2, 0))
    assert rep.unknown[KITS[0]] == ["liver"] and not rep.ignored
    assert any("written as background" in n for n in rep.notes)
    with pytest.raises(ConfigError, match="missing='unknown'"):
        export_nnunet(tiny.release, tmp_path / "x", dataset_id=605, name="X", terms=["liver"], missing="unknown")
    base = ["export", "nnunet", str(tiny.release), "--terms", "liver,kidney", "--id", "606", "--out"]
    res = CliRunner().invoke(app, [*base, str(tmp_path / "c1"), "--missing", "background"])
    assert res.exit_code == 2 and "add --partial" in " ".join(res.output.split()), res.output
    res = CliRunner().invoke(app, [*base, str(tmp_path / "c2"), "--partial", "--missing", "nothing"])
    assert res.exit_code == 2 and "give one of ignore, background" in " ".join(res.output.split()), res.output
    res = CliRunner().invoke(app, [*base, str(tmp_path / "c3"), "--partial"])
    assert res.exit_code == 0 and "ignore label 3" in " ".join(res.output.split()), res.output


def test_monai_partial_keeps_background_and_lists_the_annotated_terms(absent_rel: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="annotate it as absent"):
        rep = export_monai(absent_rel, tmp_path / "m", terms=["liver", "gallbladder"], partial=True)
    data = json.loads((tmp_path / "m" / "datalist.json").read_text())
    entries = {e["case_id"]: e for k in ("training", "validation", "test") for e in data.get(k, [])}
    assert entries["TinyTotalSeg__s0000"]["annotated"] == ["liver", "gallbladder"]  # annotated, absent: known
    assert entries["TinyTotalSeg__s0001"]["annotated"] == ["liver"]
    assert all(e["present"] == e["annotated"] for e in entries.values())  # deprecated, kept for one version
    assert data["labels"] == {"0": "background", "1": "liver", "2": "gallbladder"}
    assert rep.unknown == {"TinyTotalSeg__s0001": ["gallbladder"]}
    assert any("'annotated' key lists the case's annotated terms" in n for n in rep.notes)


def test_label_map_bounds_an_unknown_term_by_the_labels_that_may_hold_it() -> None:
    """A kidney tumour the dataset does not label lies inside its whole-organ kidney label (the
    taxonomy's may_include): those voxels are unknown, whichever code comes first, and the
    background is not; with no such label it may be anywhere, as before."""
    a = np.array([1, 1, 0, 0, 0, 0], bool)  # the dataset's kidney, tumours included
    b = np.array([0, 0, 1, 1, 0, 0], bool)  # an unrelated organ
    store = _Store({"A": a, "B": b})
    use = {"A": ["A"], "T": [], "B": ["B"]}
    out, _, n = label_map(store, ["A", "T", "B"], {}, use, ignore=4, may_hold={"A": {"T"}})  # type: ignore[arg-type]
    assert out.tolist() == [4, 4, 3, 3, 0, 0] and n == 2
    out, _, n = label_map(store, ["T", "A", "B"], {}, use, ignore=4, may_hold={"A": {"T"}})  # type: ignore[arg-type]
    assert out.tolist() == [4, 4, 3, 3, 0, 0] and n == 2  # A's code over T's: its voxels may still be T
    out, _, n = label_map(store, ["A", "T", "B"], {}, use, ignore=4, may_hold={"B": {"X"}})  # type: ignore[arg-type]
    assert out.tolist() == [1, 1, 3, 3, 4, 4] and n == 2  # nothing may hold T: anywhere but A and B
    out, _, n = label_map(store, ["T", "B"], {}, {"T": [], "B": ["B"]}, ignore=3, may_hold={"A": {"T"}})  # type: ignore[arg-type]
    assert out.tolist() == [3, 3, 2, 2, 3, 3] and n == 4  # the label that may hold it is not requested


def test_partial_kidney_tumour_is_unknown_inside_whole_organ_kidneys_only(tiny: Tiny, tmp_path: Path) -> None:
    """TinyTotalSeg labels whole kidneys and no renal mass (a tumour inside is part of its
    'kidney', the taxonomy's kidney may_include kidney_mass): with --terms kidney,kidney_tumor,liver
    its kidney voxels are the ignore label — not certain kidney — and its background stays
    background. KiTS cases annotate no liver, which may be anywhere outside their kidneys: they keep
    no background voxel, and the export warns so with counts (tester 35 #1)."""
    terms = ["kidney", "kidney_tumor", "liver"]  # ignore = 4
    rep = export_nnunet(tiny.release, tmp_path / "raw", dataset_id=607, name="Kt", terms=terms, partial=True)
    ts = ["TinyTotalSeg__s0000", "TinyTotalSeg__s0001"]
    assert rep.unknown == {**{c: ["liver"] for c in KITS}, **{c: ["kidney_tumor"] for c in ts}}
    stores = tiny.release / "stores"
    for case in ts:
        s = CaseStore(stores / f"{case}.zarr")
        kidney = _union(s, "kidney", "kidney_left", "kidney_right")
        want = np.zeros(s.geometry.shape, np.uint8)
        want[s.mask("liver")] = 3
        want[kidney] = 4
        got = _label(rep.folder, case)
        assert kidney.any() and (got == 0).any() and np.array_equal(got, want)
        assert rep.ignored[case] == int(kidney.sum())
    for case in KITS:  # liver unknown, unbounded: every voxel but the kidney and its tumour
        s = CaseStore(stores / f"{case}.zarr")
        want = np.full(s.geometry.shape, 4, np.uint8)
        want[s.mask("kidney")] = 1
        want[_union(s, "kidney_tumor")] = 2
        assert np.array_equal(_label(rep.folder, case), want)
    assert sorted(rep.no_background) == KITS
    record = json.loads((rep.folder / "curator_export.json").read_text())["partial"]
    assert sorted(record["no_background"]) == KITS
    [warning] = [n for n in rep.notes if n.startswith("warning: ") and "background" in n]
    assert warning.startswith("warning: 3 of 5 exported cases") and "liver in 3" in warning


def test_partial_export_warns_when_no_case_keeps_background(tiny: Tiny, tmp_path: Path) -> None:
    """KiTS annotates no spleen, which may lie anywhere outside its kidneys: with only KiTS cases
    selected, no case keeps a background voxel, and the command says so as a warning."""
    from curator.cli import app

    res = CliRunner().invoke(app, ["export", "nnunet", str(tiny.release), "--terms", "kidney,spleen", "--partial",
                                   "--where", "dataset = 'TinyKits'", "--id", "608", "--out", str(tmp_path / "c")])
    said = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "warning 3 of 3 exported cases" in said and "spleen in 3" in said, said
    assert "no training case teaches nnU-Net background" in said, said
    for case in KITS:
        got = _label(tmp_path / "c" / "Dataset608_Curator", case)
        assert (got == 3).any() and not (got == 0).any()



def test_a_term_labelled_apart_is_not_bounded_by_the_label_that_may_hold_it(tiny: Tiny, tmp_path: Path) -> None:
    """KiTS labels its cysts apart from its kidney (the parenchyma), unsided: a sided cyst is unknown
    there, and the kidney label may not hold it (kidney's may_include is for datasets labelling no
    mass apart) — its cyst voxels, written as background, are the ignore label, not certain
    background (review s31 #1). TotalSegmentator labels no mass apart: its kidneys still bound it.
    (No tiny case labels a sided cyst, which export_nnunet refuses: each case is written alone.)"""
    terms, stores = ["kidney", "kidney_cyst_left"], tiny.release / "stores"
    cysts = 0
    for case in [*KITS, "TinyTotalSeg__s0001"]:
        s = CaseStore(stores / f"{case}.zarr")
        report = ExportReport(tmp_path)
        got_terms = write_case(ExportCase(case, case.split("__")[0], "CT", s.path, s.terms(), "train"), terms, True,
                               tmp_path / f"{case}_0000.nii.gz", tmp_path / f"{case}.nii.gz", report, ignore=3)
        assert got_terms == ["kidney"] and report.unknown == {case: ["kidney_cyst_left"]}
        got = np.asarray(cast(nib.Nifti1Image, nib.load(tmp_path / f"{case}.nii.gz")).dataobj)
        kidney = _union(s, "kidney", "kidney_left", "kidney_right")
        if case.startswith("TinyTotalSeg"):  # whole-organ kidneys, no mass apart: the bound holds
            assert np.array_equal(got, np.where(kidney, 3, 0))
            continue
        cyst = s.mask("kidney_cyst")
        cysts += int(cyst.sum())
        assert (got[cyst] == 3).all()  # the cyst voxels may be the left cyst: ignore, not background
        assert np.array_equal(got, np.where(kidney, 1, 3))  # unbounded, as without may_include
    assert cysts  # the phantoms have cyst voxels to check
