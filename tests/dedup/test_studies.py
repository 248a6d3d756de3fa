"""Studies in dedup: one patient's two studies of one source are not one scan unless identical,
and a group of multi-case studies keeps one whole study (BraTS time points and re-uploads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curator.config import PipelineConfig
from curator.dedup.detect import PairResult, verify_candidates
from curator.dedup.search import Candidate
from curator.dedup.stage import DedupConfig, DedupStage
from curator.dedup.tables import duplicate_rows
from curator.dedup.verify import Match, VerifySettings
from curator.errors import InputError
from curator.release.studies import group_studies
from curator.runner.context import Context
from curator.runner.stage import problem_row
from curator.schema import to_arrow
from curator.testing.stores import _case_row
from curator.workspace import Workspace

SEQS = ("t1c", "t1n", "t2f", "t2w")
LIKE_A_COPY = Match(0.90, 0.87, 0.98, 0.95, 5000, (1.5, 0.0, 0.0))  # a co-registered follow-up verifies


def _stage(tmp_path: Path, rows: list[dict[str, Any]], warned: tuple[str, ...] = ()) -> DedupStage:
    ws = Workspace(tmp_path / "ws").init()
    ws.write_table("cases", to_arrow("cases", rows))
    if warned:
        err = InputError("nifti_qform_sform", "qform and sform disagree by 0.5 mm")
        ws.write_table("problems__ingest", to_arrow("problems", [
            problem_row("ingest", err, dataset=r["dataset"], case_id=r["case_id"],
                        path=f"{r['source']}:{r['image_path']}", severity="warning")
            for r in rows if r["case_id"] in warned]))
    cfg = PipelineConfig.from_dict({"workspace": str(ws.root), "executor": {"progress": False}})
    stage = DedupStage(Context(cfg, ws), DedupConfig())
    stage.extra_problems = []
    return stage


def _brats(visit: str, patient: str, source: str = "BraTS", seqs: tuple[str, ...] = SEQS) -> list[dict[str, Any]]:
    return [dict(_case_row(f"{source}__{visit}__{s}", source, True), patient_id=patient, study_key=f"s_{source}_{visit}",
                 sequence=s, image_path=f"{visit}/{s}.nii.gz", shape=[64, 64, 40], spacing_mm=[1.0, 1.0, 1.0], n_voxels=64 * 64 * 40) for s in seqs]


def _verify(stage: DedupStage, pairs: list[tuple[str, str, set[str]]], patients: bool = True) -> list[PairResult]:
    cands = [Candidate(min(a, b), max(a, b), tiers) for a, b, tiers in pairs]
    if not patients:  # two patients: the keep policy alone is tested
        return verify_candidates(cands, lambda _: None, VerifySettings(), stage._study_keys, lambda a, b: LIKE_A_COPY)
    return verify_candidates(cands, lambda _: None, VerifySettings(), stage._study_keys,
                             lambda a, b: LIKE_A_COPY, stage._visits)


def test_two_time_points_of_one_patient_are_not_grouped(tmp_path: Path) -> None:
    """BraTS-GLI-00001-000 and -001: one patient, two studies of one source, a follow-up that
    verifies like a copy (score 0.87-0.90) — two visits, not one scan; the decision is recorded."""
    stage = _stage(tmp_path, _brats("00001-000", "p1", seqs=("t1n",)) + _brats("00001-001", "p1", seqs=("t1n",)))
    pairs = _verify(stage, [("BraTS__00001-000__t1n", "BraTS__00001-001__t1n", {"global"})])
    assert [(p.accepted, p.refused) for p in pairs] == [(False, "other_study")]
    stage._report_other_studies(pairs)
    (row,) = stage.extra_problems
    assert row["kind"] == "dedup_other_study" and row["severity"] == "info"
    assert row["case_id"] == "BraTS__00001-001__t1n" and "BraTS__00001-000__t1n" in row["message"]
    assert "rank correlation 0.900" in row["message"]


def test_another_visits_other_sequence_is_not_reported(tmp_path: Path) -> None:
    """One visit's t1c resembling the other visit's t1n is refused too, but says nothing the
    same-sequence pair does not: 2 follow-ups of 4 sequences gave 8 info rows, not 2."""
    stage = _stage(tmp_path, _brats("00001-000", "p1", seqs=("t1n", "t1c")) + _brats("00001-001", "p1", seqs=("t1n", "t1c")))
    pairs = _verify(stage, [("BraTS__00001-000__t1n", "BraTS__00001-001__t1n", {"global"}),
                            ("BraTS__00001-000__t1c", "BraTS__00001-001__t1n", {"global"})])
    assert [p.refused for p in pairs] == ["other_study", "other_study"]
    stage._report_other_studies(pairs)
    assert [(r["case_id"], "BraTS__00001-000__t1n" in r["message"]) for r in stage.extra_problems] == [
        ("BraTS__00001-001__t1n", True)]


def test_an_identical_study_of_one_patient_is_grouped(tmp_path: Path) -> None:
    """A re-upload under a new study of the same patient holds identical voxels: still one scan."""
    stage = _stage(tmp_path, _brats("00001-000", "p1", seqs=("t1n",)) + _brats("00004-000", "p1", seqs=("t1n",)))
    for tier in ("exact", "voxels"):
        pairs = _verify(stage, [("BraTS__00001-000__t1n", "BraTS__00004-000__t1n", {tier, "global"})])
        assert [(p.accepted, p.refused) for p in pairs] == [(True, "")]


def test_other_patients_and_other_sources_are_grouped_as_before(tmp_path: Path) -> None:
    """Another patient (a re-upload given a new patient id: nothing to hide it), another
    dataset's copy (BraTS 2021 vs 2023) and the same dataset under another source name are
    grouped; and a chain through another source's copy does not join the two time points."""
    rows = (_brats("1-000", "p1", "B23", ("t1n",)) + _brats("1-001", "p1", "B23", ("t1n",))
            + _brats("9-000", "p9", "B23", ("t1n",)) + _brats("1-000", "p1", "B21", ("t1n",)))
    stage = _stage(tmp_path, rows)
    assert set(stage._visits) == {"B23__1-000__t1n", "B23__1-001__t1n"}  # the only patient with two studies
    pairs = _verify(stage, [("B23__1-000__t1n", "B23__9-000__t1n", {"global"}),
                            ("B21__1-000__t1n", "B23__1-000__t1n", {"global"}),
                            ("B21__1-000__t1n", "B23__1-001__t1n", {"global"})])
    got = {(p.a, p.b): (p.accepted, p.refused) for p in pairs}
    assert got[("B23__1-000__t1n", "B23__9-000__t1n")] == (True, "")
    assert got[("B21__1-000__t1n", "B23__1-000__t1n")] == (True, "")
    assert got[("B21__1-000__t1n", "B23__1-001__t1n")] == (False, "other_study")
    stage._report_other_studies(pairs)  # refused through B21's group: not "two studies of source B23" of these two
    (row,) = stage.extra_problems
    assert row["case_id"] == "B23__1-001__t1n" and "would join two studies of one patient of one source" in row["message"]
    assert "of source B23 (its patient_id" not in row["message"]


def test_a_reuploaded_study_is_kept_whole(tmp_path: Path) -> None:
    """00004-000 is 00001-000 again, whose t2f header had a warning: the clean study wins all four
    sequence groups (per sequence, 00001 won t1c/t1n/t2w by case id and 00004 only t2f, and
    no complete study was left)."""
    rows = _brats("00001-000", "p1") + _brats("00004-000", "p4")
    stage = _stage(tmp_path, rows, warned=("BraTS__00001-000__t2f",))
    pairs = _verify(stage, [(f"BraTS__00001-000__{s}", f"BraTS__00004-000__{s}", {"exact"}) for s in SEQS], False)
    assert all(p.accepted for p in pairs)
    dup = duplicate_rows(pairs, stage._members(), ("clean", "terms", "version", "fov", "case_id"), (),
                         lambda a, b: LIKE_A_COPY)
    kept = sorted(r["case_id"] for r in dup if r["kept"])
    assert kept == [f"BraTS__00004-000__{s}" for s in SEQS]
    reasons = {r["case_id"]: r["reason"] for r in dup if not r["kept"]}
    assert "fewer ingest warnings in its study (0 vs 1" in reasons["BraTS__00001-000__t1n"]


def test_a_tie_between_studies_is_broken_by_its_first_case_not_its_keyed_study_key(tmp_path: Path) -> None:
    """Nothing tells two studies apart: the study whose cases sort first wins every group, whatever
    the case ids of its other sequences say — and whatever study keys (keyed pseudonyms, other in
    another workspace) the workspace gave them."""
    a = {s: f"BraTS__a__{s}" for s in SEQS} | {"t2f": "BraTS__z__t2f"}  # study a's t2f sorts after b's
    for n, keys in enumerate(({"s_BraTS_a": "s_2", "s_BraTS_b": "s_1"}, {"s_BraTS_a": "s_1", "s_BraTS_b": "s_2"})):
        rows = _brats("a", "p1") + _brats("b", "p2")
        rows = [dict(r, case_id=a["t2f"] if r["case_id"] == "BraTS__a__t2f" else r["case_id"],
                     study_key=keys[r["study_key"]]) for r in rows]
        stage = _stage(tmp_path / str(n), rows)
        pairs = _verify(stage, [(a[s], f"BraTS__b__{s}", {"exact"}) for s in SEQS], False)
        dup = duplicate_rows(pairs, stage._members(), ("clean",), (), lambda x, y: LIKE_A_COPY)
        assert sorted(r["case_id"] for r in dup if r["kept"]) == sorted(a.values())
        assert all("the study whose cases sort first" in r["reason"] for r in dup if not r["kept"])


class _C:
    def __init__(self, case_id: str, sequence: str, study_key: str) -> None:
        self.case_id, self.sequence, self.study_key = case_id, sequence, study_key


def test_a_study_missing_a_dropped_sequence_is_told_so() -> None:
    """Not "its study has no t2f case" when it has one, dropped as a duplicate; skipped studies
    are named alike whichever sequence they lack."""
    a = [_C(f"B__1__{s}", s, "s1") for s in ("t1n", "t1c", "t2w")]
    b = [_C("B__4__t2f", "t2f", "s4")]
    skipped: dict[str, str] = {}
    got = group_studies([*a, *b], ["t1n", "t1c", "t2w", "t2f"], skipped,
                        [(_C("B__1__t2f", "t2f", "s1"), "B__4__t2f"), (_C("B__4__t1n", "t1n", "s4"), "B__1__t1n")])
    assert got == []
    assert skipped == {
        "B__1": "its t2f case B__1__t2f was dropped as a duplicate of B__4__t2f (selected: t1n, t1c, t2w)",
        "B__4": "its study has no t1c, t2w case; its t1n case B__4__t1n was dropped as a duplicate of B__1__t1n "
                "(selected: t2f)"}


def test_a_study_whose_channel_cases_were_dropped_is_told_so_and_names_do_not_collide() -> None:
    """B__2's t1n and t2f were dropped as copies of B__1's: not "none of its sequences is a channel"
    (its t1c is not), and a study all of whose selected cases were dropped is listed too; two
    study-less cases of one study name keep their own entries."""
    cases = [_C(f"B__1__{s}", s, "s1") for s in ("t1n", "t2f", "t1c")] + [_C("B__2__t1c", "t1c", "s2")]
    cases += [_C("X__1__FLAIR", "FLAIR", None), _C("X__1__T1w", "T1w", None)]  # type: ignore[arg-type]
    skipped: dict[str, str] = {}
    got = group_studies(cases, ["t1n", "t2f"], skipped,
                        [(_C("B__2__t1n", "t1n", "s2"), "B__1__t1n"), (_C("B__2__t2f", "t2f", "s2"), "B__1__t2f"),
                         (_C("B__3__t1n", "t1n", "s3"), "B__1__t1n")])
    assert [n for n, _ in got] == ["B__1"]
    assert skipped["B__2"] == ("its t1n case B__2__t1n was dropped as a duplicate of B__1__t1n; its t2f case B__2__t2f "
                               "was dropped as a duplicate of B__1__t2f (selected: only t1c, no channel)")
    assert skipped["B__3"] == ("its study has no t2f case; its t1n case B__3__t1n was dropped as a duplicate of "
                               "B__1__t1n (selected: none)")
    assert "FLAIR" in skipped["X__1"] and "T1w" in skipped["X__1__T1w"]
