"""The qc stage end to end on phantom stores, and the release join into ``labels``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from curator.config import PipelineConfig
from curator.errors import ConfigError
from curator.qc.stage import QCStage
from curator.release.build import build_release
from curator.release.query import Release
from curator.runner.context import Context
from curator.runner.run import run_stage
from curator.testing.stores import phantom_workspace, record_runs


def context(tmp: Path, **qc: Any) -> Context:
    cfg = PipelineConfig.from_dict({
        "workspace": str(tmp / "ws"),
        "stages": {"qc": qc, "dedup": {"enabled": False}, "pseudolabel": {"enabled": False}},
        "executor": {"kind": "local", "workers": 1, "progress": False},
        "release": {"root": str(tmp / "releases"), "collection": "t", "version": "0.1.0"},
    })
    return Context(cfg)


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("qc")
    phantom_workspace(tmp / "ws", n_cases=24, broken=(3,), label_only=(5,), missing=(7,), swapped=(9,))
    ctx = context(tmp, min_cohort=12)
    record_runs(ctx, "ingest", "harmonize", "preprocess")  # what phantom_workspace wrote
    report = run_stage(ctx, QCStage)
    assert report.planned == 23 and report.failed == 0
    return ctx, pq.read_table(ctx.workspace.table_path("qc")).to_pylist()


def test_broken_label_is_excluded_with_reason(qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    _, rows = qc_run
    liver = {r["case_id"]: r for r in rows if r["term_id"] == "liver"}
    bad = liver["Phantom__c003"]
    assert bad["decision"] == "exclude" and bad["flagged"] and bad["n_out"] >= 2
    assert bad["reason"].startswith("SOLF ε=2")
    judged = [r for r in rows if r["decision"] in ("include", "exclude") and r["case_id"] != "Phantom__c003"]
    assert len(judged) > 100
    assert sum(r["flagged"] for r in judged) <= 0.05 * len(judged)


def test_a_label_on_the_wrong_side_is_excluded_whatever_its_shape(
        qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    """Case 9's dataset mapping calls the left kidney right: perfect shapes, wrong sides."""
    _, rows = qc_run
    kidneys = [r for r in rows if r["term_id"] in ("kidney_left", "kidney_right")]
    wrong = {(r["case_id"], r["term_id"]) for r in kidneys if r["wrong_side"]}
    assert wrong == {("Phantom__c009", "kidney_left"), ("Phantom__c009", "kidney_right")}
    for r in kidneys:
        if r["case_id"] == "Phantom__c009":
            assert r["decision"] == "exclude" and r["reason"].startswith("side: the ")
            assert r["lateral_mm"] < -10 and not r["flagged"]  # the shape filter saw nothing
        else:
            assert r["lateral_mm"] > 10 and r["wrong_side"] is False
    # the label-only case has no body centre but both kidneys: checked against each other
    assert all(r["lateral_mm"] is not None for r in kidneys if r["case_id"] == "Phantom__c005")
    assert all(r["lateral_mm"] is None and r["wrong_side"] is None for r in rows
               if r["term_id"] not in ("kidney_left", "kidney_right"))


def test_truncated_label_only_and_measurements(qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    _, rows = qc_run
    by = {(r["case_id"], r["term_id"]): r for r in rows}
    aorta = by[("Phantom__c000", "aorta")]  # a cylinder through the whole scan
    assert aorta["truncated"] and aorta["decision"] == "truncated" and set(aorta["border_faces"]) == {"k-", "k+"}
    lo = by[("Phantom__c005", "liver")]
    assert lo["volume_basis"] == "absolute" and lo["norm_volume"] is None and lo["mean_intensity"] is None
    liver = by[("Phantom__c000", "liver")]
    assert liver["volume_basis"] == "body" and 0.005 < liver["norm_volume"] < 0.2
    assert lo["body_size_ml"] is None and lo["norm_volume_section"] is None
    assert liver["norm_volume_section"] == pytest.approx(liver["volume_ml"] / liver["body_size_ml"])
    assert liver["body_size_ml"] > liver["volume_ml"]  # the trunk's size at the liver's level
    assert 80 < liver["mean_intensity"] < 130  # phantom liver: 105 HU + noise
    assert liver["centroid_mm"][0] > 0  # the liver lies on the patient's right (+x in RAS)
    assert liver["extent_mm"][0] >= liver["extent_mm"][1] >= liver["extent_mm"][2] > 0
    cohorts = {r["cohort"] for r in rows if r["term_id"] == "liver"}
    assert cohorts == {"liver/CT/body", "liver/CT/absolute"}
    assert not any(r["case_id"] == "Phantom__c007" for r in rows)


def test_a_dataset_whose_sides_are_all_swapped_is_said_once(
        qc_run: tuple[Context, list[dict[str, Any]]], tmp_path: Path) -> None:
    """A dataset naming its sides after the image's left (every case's kidneys on the wrong side)
    gave one `side:` exclusion per label and nothing saying the mapping itself is mirrored; one bad
    case among 23 (case 9 above) is no such row."""
    ctx, _ = qc_run
    assert not [p for p in pq.read_table(ctx.workspace.table_path("problems__qc")).to_pylist()
                if p["kind"] == "sides_swapped"]
    phantom_workspace(tmp_path / "ws", n_cases=3, swapped=(0, 1, 2))
    ctx = context(tmp_path, min_cohort=12)
    record_runs(ctx, "ingest", "harmonize", "preprocess")
    report = run_stage(ctx, QCStage)
    rows = [p for p in pq.read_table(ctx.workspace.table_path("problems__qc")).to_pylist()
            if p["kind"] == "sides_swapped"]
    assert [(p["dataset"], p["case_id"], p["severity"]) for p in rows] == [("Phantom", None, "warning")]
    assert "6 of the 6 left/right labels of Phantom" in rows[0]["message"] and "labels.values" in rows[0]["message"]
    assert "lie on their usual sides in 3 of those cases" in rows[0]["message"] and "image_flip" not in rows[0]["message"]
    assert report.warnings == 1


def test_a_dataset_whose_patients_are_mirrored_is_told_to_flip_the_arrays_not_the_names(tmp_path: Path) -> None:
    """A flipped header mirrors the whole patient (the liver on the patient's left): the side
    check caught it, but its only advice was to swap the left/right names, which made the release
    pass with every patient mirrored. The unpaired organs (liver, spleen) tell the two apart."""
    phantom_workspace(tmp_path / "ws", n_cases=3, mirrored=(0, 1, 2))
    ctx = context(tmp_path, min_cohort=12)
    record_runs(ctx, "ingest", "harmonize", "preprocess")
    run_stage(ctx, QCStage)
    rows = [p for p in pq.read_table(ctx.workspace.table_path("problems__qc")).to_pylist()
            if p["kind"] == "sides_swapped"]
    assert [(p["dataset"], p["case_id"]) for p in rows] == [("Phantom", None)]
    said = rows[0]["message"]
    assert "the whole patient is mirrored (a flipped header)" in said and "in 3 of those cases" in said
    assert "fixes: {image_flip: {axes: [0]}, label_flip: {axes: [0]}}" in said  # the phantoms are RAS: x is axis 0
    assert "do not swap the left/right names" in said


def test_the_side_advice_offers_both_remedies_when_the_unpaired_organs_do_not_tell() -> None:
    from curator.qc.side import swapped_datasets

    def row(case: str, term: str, x: float, wrong: bool | None) -> dict[str, Any]:
        return {"dataset": "D", "case_id": case, "origin": "original", "term_id": term, "centroid_mm": [x, 0.0, 0.0],
                "body_x_mm": None, "wrong_side": wrong}

    kidneys = [row(c, t, x, True) for c in ("a", "b") for t, x in (("kidney_left", 60.0), ("kidney_right", -60.0))]
    ((_, err),) = swapped_datasets(kidneys, orientations={"a": "LPS", "b": "LPS"})  # no liver, no spleen
    assert "do not tell" in err.detail and "image_flip: {axes: [0]}" in err.remedy and "labels.values" in err.remedy
    disagree = kidneys + [row("a", "liver", -70.0, None), row("a", "spleen", 90.0, None),
                          row("b", "liver", 70.0, None), row("b", "spleen", -90.0, None)]
    ((_, err),) = swapped_datasets(disagree, orientations={"a": "PIR", "b": "PIR"})
    assert "the cases disagree" in err.detail and "image_flip: {axes: [2]}" in err.remedy


def test_missing_store_is_a_problem_row(qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    ctx, _ = qc_run
    probs = pq.read_table(ctx.workspace.table_path("problems__qc")).to_pylist()
    missing = [p for p in probs if p["kind"] == "store_missing"]
    assert [p["case_id"] for p in missing] == ["Phantom__c007"]
    assert "preprocess" in missing[0]["message"]


def test_rerun_is_cached_and_byte_identical(qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    ctx, _ = qc_run
    before = ctx.workspace.table_path("qc").read_bytes()
    report = run_stage(ctx, QCStage)
    assert report.cached == report.planned == 23 and report.ran == 0
    assert ctx.workspace.table_path("qc").read_bytes() == before


def test_override_reincludes(qc_run: tuple[Context, list[dict[str, Any]]], tmp_path: Path) -> None:
    ctx, _ = qc_run
    ov = ctx.workspace.root.parent / "overrides.yaml"
    ov.write_text("- {case_id: Phantom__c003, term: liver, reason: checked by a radiologist}\n"
                  "- {case_id: Phantom__c999, term: liver}\n"
                  "- {case_id: Phantom__c005, term: left kidney, action: exclude, reason: named not by id}\n"
                  "- {case_id: Phantom__c003, term: livr}\n"
                  "- {case_id: Phantom__c004, term: liver, origin: pseudo}\n"
                  "- {case_id: Phantom__c004, term: prostate}\n")
    ctx2 = Context(ctx.config.replace(stages={**ctx.config.stages, "qc": {"min_cohort": 12, "overrides": str(ov)}}))
    report = run_stage(ctx2, QCStage)
    assert (report.ran, report.cached) == (0, 23)  # overrides are applied in finalize: nothing re-measured
    rows = {(r["case_id"], r["term_id"]): r for r in pq.read_table(ctx.workspace.table_path("qc")).to_pylist()}
    assert rows[("Phantom__c003", "liver")]["decision"] == "override_include"
    assert rows[("Phantom__c005", "kidney_left")]["decision"] == "exclude"  # named as in the labels' `term`
    assert rows[("Phantom__c005", "kidney_left")]["override"]
    probs = pq.read_table(ctx.workspace.table_path("problems__qc")).to_pylist()
    # each unmatched row says why, not only "check the case id and term id against the qc table"
    said = {(p["case_id"], p["message"].split(" matches no label: ")[0].split("(row ")[1].rstrip(")")):
            p["message"].split(" matches no label: ")[1] for p in probs if p["kind"] == "override_unmatched"}
    assert said[("Phantom__c999", "2")].startswith("the qc table has no case 'Phantom__c999'"), said
    assert said[("Phantom__c003", "4")].startswith("'livr' is not a taxonomy term (close: liver"), said
    assert said[("Phantom__c004", "5")].startswith("the case's liver label is of origin 'original', not 'pseudo'"), said
    assert said[("Phantom__c004", "6")].startswith("the case has no prostate label (its labels: "), said
    assert len(said) == 4, said
    # the summary line says it: a release was written with a green tick and most rows matching nothing
    assert report.notes == ["4 of 6 override rows matched no label (problems: override_unmatched)"]
    assert report.line().endswith(" — 4 of 6 override rows matched no label (problems: override_unmatched)")
    before = ctx.workspace.table_path("qc").read_bytes()
    strict = {"min_cohort": 12, "overrides": str(ov), "on_unmatched_override": "error"}
    with pytest.raises(ConfigError) as e:
        run_stage(Context(ctx.config.replace(stages={**ctx.config.stages, "qc": strict})), QCStage)
    msg = str(e.value)
    assert e.value.kind == "override_unmatched" and msg.count("matches no label") == 4
    assert "4 of 6 override rows matched no label" in msg and "(row 2)" in msg and "(row 6)" in msg
    assert "(row 1)" not in msg and "on_unmatched_override: warn" in msg
    assert ctx.workspace.table_path("qc").read_bytes() == before  # nothing written: no release on it
    ov.unlink()
    run_stage(ctx, QCStage)  # restore the module's qc table


def test_two_names_of_one_term_in_the_overrides_are_one_label(qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    """`left kidney` and `kidney_left` resolve to one term: two rows deciding one label, refused."""
    ctx, _ = qc_run
    ov = ctx.workspace.root.parent / "overrides_clash.yaml"
    ov.write_text("- {case_id: Phantom__c005, term: left kidney, action: exclude, reason: AB}\n"
                  "- {case_id: Phantom__c005, term: kidney_left, action: include, reason: CD}\n")
    ctx2 = Context(ctx.config.replace(stages={**ctx.config.stages, "qc": {"min_cohort": 12, "overrides": str(ov)}}))
    before = ctx.workspace.table_path("qc").read_bytes()
    with pytest.raises(ConfigError, match="rows 1 and 2 both decide Phantom__c005 / kidney_left"):
        run_stage(ctx2, QCStage)
    assert ctx.workspace.table_path("qc").read_bytes() == before
    ov.unlink()


def test_override_reviewer_and_date_reach_the_qc_table_and_the_release(
        qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    """Who decided and when are columns of qc (and of the release's qc); release.json counts the
    decisions and the rows that matched nothing; a qc table written before the columns is
    released with them null."""
    import datetime as dt

    from curator.qc.release import conform

    ctx, _ = qc_run
    ov = ctx.workspace.root.parent / "overrides_who.csv"
    ov.write_text("case_id,term,action,reason,reviewer,date\n"
                  "Phantom__c003,liver,include,normal on review,RAD1,2024-06-01\n"
                  "Phantom__c999,liver,exclude,gone,RAD2,\n")
    stages = {**ctx.config.stages, "qc": {"min_cohort": 12, "overrides": str(ov)}}
    ctx2 = Context(ctx.config.replace(stages=stages, release=ctx.config.release.replace(version="0.2.0")))
    run_stage(ctx2, QCStage)
    rows = {(r["case_id"], r["term_id"]): r for r in pq.read_table(ctx.workspace.table_path("qc")).to_pylist()}
    got = rows[("Phantom__c003", "liver")]
    assert (got["override_reason"], got["override_reviewer"], got["override_date"]) == (
        "normal on review", "RAD1", dt.date(2024, 6, 1))
    assert got["reason"].startswith("override include (RAD1, 2024-06-01): normal on review; filter said: exclude")
    rel = Release(build_release(ctx2, steps=["curator.qc.release:release_step"]))
    assert rel.sql("select override_reviewer, override_date from qc where override").fetchall() == [
        ("RAD1", dt.date(2024, 6, 1))]
    assert rel.info["qc"]["overrides"] == {"include": 1, "exclude": 0, "unmatched": 1, "include_overruled": 0}
    old = pq.read_table(ctx.workspace.table_path("qc")).drop_columns(
        ["override_reason", "override_reviewer", "override_date"])  # as a qc table before qc v5
    new = conform(old)
    assert set(new.column_names) - set(old.column_names) == {
        "override_reason", "override_reviewer", "override_date"}
    assert new.column("override_date").null_count == new.num_rows
    ov.unlink()
    run_stage(ctx, QCStage)  # restore the module's qc table


def test_release_joins_measurements_into_labels(qc_run: tuple[Context, list[dict[str, Any]]]) -> None:
    ctx, rows = qc_run
    dest = build_release(ctx, steps=["curator.qc.release:release_step"])
    rel = Release(dest)
    big = rel.sql("select case_id from labels where term = 'liver' and volume_ml > 1000 order by 1").fetchall()
    expect = sorted(r["case_id"] for r in rows if r["term_id"] == "liver" and r["volume_ml"] > 1000)
    assert expect and [b[0] for b in big] == expect  # one query over the release
    got = rel.sql("select qc_decision, qc_reason, components, extent_mm, centroid_mm, mean_intensity "
                  "from labels where case_id = 'Phantom__c003' and term_id = 'liver'").fetchall()[0]
    assert got[0] == "exclude" and got[1].startswith("SOLF") and got[2] >= 2 and len(got[3]) == 3
    from curator.qc.release import TRAINING_FILTER

    n_train = rel.sql(f"select count(*) from labels where {TRAINING_FILTER}").fetchall()[0][0]
    n_all = rel.sql("select count(*) from labels").fetchall()[0][0]
    n_excl = sum(r["decision"] == "exclude" for r in rows)
    assert n_train == n_all - n_excl
    assert rel.info["qc"]["training_filter"] == TRAINING_FILTER
    assert rel.info["qc"]["decisions"]["exclude"] == n_excl


def test_no_stores_plans_nothing_with_one_clear_problem(tmp_path: Path) -> None:
    ws = phantom_workspace(tmp_path / "ws", n_cases=2)
    for p in ws.stores_dir.iterdir():
        import shutil

        shutil.rmtree(p)
    ctx = context(tmp_path)
    report = run_stage(ctx, QCStage)
    assert report.planned == 0
    probs = pq.read_table(ws.table_path("problems__qc")).to_pylist()
    assert len(probs) == 1 and probs[0]["kind"] == "store_missing" and "preprocess" in probs[0]["message"]
    assert pq.read_table(ws.table_path("qc")).num_rows == 0


def test_unreadable_store_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    ws = phantom_workspace(tmp_path / "ws", n_cases=2)
    (ws.stores_dir / "Phantom__c001.zarr" / "labels" / "original" / "0" / "zarr.json").write_text("{not json")
    report = run_stage(context(tmp_path), QCStage)
    assert report.failed == 1
    probs = pq.read_table(ws.table_path("problems__qc")).to_pylist()
    assert probs[0]["case_id"] == "Phantom__c001" and probs[0]["severity"] == "error"
    assert probs[0]["kind"] == "store_damaged" and "delete the case's store" in probs[0]["message"]


def test_a_measurement_error_on_an_intact_store_is_cached_and_says_to_report_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31 #4: any ValueError/KeyError while measuring was `store_error`, never cached, with
    the remedy "re-run preprocess" — which rebuilt nothing (the store is intact), so the case was
    measured again, and failed again, on every run."""
    import curator.qc.stage as qc_stage

    ws = phantom_workspace(tmp_path / "ws", n_cases=2)
    real = qc_stage.measure_store
    calls: list[str] = []

    def measure(path: Path, **kw: Any) -> Any:
        calls.append(Path(path).name)
        if Path(path).name == "Phantom__c001.zarr":
            raise ValueError("an odd label this measurement does not handle")
        return real(path, **kw)

    monkeypatch.setattr(qc_stage, "measure_store", measure)
    first = run_stage(context(tmp_path), QCStage)
    assert first.failed == 1
    probs = pq.read_table(ws.table_path("problems__qc")).to_pylist()
    assert [(p["case_id"], p["kind"]) for p in probs] == [("Phantom__c001", "measure_failed")], probs
    assert "Phantom__c001" in probs[0]["message"] and "report this as a bug" in probs[0]["message"]
    calls.clear()
    again = run_stage(context(tmp_path), QCStage)
    assert calls == [] and again.cached == 2 and again.failed == 1  # not measured again



@pytest.mark.parametrize("array", ["image", "labels/original/0"])
def test_a_damaged_chunk_behind_an_intact_shard_index_is_store_damaged(tmp_path: Path, array: str) -> None:
    """It was an internal_error ('RuntimeError: error during blosc decompression … report this as a bug')."""
    ws = phantom_workspace(tmp_path / "ws", n_cases=2)
    shard = next(p for p in sorted((ws.stores_dir / "Phantom__c001.zarr" / array / "c").rglob("*")) if p.is_file())
    data = bytearray(shard.read_bytes())
    data[:16] = b"\xff" * 16  # the first chunk's Blosc header; the chunk index at the end stays intact
    shard.write_bytes(bytes(data))
    report = run_stage(context(tmp_path), QCStage)
    assert report.failed == 1
    probs = pq.read_table(ws.table_path("problems__qc")).to_pylist()
    assert [(p["case_id"], p["kind"]) for p in probs] == [("Phantom__c001", "store_damaged")], probs
    assert f"array {array}:" in probs[0]["message"] and "delete the case's store" in probs[0]["message"]

def test_a_superseded_pseudo_label_is_not_measured(tmp_path: Path) -> None:
    """A case with a reviewed liver: QC measures the revised liver, not the pseudo liver it replaced
    (which would otherwise join the liver cohort twice and get a decision of its own)."""
    import numpy as np

    from curator.io.volume import Geometry
    from curator.qc.features import MeasureOptions
    from curator.qc.store_io import measure_store
    from curator.store import CaseStore

    g = Geometry.from_affine((20, 20, 10), np.diag([2.0, 2.0, 3.0, 1.0]))
    block = np.zeros(g.shape, np.uint8)
    block[4:10, 4:10, 2:6] = 1
    other = np.zeros(g.shape, np.uint8)
    other[12:16, 12:16, 3:7] = 1
    store = CaseStore.create(tmp_path / "c.zarr", geometry=g, attrs={"modality": "CT"},
                             image=np.zeros(g.shape, np.int16), labels=[(block, {1: ["spleen"]})])
    store.write_layer("revised", [(other, {1: ["liver"]})], {"origin": "revised"})
    store.write_layer("pseudo", [(block + 2 * other, {1: ["aorta"], 2: ["liver"]})], {"origin": "pseudo"})
    rows = measure_store(tmp_path / "c.zarr", layers=("original", "revised", "pseudo"), options=MeasureOptions())
    assert sorted((r["term_id"], r["origin"]) for r in rows) == [
        ("aorta", "pseudo"), ("liver", "revised"), ("spleen", "original")]


def test_a_disabled_pseudolabel_stage_leaves_its_old_layers_unjudged(tmp_path: Path) -> None:
    """Pseudo layers left in the stores by an earlier run: judged while the stage is on, left
    out (as the release leaves them out) once it is disabled."""
    import numpy as np

    from curator.store import CaseStore

    phantom_workspace(tmp_path / "ws", n_cases=3)
    store = CaseStore(tmp_path / "ws" / "stores" / "Phantom__c001.zarr")
    blob = np.zeros(store.geometry.shape, np.uint8)
    blob[10:14, 10:14, 3:6] = 1
    store.write_layer("pseudo", [(blob, {1: ["gallbladder"]})], {"origin": "pseudo"})  # a term the case lacks

    def origins(**pipeline_stages: Any) -> set[str]:
        ctx = context(tmp_path, min_cohort=2)
        ctx = Context(ctx.config.replace(stages={"qc": {"min_cohort": 2}, **pipeline_stages}))
        run_stage(ctx, QCStage)
        return {r["origin"] for r in pq.read_table(ctx.workspace.table_path("qc")).to_pylist()}

    assert "pseudo" in origins()
    assert "pseudo" not in origins(pseudolabel={"enabled": False})


def test_the_pseudo_labels_of_an_unlabelled_case_are_judged(tmp_path: Path) -> None:
    """A case without labels of its own gets pseudo labels only: QC judges those too (the release
    ships them)."""
    import shutil

    import pyarrow.compute as pc

    from curator.schema import to_arrow
    from curator.store import CaseStore

    ws = phantom_workspace(tmp_path / "ws", n_cases=3)
    cid = "Phantom__c002"
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    planes = [(arr[...], vals) for arr, vals in store.planes("original")]
    shutil.rmtree(store.path / "labels" / "original")
    CaseStore(store.path).write_layer("pseudo", planes, {"origin": "pseudo"})
    cases = ws.read_table("cases")
    assert cases is not None
    ws.write_table("cases", cases.set_column(cases.schema.get_field_index("has_label"), "has_label",
                                             pc.not_equal(cases.column("case_id"), cid)))
    labels = ws.read_table("labels")
    assert labels is not None
    ws.write_table("_labels_pseudo", to_arrow("labels", [
        {**r, "origin": "pseudo"} for r in labels.to_pylist() if r["case_id"] == cid]))
    ctx = context(tmp_path, min_cohort=2)
    ctx = Context(ctx.config.replace(stages={"qc": {"min_cohort": 2}, "dedup": {"enabled": False}}))
    assert run_stage(ctx, QCStage).planned == 3
    rows = pq.read_table(ctx.workspace.table_path("qc")).to_pylist()
    assert {r["origin"] for r in rows if r["case_id"] == cid} == {"pseudo"}


def test_a_store_copied_with_its_times_kept_is_not_measured_again(
        qc_run: tuple[Context, list[dict[str, Any]]], tmp_path: Path) -> None:
    """A workspace moved to another disk (or copied with `cp -a`): same content, same times, new
    inodes — the QC cache still holds."""
    import shutil

    from curator.qc.store_io import store_fingerprint
    from curator.store import CaseStore

    ctx, _ = qc_run
    src = next(iter(sorted(ctx.workspace.stores_dir.glob("*.zarr"))))
    copy = tmp_path / src.name
    shutil.copytree(src, copy)  # copy2: times kept, inodes new
    assert store_fingerprint(copy) == store_fingerprint(src)
    store = CaseStore(copy)
    planes = [(arr[...], vals) for arr, vals in store.planes("original")]
    store.write_layer("pseudo", planes, {"origin": "pseudo"})  # a layer written: measured again
    assert store_fingerprint(copy) != store_fingerprint(src)


def test_a_scan_dedup_dropped_leaves_the_cohort_bounds_while_dedup_is_enabled(tmp_path: Path) -> None:
    from curator.schema import to_arrow

    phantom_workspace(tmp_path / "ws", n_cases=16)
    ctx = context(tmp_path, min_cohort=12)
    dup = [{"group_id": "g1", "case_id": c, "dataset": "Phantom", "kept": c == "Phantom__c000",
            "kept_case_id": "Phantom__c000", "group_size": 2, "reason": "same scan"}
           for c in ("Phantom__c000", "Phantom__c001")]
    ctx.workspace.write_table("duplicates", to_arrow("duplicates", dup))

    def liver() -> dict[str, dict[str, Any]]:
        rows = pq.read_table(ctx.workspace.table_path("qc")).to_pylist()
        return {r["case_id"]: r for r in rows if r["term_id"] == "liver"}

    run_stage(ctx, QCStage)  # dedup disabled: its table is not this pipeline's
    off = liver()
    on = Context(ctx.config.replace(stages={**ctx.config.stages, "dedup": {}}))
    report = run_stage(on, QCStage)
    assert report.ran == 0  # measurements cached: only the bounds change
    now = liver()
    assert now["Phantom__c005"]["cohort_size"] == off["Phantom__c005"]["cohort_size"] - 1
    assert now["Phantom__c001"]["decision"] in ("include", "exclude")  # the copy is still judged



def test_a_damaged_table_is_named_not_a_crash(tmp_path: Path) -> None:
    """A truncated cases.parquet crashed `curator status` as an internal error; a truncated qc
    table let status say "ready", then crashed the release."""
    from curator.errors import ReleaseError, WorkspaceError
    from curator.runner.freshness import stale_reasons

    phantom_workspace(tmp_path / "ws", n_cases=6)
    ctx = context(tmp_path, min_cohort=3)
    record_runs(ctx, "ingest", "harmonize", "preprocess")
    run_stage(ctx, QCStage)
    assert not stale_reasons(ctx)
    table = ctx.workspace.table_path("qc")
    table.write_bytes(table.read_bytes()[:100])
    (reason,) = stale_reasons(ctx)
    assert "qc's table qc is damaged" in reason and "running qc again" in reason
    with pytest.raises(WorkspaceError) as e:
        ctx.workspace.read_table("qc")
    assert e.value.kind == "table_damaged" and "qc.parquet" in str(e.value)
    with pytest.raises(ReleaseError) as r:
        build_release(ctx)
    assert r.value.kind == "release_stale" and "qc is damaged" in str(r.value)
    run_stage(ctx, QCStage)  # the stage writes it again
    assert not stale_reasons(ctx) and ctx.workspace.read_table("qc") is not None


def test_status_counts_the_cases_an_interrupted_run_kept(tmp_path: Path) -> None:
    """After Ctrl-C, `curator status` said "qc has not run" though the next run resumed from the
    cases it had finished."""
    import shutil

    from curator.runner.freshness import stale_reasons

    phantom_workspace(tmp_path / "ws", n_cases=6)
    ctx = context(tmp_path, min_cohort=3)
    record_runs(ctx, "ingest", "harmonize", "preprocess")
    assert "qc has not run" in stale_reasons(ctx)
    run_stage(ctx, QCStage)
    (ctx.workspace.stage_dir("qc") / "stage.json").unlink()  # as a run stopped before it finished
    reasons = [r for r in stale_reasons(ctx) if r.startswith("qc")]
    assert reasons == [("qc has not finished a run: 6 case(s) of an interrupted or stopped run are kept, and the "
                       "next run resumes from them")], reasons
    shutil.rmtree(ctx.workspace.stage_dir("qc") / "cases")
    assert "qc has not run" in stale_reasons(ctx)


def test_the_sequences_of_a_study_sharing_one_label_file_are_one_cohort_member(tmp_path: Path) -> None:
    """A BraTS study is a case per sequence, each store holding the study's one seg: the cohort
    counts the label files (12), not the stores (36), and each study's cases get one decision."""
    import shutil

    from curator.schema import to_arrow

    ws = phantom_workspace(tmp_path / "ws", n_cases=12, broken=(3,))
    cases = ws.read_table("cases").to_pylist()
    rows = []
    for c in cases:
        for q in ("t1n", "t2f", "t2w"):
            cid = f"{c['case_id']}__{q}"
            shutil.copytree(ws.stores_dir / f"{c['case_id']}.zarr", ws.stores_dir / f"{cid}.zarr")
            rows.append({**c, "case_id": cid, "sequence": q, "study_key": f"s_{c['case_id']}",
                         "label_sha256": f"h_{c['case_id']}"})
        shutil.rmtree(ws.stores_dir / f"{c['case_id']}.zarr")
    ws.write_table("cases", to_arrow("cases", rows))
    ctx = context(tmp_path, min_cohort=12)
    record_runs(ctx, "ingest", "harmonize", "preprocess")
    assert run_stage(ctx, QCStage).planned == 36
    liver = [r for r in pq.read_table(ctx.workspace.table_path("qc")).to_pylist() if r["term_id"] == "liver"]
    assert len(liver) == 36 and {r["cohort_size"] for r in liver} == {12}
    by_study: dict[str, set[Any]] = {}
    for r in liver:
        by_study.setdefault(r["case_id"].rsplit("__", 1)[0], set()).add((r["decision"], r["flagged"], r["reason"]))
    assert all(len(v) == 1 for v in by_study.values())
    assert next(iter(by_study["Phantom__c003"]))[0] == "exclude"
    assert "(n=12)" in next(iter(by_study["Phantom__c003"]))[2]
