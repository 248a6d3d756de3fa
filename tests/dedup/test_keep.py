"""Which member of a group dedup keeps: `clean` counts the scan's warnings, not the labels'."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import Subject, grid, render

HEAD = ('version: "1.0"\ntitle: t\nmodality: CT\nregion: abdomen\nlicence: CC-BY-4.0\ncitation_key: t\n'
        'citation: "@misc{t, title={t}}"\n')


def _pipeline(tmp: Path, sources: list[tuple[str, str]], dedup: dict[str, Any] | None = None) -> Path:
    cfg = {"workspace": str(tmp / "ws"),
           "sources": [{"dataset": str(tmp / f"{name}.yaml"), "root": str(tmp / "raw" / name)} for name, _ in sources],
           "stages": {"dedup": dedup or {}},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": str(tmp / "releases"), "collection": "t", "version": "0.1.0"}}
    for name, spec in sources:
        (tmp / f"{name}.yaml").write_text(f"name: {name}\n{HEAD}{spec}")
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "pipeline.yaml"


def _dups(tmp: Path) -> dict[str, dict[str, Any]]:
    return {r["case_id"]: r for r in pq.read_table(tmp / "ws" / "tables" / "duplicates.parquet").to_pylist()}


@pytest.fixture(scope="module")
def scan() -> tuple[Any, Any, Any]:
    g = grid((56, 44, 26), (6.0, 6.0, 8.0), "LPS", center=(0.0, -10.0, 20.0))
    img, lab = render(Subject.random(31, tumor=False, cyst=False), g, "CT", seed=31)
    return g, np.rint(img).astype(np.int16), lab


def test_a_label_warning_does_not_drop_the_labelled_original_for_an_unlabelled_copy(
        tmp_path: Path, scan: tuple[Any, Any, Any]) -> None:
    """tester 28: the original's label map holds values its YAML does not declare (a partial
    mapping: a `label_values_undeclared` warning, which only a labelled case can have); an
    unlabelled byte copy in another dataset won `clean` (0 vs 1 warnings) under the default
    policy, and the labels left the training view. `clean` is about the scan: the labelled
    original is kept, for its annotated structures."""
    g, img, lab = scan
    save_nifti(tmp_path / "raw" / "Labelled" / "images" / "a001.nii.gz", img, g, np.int16)
    save_nifti(tmp_path / "raw" / "Labelled" / "labels" / "a001.nii.gz", lab, g, np.uint8)
    save_nifti(tmp_path / "raw" / "Unlabelled" / "b01.nii.gz", img, g, np.int16)  # the same voxels
    labelled = ('layout:\n  - {image: "images/{case}.nii.gz", label: "labels/{case}.nii.gz"}\n'
                "labels:\n  encoding: label_map\n  values: {1: liver, 2: spleen}\n")
    p = _pipeline(tmp_path, [("Labelled", labelled), ("Unlabelled",
                                                     'layout:\n  - {image: "{case}.nii.gz"}\nlabels: {encoding: none}\n')])
    run_pipeline(PipelineConfig.load(p), stages=["ingest", "dedup"], release=False)
    warned = pq.read_table(tmp_path / "ws" / "tables" / "problems__ingest.parquet").to_pylist()
    assert [(r["case_id"], r["kind"]) for r in warned if r["severity"] == "warning"] == [
        ("Labelled__a001", "label_values_undeclared")]
    dup = _dups(tmp_path)
    assert dup["Labelled__a001"]["kept"] and not dup["Unlabelled__b01"]["kept"]
    assert "more annotated structures (2 vs 0)" in dup["Unlabelled__b01"]["reason"]


def test_a_scan_warning_still_ranks_a_copy_down(tmp_path: Path, scan: tuple[Any, Any, Any]) -> None:
    """The +1024 copy (uint16, a `ct_intensity_offset` warning about its image) loses `clean` to
    the scan in Hounsfield units, however the case ids sort."""
    g, img, _ = scan
    save_nifti(tmp_path / "raw" / "A" / "a1.nii.gz", (img.astype(np.int32) + 1024).astype(np.uint16), g, np.uint16)
    save_nifti(tmp_path / "raw" / "B" / "b1.nii.gz", img, g, np.int16)
    spec = 'layout:\n  - {image: "{case}.nii.gz"}\nlabels: {encoding: none}\n'
    shutil.rmtree(tmp_path / "ws", ignore_errors=True)
    p = _pipeline(tmp_path, [("A", spec), ("B", spec)])
    run_pipeline(PipelineConfig.load(p), stages=["ingest", "dedup"], release=False)
    dup = _dups(tmp_path)
    assert dup["B__b1"]["kept"] and not dup["A__a1"]["kept"]
    assert "fewer ingest warnings (0 vs 1" in dup["A__a1"]["reason"]


def _loose(case_id: str, source: str) -> dict[str, Any]:
    from curator.testing.stores import _case_row

    return dict(_case_row(case_id, source, True), patient_id=f"p_{case_id}", study_key=f"s_{case_id}",
                image_path=f"{case_id}.nii.gz", shape=[64, 64, 40], spacing_mm=[1.0, 1.0, 1.0], n_voxels=64 * 64 * 40)


def test_a_complete_study_wins_a_tie_over_loose_copies_of_its_sequences(tmp_path: Path) -> None:
    """tester 28: Gamma's g01 (T1 + T2 of one visit) against Delta's loose copies of each: nothing
    differs, and Delta__d0x sorted first, so one person's T1 and T2 became two unrelated kept
    'patients' and the complete study was dropped. The complete study is kept in both groups."""
    from curator.dedup.tables import duplicate_rows
    from tests.dedup.test_studies import LIKE_A_COPY, _brats, _stage, _verify

    rows = _brats("g01", "p1", source="Gamma", seqs=("t1", "t2")) + [_loose("Delta__d01", "Delta"),
                                                                     _loose("Delta__d02", "Delta")]
    stage = _stage(tmp_path, rows)
    pairs = _verify(stage, [("Delta__d01", "Gamma__g01__t1", {"exact"}), ("Delta__d02", "Gamma__g01__t2", {"exact"})],
                    False)
    dup = duplicate_rows(pairs, stage._members(), ("clean", "terms", "version", "fov", "case_id"), (),
                         lambda a, b: LIKE_A_COPY)
    assert sorted(r["case_id"] for r in dup if r["kept"]) == ["Gamma__g01__t1", "Gamma__g01__t2"]
    reasons = {r["case_id"]: r["reason"] for r in dup}
    assert "the more complete study (2 vs 1 cases" in reasons["Delta__d01"]


def test_the_member_kept_before_stays_kept_when_a_copy_joins_on_a_tie(tmp_path: Path) -> None:
    """tester 28: a dataset added later whose copy sorts first took the kept place of a group's
    member on a tie (by case id). The workspace's last dedup result keeps it where it was."""
    from curator.dedup.tables import duplicate_rows
    from curator.schema import to_arrow
    from tests.dedup.test_studies import LIKE_A_COPY, _stage, _verify

    rows = [_loose(c, c.split("__")[0]) for c in ("Alpha__a1", "Beta__b1", "Aardvark__x1")]
    stage = _stage(tmp_path, rows)
    before = [{"group_id": "dup-old", "case_id": c, "dataset": c.split("__")[0], "kept": c == "Alpha__a1",
               "kept_case_id": "Alpha__a1", "group_size": 2, "reason": "r"} for c in ("Alpha__a1", "Beta__b1")]
    stage.ctx.workspace.write_table("duplicates", to_arrow("duplicates", before))
    pairs = _verify(stage, [("Alpha__a1", "Beta__b1", {"exact"}), ("Aardvark__x1", "Alpha__a1", {"exact"})], False)
    dup = duplicate_rows(pairs, stage._members(), ("clean", "terms", "version", "fov", "case_id"), (),
                         lambda a, b: LIKE_A_COPY)
    assert [r["case_id"] for r in dup if r["kept"]] == ["Alpha__a1"]
    assert "stayed the member kept by this workspace's last dedup run" in \
        next(r["reason"] for r in dup if r["case_id"] == "Aardvark__x1")


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory, scan: tuple[Any, Any, Any]) -> Path:
    """A__a1; B__b1, its byte copy; B__b2, another patient; C__c1, a second copy of a1. No overrides."""
    tmp = tmp_path_factory.mktemp("dedup_overrides")
    g, img, _ = scan
    other, _ = render(Subject.random(32, tumor=False, cyst=False), g, "CT", seed=32)
    for name, arr in (("A/a1", img), ("B/b1", img), ("B/b2", np.rint(other).astype(np.int16)), ("C/c1", img)):
        save_nifti(tmp / "raw" / f"{name}.nii.gz", arr, g, np.int16)
    spec = 'layout:\n  - {image: "{case}.nii.gz"}\nlabels: {encoding: none}\n'
    p = _pipeline(tmp, [("A", spec), ("B", spec), ("C", spec)])
    run_pipeline(PipelineConfig.load(p), stages=["ingest", "dedup"], release=False)
    return tmp


def _with_overrides(three: Path, tmp_path: Path, rows: str) -> Path:
    shutil.copytree(three / "ws", tmp_path / "ws")
    cfg = yaml.safe_load((three / "pipeline.yaml").read_text())
    cfg["workspace"] = str(tmp_path / "ws")
    cfg["stages"]["dedup"] = {"overrides": "dedup_overrides.yaml"}
    (tmp_path / "dedup_overrides.yaml").write_text(rows)
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "pipeline.yaml"


def test_without_overrides_the_copies_are_one_group(three: Path) -> None:
    dup = _dups(three)
    assert sorted(dup) == ["A__a1", "B__b1", "C__c1"] and dup["A__a1"]["kept"]


def test_reviewed_overrides_split_join_and_keep_and_rerun_only_the_grouping(three: Path, tmp_path: Path) -> None:
    """tester 28: no way to say 'these are not one scan' (the split_leakage remedy says to fix
    the link), 'these are' (an organ crop the search never proposes) or 'keep this one'. The
    reviewed file does all three, with the person's words in the reasons; editing it re-groups
    the cached hashes without hashing again."""
    p = _with_overrides(three, tmp_path, (
        "- {different: [A__a1, B__b1], reason: two patients, reviewer: AB, date: 2026-12-01}\n"
        "- {different: [A__a1, C__c1], reason: two patients again, reviewer: AB}\n"
        "- {same: [B__b2, C__c1], reason: crop of b2 checked in a viewer, reviewer: CD, date: 2026-12-02}\n"
        "- {keep: C__c1, reason: the original upload}\n"))
    rep = run_pipeline(PipelineConfig.load(p), stages=["dedup"], release=False).reports[0]
    assert (rep.ran, rep.cached) == (0, 4)
    dup = _dups(tmp_path)
    assert "A__a1" not in dup  # kept apart from both copies, also through the chain B–C
    assert sorted(dup) == ["B__b1", "B__b2", "C__c1"] and dup["C__c1"]["kept"]
    assert "reviewed same (CD, 2026-12-02): crop of b2 checked in a viewer" in dup["B__b2"]["reason"]
    assert "reviewed" in dup["B__b2"]["tiers"]
    assert "a reviewed keep override (reviewed keep: the original upload)" in dup["B__b1"]["reason"]
    (tmp_path / "dedup_overrides.yaml").write_text("- {keep: B__b1, reason: better header}\n")
    rep = run_pipeline(PipelineConfig.load(p), stages=["dedup"], release=False).reports[0]
    assert (rep.ran, rep.cached) == (0, 4)
    dup = _dups(tmp_path)
    assert sorted(dup) == ["A__a1", "B__b1", "C__c1"] and dup["B__b1"]["kept"]


def test_an_override_naming_no_case_is_an_error_naming_its_row(three: Path, tmp_path: Path) -> None:
    from curator.errors import ConfigError

    p = _with_overrides(three, tmp_path, "- {keep: A__a1, reason: x}\n- {different: [A__a1, B__bl], reason: typo}\n")
    with pytest.raises(ConfigError) as e:
        run_pipeline(PipelineConfig.load(p), stages=["dedup"], release=False)
    assert "row 2 (different: [A__a1, B__bl]) names B__bl, which is no case of the workspace (close: " in str(e.value)
    assert "B__b1" in str(e.value).split("close: ")[1]
    assert "dedup_overrides.yaml" in str(e.value.path)


def test_a_bad_overrides_file_lists_every_bad_row(tmp_path: Path) -> None:
    from curator.dedup.overrides import load_dedup_overrides
    from curator.errors import ConfigError

    f = tmp_path / "o.yaml"
    f.write_text("- {same: [A__1], reason: x}\n- {keep: A__1}\n- {same: [A__1, B__1], keep: A__1, reason: x}\n"
                 "- {same: [A__1, B__1], reason: x}\n- {different: [B__1, A__1], reason: y}\n- {keep: A__1, why: x}\n")
    with pytest.raises(ConfigError) as e:
        load_dedup_overrides(f)
    for said in ("row 1: same must list two different case ids", "row 2 (keep) gives no reason",
                 "row 3 needs exactly one of same, different or keep",
                 "row 4 (same: [A__1, B__1]) and row 5 (different: [A__1, B__1]) both decide", "row 6: unknown keys ['why']"):
        assert said in str(e.value)


def _record(tmp: Path) -> dict[int, dict[str, Any]]:
    return {r["row"]: r for r in pq.read_table(tmp / "ws" / "tables" / "dedup_overrides.parquet").to_pylist()}


def test_the_overrides_table_records_a_split_pair_a_joined_pair_and_a_chosen_keep(three: Path, tmp_path: Path) -> None:
    """A ``different`` row that kept apart two byte copies the hashes matched left no trace: the
    duplicates table only lacked A__a1. Each row is now a ``dedup_overrides`` row saying what the
    hashes and verification alone made of the pair, its numbers and what the row changed."""
    import datetime as dt

    p = _with_overrides(three, tmp_path, (
        "- {different: [A__a1, B__b1], reason: two patients, reviewer: AB, date: 2026-12-01}\n"
        "- {different: [A__a1, C__c1], reason: two patients again, reviewer: AB}\n"
        "- {same: [B__b2, C__c1], reason: crop of b2 checked in a viewer, reviewer: CD, date: 2026-12-02}\n"
        "- {keep: C__c1, reason: the original upload}\n"))
    run_pipeline(PipelineConfig.load(p), stages=["dedup"], release=False)
    rec, dup = _record(tmp_path), _dups(tmp_path)
    split = rec[1]
    assert (split["action"], split["case_id"], split["other_case_id"], split["effect"]) == \
        ("different", "A__a1", "B__b1", "split")
    assert "exact" in split["tiers"] and split["verified"] and split["distance"] < 0.01
    assert (split["reason"], split["reviewer"], split["date"]) == ("two patients", "AB", dt.date(2026, 12, 1))
    assert split["group_id"] is None and split["other_group_id"] == dup["B__b1"]["group_id"]
    assert split["note"].startswith("split: the hashes proposed the pair (identical voxels")
    assert "without the overrides they are one group" in split["note"]
    assert "reviewed different (AB, 2026-12-01): two patients" in split["note"]
    assert rec[2]["effect"] == "split" and rec[2]["other_case_id"] == "C__c1"
    joined = rec[3]
    assert (joined["effect"], joined["verified"], joined["tiers"]) == ("joined", False, [])
    assert joined["distance"] is not None and joined["distance"] > 0.1
    assert joined["group_id"] == joined["other_group_id"] == dup["C__c1"]["group_id"]
    keep = rec[4]
    assert (keep["effect"], keep["policy_kept_case_id"], keep["other_case_id"]) == ("chose", "B__b1", None)
    assert keep["tiers"] is None and keep["verified"] is None
    # the dedup report says it too: each split pair with both scans side by side, then every row
    from typer.testing import CliRunner

    from curator.cli import app

    res = CliRunner().invoke(app, ["dedup", "report", str(p), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "rep" / "index.html").read_text()
    split_part = page.split("<h2 id='split'>Pairs split by an override</h2>")[1].split("<h2>Every override row")[0]
    assert "A__a1 / B__b1 (row 1)" in split_part and "A__a1 / C__c1 (row 2)" in split_part
    assert "distance 0.000" in split_part and "reason: two patients (AB)" in split_part
    assert "B__b2" not in split_part  # the joined pair is no split
    assert "<td>joined</td>" in page and "<td>chose</td>" in page and "crop of b2 checked in a viewer" in page
    for row in (1, 2):
        assert (tmp_path / "rep" / f"override-row-{row}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"src='override-row-{row}.png'" in split_part


def test_overrides_that_change_nothing_say_so(three: Path, tmp_path: Path) -> None:
    p = _with_overrides(three, tmp_path, (
        "- {different: [A__a1, B__b2], reason: another patient}\n"
        "- {same: [A__a1, C__c1], reason: a copy}\n"
        "- {keep: B__b2, reason: not in a group}\n"))
    run_pipeline(PipelineConfig.load(p), stages=["dedup"], release=False)
    rec = _record(tmp_path)
    assert [rec[i]["effect"] for i in (1, 2, 3)] == ["confirmed", "confirmed", "unmatched"]
    assert rec[1]["note"].startswith("no effect: ") and "without the overrides they are not one group" in rec[1]["note"]
    assert rec[3]["group_id"] is None and rec[3]["policy_kept_case_id"] is None
    from curator.dedup.report import overrides_html

    page = overrides_html(list(rec.values()), {})
    assert "None: no different row kept apart" in page and "<td>unmatched</td>" in page
    assert "run <code>curator dedup</code> again" in overrides_html(None, {})
    none = _with_overrides(three, tmp_path / "none", "[]\n")
    run_pipeline(PipelineConfig.load(none), stages=["dedup"], release=False)
    assert _record(tmp_path / "none") == {}


def test_a_same_row_another_row_keeps_apart_is_overruled(three: Path, tmp_path: Path) -> None:
    p = _with_overrides(three, tmp_path, (
        "- {same: [B__b2, C__c1], reason: crop of b2}\n"
        "- {different: [B__b1, B__b2], reason: another patient}\n"))
    run_pipeline(PipelineConfig.load(p), stages=["dedup"], release=False)
    rec, dup = _record(tmp_path), _dups(tmp_path)
    assert "B__b2" not in dup and dup["B__b1"]["group_id"] == dup["C__c1"]["group_id"]
    assert rec[1]["effect"] == "overruled" and "a different row keeps B__b2 and C__c1 apart" in rec[1]["note"]
    assert rec[2]["effect"] == "confirmed"
