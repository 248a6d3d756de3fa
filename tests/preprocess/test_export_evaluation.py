"""What an evaluation needs from an export and the loader: the test split is not QC-filtered by
default (``--qc-filter-test`` opts in) and the export says which test cases and labels it holds
back or exports despite a QC flag; a term whose datasets' labels mean different things is
warned of; nnU-Net exports of the test split alone; unknown terms counted by reason; the MONAI
datalist's ``annotated`` (``present`` deprecated) and ``nonempty``; the modality check looks only
at the cases holding the terms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from curator.errors import ConfigError, ReleaseError
from curator.export import export_monai, export_nnunet
from curator.store import CaseStore
from curator.testing.releases import reseal
from curator.torch import CaseDataset
from tests.preprocess.conftest import Tiny
from tests.preprocess.test_export import _client, _run

TEST, TRAIN = "TinyKits__case_00001", "TinyKits__case_00002"  # both with a kidney_tumor QC excluded
REASON = "SOLF: sphericity below the cohort's bounds"


def _rows(rel: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow.parquet as pq

    from curator.schema import to_arrow

    old = pq.read_table(rel / "labels.parquet").to_pylist() if (rel / "labels.parquet").is_file() else []
    pq.write_table(to_arrow("labels", [*old, *rows]), rel / "labels.parquet")


@pytest.fixture
def qc_rel(tiny: Tiny, tmp_path: Path) -> Path:
    """A copy of the tiny release whose KiTS case_00001 is the test split (the others train) and
    whose case_00001 (test) and case_00002 (train) kidney tumour labels QC excluded."""
    import polars as pl

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    splits = pl.read_parquet(rel / "splits.parquet")
    splits.with_columns(pl.when(pl.col("case_id") == TEST).then(pl.lit("test")).otherwise(pl.lit("train"))
                        .alias("split")).write_parquet(rel / "splits.parquet")
    _rows(rel, [{"case_id": c, "dataset": "TinyKits", "term_id": "kidney_tumor", "term": "kidney tumor",
                 "origin": "original", "layer": "original", "derived": False, "annotated": True, "present": True,
                 "voxels": 1, "volume_ml": 0.1, "qc_decision": "exclude", "qc_reason": REASON} for c in (TEST, TRAIN)])
    reseal(rel)
    return rel


def _label(path: Path) -> np.ndarray:
    return np.asarray(cast(nib.Nifti1Image, nib.load(path)).dataobj)


def test_test_cases_are_not_qc_filtered_unless_asked(qc_rel: Path, tmp_path: Path) -> None:
    """Tester (evaluation): QC's filter dropped the test case's tumour, so it went to imagesTs
    without a label — the test set shrank towards easy cases, silently."""
    where = "dataset = 'TinyKits'"
    rep = export_nnunet(qc_rel, tmp_path / "raw", dataset_id=21, name="T", terms=["kidney_tumor"], where=where)
    assert TEST in rep.cases and TEST not in rep.images_only
    assert TRAIN in rep.skipped and rep.skipped[TRAIN].startswith("QC excluded its kidney_tumor")  # train: filtered
    tumour = CaseStore(qc_rel / "stores" / f"{TEST}.zarr").mask("kidney_tumor")
    assert tumour.any() and np.array_equal(_label(rep.folder / "labelsTs" / f"{TEST}.nii.gz") == 1, tumour)
    info = json.loads((rep.folder / "curator_export.json").read_text())
    assert info["qc_filter"] is True and info["qc_filter_test"] is False
    assert info["test_qc_flagged"] == {TEST: [{"term": "kidney_tumor", "layer": "original", "qc_reason": REASON}]}
    assert info["test_withheld"] == {"cases": {}, "labels": {}}
    assert any("exported with labels QC flagged" in n for n in rep.notes), rep.notes

    opt = export_nnunet(qc_rel, tmp_path / "raw2", dataset_id=22, name="T", terms=["kidney_tumor"], where=where,
                        qc_filter_test=True)
    assert opt.images_only == [TEST] and not (opt.folder / "labelsTs" / f"{TEST}.nii.gz").exists()
    info = json.loads((opt.folder / "curator_export.json").read_text())
    assert info["qc_filter_test"] is True and info["test_qc_flagged"] == {}
    assert info["test_withheld"]["labels"] == {TEST: [{"term": "kidney_tumor", "layer": "original",
                                                       "qc_reason": REASON}]}
    assert "written without a label" in info["test_withheld"]["cases"][TEST]
    assert "QC excluded its kidney_tumor" in info["test_withheld"]["cases"][TEST]
    assert info["test_withheld"]["cases"][TEST].endswith("a test case: without --qc-filter-test "
                                                         "(qc_filter_test=False) it is exported")

    monai = export_monai(qc_rel, tmp_path / "monai", terms=["kidney_tumor"], where=where)
    data = json.loads((monai.folder / "datalist.json").read_text())
    assert [e["case_id"] for e in data["test"]] == [TEST] and "label" in data["test"][0]
    assert data["qc_filter_test"] is False and TEST in data["test_qc_flagged"]
    monai = export_monai(qc_rel, tmp_path / "monai2", terms=["kidney_tumor"], where=where, qc_filter_test=True)
    data = json.loads((monai.folder / "datalist.json").read_text())
    assert "label" not in data["test"][0] and TEST in data["test_withheld"]["labels"]


def test_case_dataset_of_the_test_split_is_not_qc_filtered_unless_asked(qc_rel: Path) -> None:
    ds = CaseDataset(qc_rel, terms=["kidney_tumor"], split="test")
    assert [c["case_id"] for c in ds.cases] == [TEST]
    item = ds[0]
    assert item["present"].tolist() == [True] and item["masks"][0].any()
    assert ds.view.test_flagged == {TEST: (("kidney_tumor", "original", REASON),)}
    with pytest.warns(UserWarning, match="no selected case holds 'kidney_tumor'"):
        filtered = CaseDataset(qc_rel, terms=["kidney_tumor"], split="test", qc_filter_test=True,
                               labelled_only=False)
    assert filtered[0]["present"].tolist() == [False] and not filtered[0]["masks"].any()
    # the training split keeps the filter either way
    train = CaseDataset(qc_rel, terms=["kidney_tumor"], split="train", labelled_only=False)
    got = {train[i]["case_id"]: train[i]["present"].tolist() for i in range(len(train))}
    assert got[TRAIN] == [False] and got["TinyKits__case_00000"] == [True]


def test_unknown_terms_are_counted_by_reason(qc_rel: Path, tmp_path: Path) -> None:
    rep = export_nnunet(qc_rel, tmp_path / "raw", dataset_id=23, name="U", terms=["kidney", "kidney_tumor"],
                        partial=True)
    info = json.loads((rep.folder / "curator_export.json").read_text())
    # the TotalSegmentator cases do not annotate tumours; case_00002's tumour QC excluded (train);
    # the test case's flagged tumour is used, so known
    assert info["partial"]["unknown_by_reason"] == {"kidney_tumor": {"not_annotated": 2, "qc_excluded": 1}}
    assert info["partial"]["unknown_reasons"][TRAIN] == {"kidney_tumor": "qc_excluded"}
    assert info["partial"]["unknown_reasons"]["TinyTotalSeg__s0000"] == {"kidney_tumor": "not_annotated"}
    monai = export_monai(qc_rel, tmp_path / "monai", terms=["kidney", "kidney_tumor"], partial=True)
    data = json.loads((monai.folder / "datalist.json").read_text())
    assert data["unknown_by_reason"] == info["partial"]["unknown_by_reason"]


def test_a_term_whose_labels_may_include_more_is_warned_of_once(tiny: Tiny, tmp_path: Path) -> None:
    """TotalSegmentator's whole-organ kidney may hold a tumour; KiTS labels its tumours apart."""
    rep = export_nnunet(tiny.release, tmp_path / "raw", dataset_id=24, name="K", terms=["kidney", "liver"],
                        partial=True)
    said = [n for n in rep.notes if "may mean different things" in n]
    assert len(said) == 1 and said[0].startswith("warning: 'kidney'"), rep.notes
    assert "TinyTotalSeg may include kidney_mass" in said[0] and "TinyKits" not in said[0]
    info = json.loads((rep.folder / "curator_export.json").read_text())
    assert info["may_include"] == {"kidney": {"TinyTotalSeg": ["kidney_mass"]}}
    monai = export_monai(tiny.release, tmp_path / "monai", terms=["kidney"], where="dataset = 'TinyKits'")
    assert not [n for n in monai.notes if "may mean different things" in n]
    assert json.loads((monai.folder / "datalist.json").read_text())["may_include"] == {}


NNUNET_EVAL = """
import sys, json
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from batchgenerators.utilities.file_and_folder_operations import subfiles
folder = sys.argv[1]
dj = json.load(open(folder + "/dataset.json"))
ref = folder + "/labelsTs"
rw = determine_reader_writer_from_dataset_json(dj, subfiles(ref, suffix=dj["file_ending"], join=True)[0])()
lm = LabelManager(dj["labels"], dj.get("regions_class_order"))
res = compute_metrics_on_folder(ref, ref, folder + "/summary.json", rw, dj["file_ending"],
                                lm.foreground_regions if lm.has_regions else lm.foreground_labels, lm.ignore_label,
                                num_processes=1)
print("DICE", res["foreground_mean"]["Dice"])
"""


def test_nnunet_exports_the_test_split_alone(qc_rel: Path, tmp_path: Path) -> None:
    rep = export_nnunet(qc_rel, tmp_path / "raw", dataset_id=25, name="Eval", terms=["kidney", "kidney_tumor"],
                        test_only=True)
    assert rep.cases == [TEST]
    assert sorted(p.name for p in rep.folder.iterdir() if p.is_dir()) == ["imagesTs", "labelsTs"]
    assert not (rep.folder / "splits_final.json").exists()
    ds = json.loads((rep.folder / "dataset.json").read_text())
    assert ds["numTraining"] == 0 and ds["labels"] == {"background": 0, "kidney": 1, "kidney_tumor": 2}
    assert json.loads((rep.folder / "curator_export.json").read_text())["test_only"] is True
    with pytest.raises(ReleaseError, match="no case of the release's test split"):
        export_nnunet(qc_rel, tmp_path / "raw", dataset_id=26, name="None", terms=["kidney"], test_only=True,
                      where="dataset = 'TinyTotalSeg'")
    from curator.cli import app

    res = CliRunner().invoke(app, ["export", "nnunet", str(qc_rel), "--terms", "kidney", "--out",
                                   str(tmp_path / "cli"), "--id", "27", "--test-only"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "cli" / "Dataset027_Curator").glob("images*")] == ["imagesTs"]
    python = _client("nnunetv2")  # nnU-Net scores against it with this dataset.json
    assert "DICE 1.0" in _run(python, NNUNET_EVAL, str(rep.folder))


def test_the_qc_options_contradicting_each_other_are_refused(qc_rel: Path, tmp_path: Path) -> None:
    from curator.cli import app

    for command in ("nnunet", "monai"):
        res = CliRunner().invoke(app, ["export", command, str(qc_rel), "--terms", "kidney", "--out",
                                       str(tmp_path / command), "--qc-filter-test", "--no-qc-filter"])
        assert res.exit_code != 0 and "--qc-filter-test applies QC's filter" in " ".join(res.output.split())
        assert not (tmp_path / command).exists()


def test_monai_entries_say_annotated_and_nonempty(tiny: Tiny, tmp_path: Path) -> None:
    """``present`` listed the annotated terms, an empty one too: ``annotated`` says so by name
    (``present`` stays, deprecated) and ``nonempty`` lists the terms with a voxel."""
    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    _rows(rel, [{"case_id": "TinyTotalSeg__s0000", "dataset": "TinyTotalSeg", "term_id": "gallbladder",
                 "term": "gallbladder", "origin": "original", "layer": "original", "derived": False,
                 "annotated": True, "present": False, "voxels": 0, "volume_ml": 0.0}])
    reseal(rel)
    with pytest.warns(UserWarning, match="annotate it as absent"):
        rep = export_monai(rel, tmp_path / "monai", terms=["liver", "gallbladder"], partial=True)
    entries = {e["case_id"]: e for e in json.loads((rep.folder / "datalist.json").read_text())["training"]}
    s0 = entries["TinyTotalSeg__s0000"]
    assert s0["annotated"] == s0["present"] == ["liver", "gallbladder"] and s0["nonempty"] == ["liver"]
    s1 = entries["TinyTotalSeg__s0001"]
    assert s1["annotated"] == ["liver"] and s1["nonempty"] == ["liver"]


def _as_mr(rel: Path, dataset: str) -> None:
    """Make ``dataset``'s cases MR in every table of ``rel`` (a mixed-modality release)."""
    import polars as pl

    for table in rel.glob("*.parquet"):
        df = pl.read_parquet(table)
        if "modality" in df.columns and "dataset" in df.columns:
            df.with_columns(pl.when(pl.col("dataset") == dataset).then(pl.lit("MR"))
                            .otherwise(pl.col("modality")).alias("modality")).write_parquet(table)
    reseal(rel)


def test_the_modality_check_looks_at_the_cases_holding_the_terms(tiny: Tiny, tmp_path: Path) -> None:
    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    _as_mr(rel, "TinyTotalSeg")
    # no MR case holds a kidney tumour: the MR cases would be skipped anyway
    rep = export_nnunet(rel, tmp_path / "raw", dataset_id=28, name="Tu", terms=["kidney_tumor"])
    assert sorted(rep.cases) == [f"TinyKits__case_{i:05d}" for i in range(3)]
    assert all(rep.skipped[c].startswith("holds no kidney_tumor") for c in ("TinyTotalSeg__s0000",
                                                                             "TinyTotalSeg__s0001"))
    with pytest.raises(ConfigError, match=r"the cases holding the terms mix modalities \['CT', 'MR'\]"):
        export_nnunet(rel, tmp_path / "raw", dataset_id=29, name="Ki", terms=["kidney"])
