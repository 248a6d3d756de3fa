"""Cohort bounds, the 2-of-3 vote, truncation, IQR mode, overrides."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from curator.errors import ConfigError
from curator.qc.cohort import (
    TAIL_FIT_LARGE,
    Override,
    iqr_bounds,
    judge,
    normal_bounds,
    percentile_bounds,
    tail_factor,
)
from curator.qc.config import QCConfig
from curator.qc.overrides import load_overrides


def cohort(n: int = 60, seed: int = 0, term: str = "liver", basis: str = "body") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"case_id": f"c{i:03d}", "dataset": "d", "term_id": term, "origin": "original", "modality": "CT",
             "volume_basis": basis,
             "norm_volume": float(np.exp(rng.normal(np.log(0.02), 0.15))) if basis == "body" else None,
             "volume_ml": float(np.exp(rng.normal(np.log(1500), 0.15))),
             "sphericity": float(rng.normal(0.55, 0.02)), "sphericity_mesh": float(rng.normal(0.8, 0.02)),
             "eccentricity": float(rng.normal(0.6, 0.03)), "truncated": False, "border_faces": []}
            for i in range(n)]


def by_case(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["case_id"]: r for r in rows}


@pytest.mark.parametrize("percentiles", ["empirical", "normal"])
def test_two_of_three_rule(percentiles: str) -> None:
    rows = cohort(n=300)
    rows[0].update(norm_volume=0.002)  # one feature only: an unusual but plausible organ
    rows[1].update(norm_volume=0.002, eccentricity=0.95)  # two features: a broken label
    rows[2].update(norm_volume=0.002, eccentricity=0.95, sphericity=0.2)
    out = by_case(judge(rows, QCConfig(percentiles=percentiles)))
    assert out["c000"]["n_out"] == 1 and out["c000"]["decision"] == "include"
    assert out["c001"]["n_out"] == 2 and out["c001"]["decision"] == "exclude"
    assert out["c002"]["n_out"] == 3 and out["c002"]["flagged"]
    assert "normalised volume" in out["c001"]["reason"] and "eccentricity" in out["c001"]["reason"]
    assert out["c001"]["out_sphericity"] is False


def test_empirical_bounds_are_the_papers_percentiles() -> None:
    rows = cohort(n=80)
    out = judge(rows, QCConfig(percentiles="empirical", epsilon=4.0))
    vols = [r["norm_volume"] for r in rows]
    lo, hi = np.percentile(vols, [2.0, 98.0])
    assert out[0]["volume_lo"] == pytest.approx(lo) and out[0]["volume_hi"] == pytest.approx(hi)
    assert percentile_bounds(vols, 4.0) == pytest.approx((lo, hi))
    # without the vote (vote = 1) exactly the labels beyond the percentiles are flagged
    flagged = [r for r in judge(rows, QCConfig(percentiles="empirical", epsilon=4.0, vote=1))
               if r["out_volume"]]
    assert len(flagged) == sum(v < lo or v > hi for v in vols)


def test_auto_uses_empirical_only_with_enough_tail_samples() -> None:
    small = judge(cohort(n=60), QCConfig())  # 60 · 2/200 = 0.6 labels per tail → fitted
    big = judge(cohort(n=600), QCConfig())  # 6 labels per tail → empirical
    vols_big = [r["norm_volume"] for r in big]
    assert big[0]["volume_lo"] == pytest.approx(np.percentile(vols_big, 1.0))
    vols_small = [r["norm_volume"] for r in small]
    assert small[0]["volume_lo"] == pytest.approx(normal_bounds(vols_small, 2.0, "volume")[0])


def test_normal_bounds_resist_contamination() -> None:
    rng = np.random.default_rng(3)
    clean = np.exp(rng.normal(0.0, 0.2, 200))
    dirty = np.concatenate([clean, [1e-3, 1e-3, 50.0, 80.0, 100.0]])
    lo_c, hi_c = normal_bounds(clean, 2.0, "volume")
    lo_d, hi_d = normal_bounds(dirty, 2.0, "volume")
    assert lo_d == pytest.approx(lo_c, rel=0.05) and hi_d == pytest.approx(hi_c, rel=0.05)
    assert hi_c == pytest.approx(np.exp(2.326 * 0.2), rel=0.1)
    assert normal_bounds(clean, 0.0, "volume") == (float("-inf"), float("inf"))


@pytest.mark.parametrize("n", [6, 20, 60])
def test_fitted_bounds_keep_epsilon_for_small_cohorts(n: int) -> None:
    """On average ε/100 of a clean cohort's labels lie beyond a feature's fitted bounds, as beyond
    the empirical percentiles of a large cohort — whatever the cohort's size: the plug-in normal
    quantile (z MADs out) cut off 2.8-7.5 % at these sizes, not 2 %."""
    rng = np.random.default_rng(100 + n)
    outside = []
    for _ in range(3000):
        v = np.exp(rng.normal(0.0, 0.3, n))
        lo, hi = normal_bounds(v, 2.0, "volume")
        outside.append(float(np.mean((v < lo) | (v > hi))))
    assert np.mean(outside) == pytest.approx(0.02, abs=0.003)
    z = NormalDist().inv_cdf(0.99)
    assert tail_factor(n, 0.01) > tail_factor(4 * n, 0.01) > z
    assert tail_factor(TAIL_FIT_LARGE, 0.01) == pytest.approx(z)


def test_truncated_labels_stay_out_of_bounds_and_are_not_judged() -> None:
    rows = cohort(n=40)
    for r in rows[:5]:
        r.update(truncated=True, border_faces=["k+"], norm_volume=0.001, eccentricity=0.99)
    out = judge(rows, QCConfig(percentiles="empirical", min_cohort=20))
    complete = [r["norm_volume"] for r in rows[5:]]
    assert out[0]["cohort_size"] == 35
    assert out[0]["volume_lo"] == pytest.approx(np.percentile(complete, 1.0))
    res = by_case(out)
    assert all(res[f"c{i:03d}"]["decision"] == "truncated" for i in range(5))
    assert "k+" in res["c000"]["reason"] and not res["c000"]["flagged"]
    assert res["c000"]["reason"].startswith("touches the field-of-view edge (k+)")
    wide = by_case(judge(rows, QCConfig(percentiles="empirical", min_cohort=20, border_margin=3)))
    assert wide["c000"]["reason"].startswith("lies within 2 voxel(s) of the field-of-view edge (border_margin 3)")


def test_pseudo_labels_are_judged_against_the_peoples_labels() -> None:
    """Pseudo labels that run large by 40 % would widen (and shift) the bounds if they set them."""
    rows = cohort(n=40)
    pseudo = cohort(n=40, seed=3)
    for r in pseudo:
        r.update(case_id=r["case_id"] + "p", origin="pseudo", norm_volume=r["norm_volume"] * 1.4)
    out = by_case(judge(rows + pseudo, QCConfig(percentiles="empirical", min_cohort=20)))
    people = [r["norm_volume"] for r in rows]
    assert out["c000p"]["cohort_size"] == 40
    assert out["c000p"]["volume_hi"] == pytest.approx(np.percentile(people, 99.0))
    assert sum(out[f"c{i:03d}p"]["out_volume"] for i in range(40)) > 10  # judged, and many outside
    few = judge(rows[:10] + pseudo, QCConfig(percentiles="empirical", min_cohort=20))
    assert few[0]["cohort_size"] == 50  # too few people's labels: every label sets the bounds


def test_scans_dedup_dropped_leave_the_bounds_but_are_judged() -> None:
    rows = cohort(n=30)
    copies = {f"c{i:03d}" for i in range(5)}
    for r in rows[:5]:
        r["norm_volume"] = 0.5  # far out: inside the bounds' sample they would stretch the upper bound
    out = by_case(judge(rows, QCConfig(percentiles="empirical", min_cohort=20), copies=copies))
    assert out["c010"]["cohort_size"] == 25
    assert out["c010"]["volume_hi"] == pytest.approx(np.percentile([r["norm_volume"] for r in rows[5:]], 99.0))
    assert out["c000"]["out_volume"] is True


def test_small_cohorts_are_unchecked_and_bases_never_mix() -> None:
    rows = cohort(n=30) + cohort(n=8, seed=1, basis="absolute")
    for r in rows[30:]:
        r["case_id"] += "x"
    out = judge(rows, QCConfig(min_cohort=20))
    keys = {r["cohort"] for r in out}
    assert keys == {"liver/CT/body", "liver/CT/absolute"}
    absolute = [r for r in out if r["volume_basis"] == "absolute"]
    assert all(r["decision"] == "unchecked" and "min_cohort" in r["reason"] for r in absolute)
    assert all(r["decision"] in ("include", "exclude") for r in out if r["volume_basis"] == "body")
    # the absolute cohort judges millilitres, not normalised volumes
    assert absolute[0]["f_volume"] == pytest.approx(absolute[0]["volume_ml"])


@pytest.mark.parametrize("norm,col", [("body", "norm_volume"), ("section", "norm_volume_section"),
                                      ("absolute", "volume_ml")])
def test_volume_norm_chooses_the_volume_feature(norm: str, col: str) -> None:
    """A label whose volume is an outlier in one basis only is excluded exactly when the cohort
    is judged on that basis; label-only rows stay in millilitres whatever the setting."""
    rows = cohort(n=40)
    rng = np.random.default_rng(5)
    for r in rows:
        r["norm_volume_section"] = float(np.exp(rng.normal(np.log(0.5), 0.1)))
    rows[0][col] *= 10.0
    rows[0]["eccentricity"] = 0.95
    label_only = {**cohort(n=1, seed=9, basis="absolute")[0], "case_id": "lo"}
    out = by_case(judge([*rows, label_only], QCConfig(volume_norm=norm)))  # type: ignore[arg-type]
    assert out["c000"]["decision"] == "exclude" and out["c000"]["out_volume"]
    assert out["c000"]["f_volume"] == pytest.approx(rows[0][col])
    assert out["c000"]["cohort"] == f"liver/CT/{norm}" and out["c000"]["volume_basis"] == norm
    assert out["lo"]["volume_basis"] == "absolute" and out["lo"]["f_volume"] == label_only["volume_ml"]
    for other in {"body", "section", "absolute"} - {norm}:
        assert by_case(judge(rows, QCConfig(volume_norm=other)))["c000"]["decision"] == "include"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="volume_norm"):
        QCConfig.from_dict({"volume_norm": "coverage"})


def test_iqr_mode_uses_tukey_fences() -> None:
    rows = cohort(n=50)
    rows[0].update(norm_volume=0.2)
    out = judge(rows, QCConfig(method="iqr"))
    vols = [r["norm_volume"] for r in rows]
    q1, q3 = np.percentile(vols, [25, 75])
    assert out[0]["volume_hi"] == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert iqr_bounds(vols, 1.5)[1] == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert out[0]["sphericity_lo"] is None  # not an IQR feature by default
    res = by_case(out)
    assert res["c000"]["decision"] == "exclude" and res["c000"]["reason"].startswith("IQR")


def test_mesh_sphericity_option_judges_the_mesh_value() -> None:
    rows = cohort()
    out = judge(rows, QCConfig(sphericity="mesh"))
    assert out[0]["f_sphericity"] == rows[0]["sphericity_mesh"]


def test_overrides_reinclude_and_keep_the_filters_reason() -> None:
    rows = cohort()
    rows[1].update(norm_volume=0.002, eccentricity=0.95)
    ov = [Override("c001", "liver", None, "include", "checked: situs variant"),
          Override("c005", "liver", "original", "exclude", "leaks into the heart")]
    res = by_case(judge(rows, QCConfig(), ov))
    assert res["c001"]["decision"] == "override_include" and res["c001"]["override"]
    assert "situs variant" in res["c001"]["reason"] and "exclude" in res["c001"]["reason"]
    assert res["c005"]["decision"] == "exclude" and "heart" in res["c005"]["reason"]


def test_override_files(tmp_path: Path) -> None:
    y = tmp_path / "o.yaml"
    y.write_text("- {case_id: c1, term: liver, origin: pseudo, action: exclude, reason: bad}\n- {case_id: c2, term_id: spleen}\n")
    assert load_overrides(y) == [Override("c1", "liver", "pseudo", "exclude", "bad"),
                                 Override("c2", "spleen", None, "include", "")]
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,term,action\nc1,liver,maybe\n,spleen,include\n")
    with pytest.raises(ConfigError) as e:
        load_overrides(bad)
    assert "row 1" in str(e.value) and "row 2" in str(e.value)
    with pytest.raises(ConfigError):
        load_overrides(tmp_path / "missing.yaml")


def test_config_is_strict() -> None:
    with pytest.raises(ConfigError):
        QCConfig.from_dict({"epsilon": 60})
    with pytest.raises(ConfigError):
        QCConfig.from_dict({"iqr_features": ["colour"]})
    with pytest.raises(ConfigError):
        QCConfig.from_dict({"epsilonn": 2})
    cfg = QCConfig.from_dict({"sphericity": "mesh", "overrides": "o.yaml"})
    assert QCConfig.from_dict(cfg.to_dict()) == cfg


def test_detached_feature_sees_a_distant_blob() -> None:
    rows = cohort()
    for r in rows:
        r["largest_component_fraction"] = 1.0
    rows[3]["largest_component_fraction"] = 0.999  # a few stray voxels: not an outlier
    rows[7].update(largest_component_fraction=0.8, eccentricity=0.95)  # blob: elongated + detached
    paper = by_case(judge(rows, QCConfig()))
    assert paper["c007"]["n_out"] == 1 and paper["c007"]["decision"] == "include"
    assert paper["c007"]["out_detached"] is None
    ext = by_case(judge(rows, QCConfig(features=("volume", "sphericity", "eccentricity", "detached"))))
    assert ext["c007"]["decision"] == "exclude" and "detached share 0.2" in ext["c007"]["reason"]
    assert ext["c003"]["out_detached"] is False and ext["c007"]["detached_lo"] == 0.0
    with pytest.raises(ConfigError):
        QCConfig.from_dict({"features": ["volume", "volume"]})
    with pytest.raises(ConfigError):
        QCConfig.from_dict({"features": ["volume"], "vote": 2})


def test_single_lateral_labels_are_checked_against_the_body_centre(tmp_path) -> None:
    import numpy as np

    from curator.io.volume import Geometry
    from curator.qc.side import check_sides
    from curator.qc.store_io import body_centre_x
    from curator.store import CaseStore

    aff = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -10.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])  # i runs to the left
    g = Geometry.from_affine((30, 20, 10), aff)
    body = np.zeros(g.shape, bool)
    body[4:20, 2:18, :] = True
    store = CaseStore.create(tmp_path / "s.zarr", geometry=g, attrs={"case_id": "s"}, image=body.astype(np.int16),
                             body=body, labels=[])
    idx = np.argwhere(body).mean(0)
    assert abs(body_centre_x(store) - float((aff @ np.r_[idx, 1])[0])) < 1e-9
    bx = body_centre_x(store)

    def row(term: str, x: float) -> dict:
        return {"case_id": "s", "origin": "original", "term_id": term, "centroid_mm": [x, 0.0, 0.0], "body_x_mm": bx}

    out = check_sides([row("adrenal_gland_left", bx - 40), row("lung_right", bx - 30), row("liver", bx - 80)], 10.0)
    got = {r["term_id"]: (r["lateral_mm"], r["wrong_side"]) for r in out}
    assert got == {"adrenal_gland_left": (40.0, False), "lung_right": (-30.0, True), "liver": (None, None)}
    assert "to the patient's left of the body's centre" in out[1]["side_reason"]
    off = check_sides([row("lung_right", bx - 30)], None)
    assert (off[0]["lateral_mm"], off[0]["wrong_side"]) == (None, None)
    # a label-only case with one kidney: nothing to compare with, and the qc reason says so
    rows = cohort(n=25, term="kidney_left", basis="absolute")
    for r in rows:
        r.update(centroid_mm=[60.0, 0.0, 0.0])
    rows[0]["centroid_mm"] = [-60.0, 0.0, 0.0]  # on the patient's right: unseen without a reference
    got = by_case(judge(rows, QCConfig(min_cohort=20)))["c000"]
    assert got["lateral_mm"] is None and got["decision"] == "include"
    assert "side not checked: no right kidney label and no image" in got["reason"]


def test_the_ventricles_are_checked_as_a_pair_never_against_the_midline() -> None:
    """The taxonomy gives the heart's chambers no laterality, so an LV/RV swap (ACDC codes 1 as
    the right ventricle, M&Ms as the left) was never checked. The left ventricle lies to the
    patient's left of the right one; the right ventricle alone may lie left of the midline."""
    from curator.qc.side import check_sides, swapped_datasets

    def row(case: str, term: str, x: float) -> dict:
        return {"dataset": "D", "case_id": case, "origin": "original", "term_id": term, "centroid_mm": [x, 20.0, 0.0],
                "body_x_mm": 0.0}

    swapped = [row(c, t, x) for c in ("a", "b") for t, x in (("left_ventricle", 8.0), ("right_ventricle", -30.0),
                                                              ("myocardium", -25.0))]
    got = {(r["case_id"], r["term_id"]): (r["lateral_mm"], r["wrong_side"]) for r in check_sides(swapped, 10.0)}
    assert got[("a", "left_ventricle")] == (-38.0, True) and got[("a", "right_ventricle")] == (-38.0, True)
    assert got[("a", "myocardium")] == (None, None)
    assert "the left ventricle lies 38 mm to the patient's right of the right ventricle" in swapped[0]["side_reason"]
    ((_, err),) = swapped_datasets(swapped)
    assert "(left ventricle 2 of 2, right ventricle 2 of 2)" in err.detail and "ACDC codes 1" in err.remedy
    right = [row("a", "left_ventricle", -30.0), row("a", "right_ventricle", 8.0)]
    assert [r["wrong_side"] for r in check_sides(right, 10.0)] == [False, False]
    # a lone right ventricle left of the body's centre (normal anatomy): not placed against it, and no reason
    (lone,) = check_sides([row("a", "right_ventricle", -15.0)], 10.0)
    assert (lone["lateral_mm"], lone["wrong_side"]) == (None, None) and "side_unchecked" not in lone
    atria = check_sides([row("a", "left_atrium", 30.0), row("a", "right_atrium", -10.0)], 10.0)
    assert [r["wrong_side"] for r in atria] == [True, True]
    out = judge([{**r, "modality": "MR", "volume_basis": "body", "truncated": False} for r in swapped[:2]], QCConfig())
    assert {r["decision"] for r in out} == {"exclude"}


def test_the_side_check_uses_the_pipelines_taxonomy() -> None:
    """A custom taxonomy's left/right pair: checked with it (the bundled one does not know it)."""
    from curator.qc.side import check_sides
    from curator.taxonomy.release import taxonomy_from_rows

    def term(tid: str, side: str | None, part_of: list[str], partitions: list[list[str]]) -> dict:
        return {"term_id": tid, "name": tid.replace("_", " "), "category": "organ", "region": "abdomen",
                "synonyms": [], "abbreviations": [], "laterality": side, "part_of": part_of, "is_a": [],
                "partitions": partitions}

    tax = taxonomy_from_rows([term("toy", None, [], [["toy_left", "toy_right"]]),
                              term("toy_left", "left", ["toy"], []), term("toy_right", "right", ["toy"], [])])
    rows = [{"case_id": "s", "origin": "original", "term_id": t, "centroid_mm": [x, 0.0, 0.0]}
            for t, x in (("toy_left", 50.0), ("toy_right", -50.0))]  # RAS: the left is -x; both swapped
    assert {r["wrong_side"] for r in check_sides([dict(r) for r in rows], 10.0, tax)} == {True}
    assert {r["wrong_side"] for r in check_sides([dict(r) for r in rows], 10.0)} == {None}
    out = judge([{**r, "modality": "CT", "volume_basis": "body", "truncated": False} for r in rows],
                QCConfig(), tax=tax)
    assert {r["decision"] for r in out} == {"exclude"}


def test_override_files_from_spreadsheets_give_clear_errors(tmp_path: Path) -> None:
    """Excel's byte-order mark is read; a semicolon CSV, a comma inside an unquoted reason and a
    folder for a file are named as such (they read as "row 1 needs case_id and term",
    "unknown columns [None]" and a raw IsADirectoryError)."""
    bom = tmp_path / "bom.csv"
    bom.write_bytes("case_id,term,reason\nc1,liver,ok\n".encode("utf-8-sig"))
    assert [o.case_id for o in load_overrides(bom)] == ["c1"]
    cases = {"semi.csv": ("case_id;term;reason\nc1;liver;ok\n", "separated by semicolons"),
             "extra.csv": ("case_id,term,reason\nc1,liver,horseshoe, checked by AB\n", "more fields than the header")}
    for name, (text, says) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=says):
            load_overrides(tmp_path / name)
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match="names a folder"):
        load_overrides(tmp_path / "folder.yaml")
    doc = tmp_path / "doc.yaml"  # the example of docs/qc.md
    doc.write_text('- {case_id: KiTS23__case_00008, term: kidney, action: include, reason: "horseshoe kidney, checked by AB"}\n')
    assert load_overrides(doc)[0].reason == "horseshoe kidney, checked by AB"


def test_a_kept_label_with_a_feature_outside_says_so_in_digits_that_differ() -> None:
    """A distant blob seen by one feature was kept with an empty reason; and a value just past a
    bound read "sphericity 0.4489 > 0.4489"."""
    rows = cohort(n=40)
    cfg = QCConfig(percentiles="empirical", min_cohort=20)
    hi = by_case(judge(rows, cfg, copies={"c000"}))["c000"]["volume_hi"]
    rows[0]["norm_volume"] = hi * (1 + 1e-7)  # just past the bound; a copy, so the bounds stay put
    got = by_case(judge(rows, cfg, copies={"c000"}))["c000"]
    assert got["decision"] == "include" and got["n_out"] == 1
    assert got["reason"].startswith("kept: 1 of 3 features outside the bounds, 2 needed to exclude: normalised volume ")
    value, bound = got["reason"].rsplit(": ", 1)[1].split()[-3::2]
    assert value != bound and float(value) > float(bound)
    quiet = by_case(judge(rows, cfg, copies={"c000"}))["c001"]  # nothing out: said too, not a blank reason
    assert quiet["decision"] == "include" and quiet["n_out"] == 0
    assert quiet["reason"] == f"kept: all 3 features judged are within the bounds of cohort {quiet['cohort']} (n=39)"


def test_a_volume_in_a_reason_says_it_is_the_store_grids() -> None:
    """A reason quoted 'volume (ml) 1175 > 1070' — qc's store-grid volume — while the labels table's
    volume_ml of the same label (the source grid's) read 1172.6: two numbers under one name."""
    rows = cohort(n=40, basis="absolute")  # a case without an image: judged in ml
    rows[0].update(volume_ml=rows[0]["volume_ml"] * 5, eccentricity=0.99)
    got = by_case(judge(rows, QCConfig(min_cohort=20)))["c000"]
    assert got["decision"] == "exclude" and "store-grid volume (ml) " in got["reason"], got["reason"]


def test_an_override_origin_that_is_no_layer_is_an_error_naming_the_row(tmp_path: Path) -> None:
    """`origin: psuedo` matched no label, and the only symptom was an override_unmatched warning
    naming the case and term, not the misspelt origin."""
    y = tmp_path / "o.yaml"
    y.write_text("- {case_id: c1, term: liver, origin: pseudo, action: exclude, reason: ok}\n"
                 "- {case_id: c2, term: liver, origin: psuedo, action: exclude, reason: typo}\n")
    with pytest.raises(ConfigError) as e:
        load_overrides(y)
    msg = str(e.value)
    assert "row 2" in msg and "psuedo" in msg and "row 1" not in msg
    assert all(layer in msg for layer in ("original", "revised", "pseudo"))
    y.write_text("- {case_id: c1, term: liver, origin: Revised, action: exclude}\n")  # as forgiving as `action`
    assert load_overrides(y)[0].origin == "revised"


def test_two_override_rows_for_one_label_are_an_error_naming_both(tmp_path: Path) -> None:
    """An `exclude` row then an `include` row for one label were accepted silently: the last won."""
    y = tmp_path / "o.yaml"
    y.write_text("- {case_id: c1, term: spleen, action: exclude, reason: 'AB: leaks into stomach'}\n"
                 "- {case_id: c2, term: spleen, action: exclude, reason: other case}\n"
                 "- {case_id: c1, term: spleen, action: include, reason: 'CD: looks fine'}\n")
    with pytest.raises(ConfigError) as e:
        load_overrides(y)
    msg = str(e.value)
    assert "rows 1 and 3" in msg and "c1" in msg and "spleen" in msg and "c2" not in msg
    assert "AB: leaks into stomach" in msg and "CD: looks fine" in msg
    # a row without origin matches every layer, so it decides the pseudo label too
    y.write_text("- {case_id: c1, term: spleen, action: exclude}\n"
                 "- {case_id: c1, term: spleen, origin: pseudo, action: include}\n")
    with pytest.raises(ConfigError, match="rows 1 and 2"):
        load_overrides(y)
    y.write_text("- {case_id: c1, term: spleen, action: exclude, reason: a}\n"  # the same action twice: refused too
                 "- {case_id: c1, term: spleen, action: exclude, reason: b}\n")
    with pytest.raises(ConfigError, match="rows 1 and 2.*twice"):
        load_overrides(y)
    y.write_text("- {case_id: c1, term: spleen, origin: original, action: exclude}\n"  # two layers: two labels
                 "- {case_id: c1, term: spleen, origin: pseudo, action: include}\n")
    assert [o.origin for o in load_overrides(y)] == ["original", "pseudo"]


def test_an_overrides_filter_said_is_the_filters_decision_never_another_override() -> None:
    rows = cohort()
    ov = [Override("c003", "liver", None, "exclude", "AB: leaks"), Override("c003", "liver", None, "include", "CD")]
    r = by_case(judge(rows, QCConfig(), ov))["c003"]
    said = r["reason"].split("filter said: ", 1)[1]
    assert said.startswith("include (kept: all 3 features judged are within") and "AB" not in said


def test_a_truncated_label_larger_than_its_cohorts_complete_labels_is_told_to_review() -> None:
    """A pseudo liver leaking to the scan's edge (2033 ml, sphericity 0.33) was `truncated`:
    kept, not judged, and said nothing. A cut only removes voxels, so a truncated label above the
    complete labels' upper volume bound (ml) is above it whatever the cut."""
    rows = cohort()
    ml = [r["volume_ml"] for r in rows]
    leak = {**rows[0], "case_id": "leak", "volume_ml": 3 * max(ml), "sphericity": 0.33, "eccentricity": 0.97,
            "truncated": True, "border_faces": ["k+"]}
    cut = {**rows[0], "case_id": "cut", "volume_ml": 0.5 * min(ml), "norm_volume": 0.2, "truncated": True,
           "border_faces": ["k-"]}  # a large normalised volume (a short scan's body) is not the test: ml is
    res = by_case(judge([*rows, leak, cut], QCConfig()))
    hi = normal_bounds(ml, 2.0, "volume")[1]  # 60 labels at ε = 2: the fitted estimator, as the filter's
    assert hi < leak["volume_ml"]
    assert res["leak"]["decision"] == "truncated" and res["leak"]["oversized"] is True
    reason = res["leak"]["reason"]
    assert f"{leak['volume_ml']:.4g} ml > the 60 complete labels' P99 (fitted) {hi:.4g} ml" in reason
    assert "larger than any cut explains" in reason and "review" in reason
    assert res["cut"]["decision"] == "truncated" and res["cut"]["oversized"] is False
    assert "review" not in res["cut"]["reason"]
    assert all(r["oversized"] is None for r in res.values() if not r["truncated"])
    # the empirical estimator when asked for, as the filter uses it
    emp = by_case(judge([*rows, {**leak, "volume_ml": max(ml) * 1.01}], QCConfig(percentiles="empirical")))
    assert emp["leak"]["oversized"] is True
    assert f"labels' P99 (empirical) {percentile_bounds(ml, 2.0)[1]:.4g} ml" in emp["leak"]["reason"]
    # fewer complete labels than min_cohort: no bound, not said
    small = by_case(judge([*rows[:10], leak], QCConfig()))
    assert small["leak"]["oversized"] is None and "review" not in small["leak"]["reason"]
    # the scans dedup dropped as copies are no complete labels of their own; pseudo labels are
    many = by_case(judge([*rows, leak], QCConfig(), copies={r["case_id"] for r in rows[10:]}))
    assert many["leak"]["oversized"] is None
    mixed = [{**r, "origin": "pseudo"} if i % 2 else r for i, r in enumerate(rows)]  # 30 people's, 30 models'
    assert "the 60 complete labels'" in by_case(judge([*mixed, leak], QCConfig()))["leak"]["reason"]


def test_override_yaml_values_keep_their_text(tmp_path: Path) -> None:
    """YAML 1.1 read `reason: Yes` as True (stored "override include: True"), `reason: no` as
    False ("no reason given"; `exclude ('')` in a conflict), and a case id `00012` as 12."""
    y = tmp_path / "o.yaml"
    y.write_text("- {case_id: 00012, term: liver, action: include, reason: Yes}\n"
                 "- {case_id: c2, term: liver, action: exclude, reason: no}\n"
                 "- {case_id: c3, term: liver, origin: ~, reason: off}\n")
    got = load_overrides(y)
    assert [(o.case_id, o.reason, o.origin) for o in got] == [("00012", "Yes", None), ("c2", "no", None),
                                                              ("c3", "off", None)]
    y.write_text("- {case_id: c1, term: liver, action: include, reason: ok}\n"
                 "- {case_id: c1, term: liver, action: exclude, reason: no}\n")
    with pytest.raises(ConfigError, match=r"exclude \('no'\)"):
        load_overrides(y)


def test_override_rows_record_who_and_when(tmp_path: Path) -> None:
    """A CSV with `reviewer,date` columns was refused ("unknown columns ['date', 'reviewer']"): the
    person and the day lived in the free-text reason, if anywhere."""
    import datetime as dt

    c = tmp_path / "o.csv"
    c.write_text("case_id,term,origin,action,reason,reviewer,date\n"
                 "c001,liver,original,include,normal elongated liver,RAD1,2024-06-01\nc005,liver,,exclude,leaks,,\n")
    got = load_overrides(c)
    assert (got[0].reviewer, got[0].date) == ("RAD1", dt.date(2024, 6, 1)) and (got[1].reviewer, got[1].date) == (None, None)
    rows = cohort()
    rows[1].update(norm_volume=0.002, eccentricity=0.95)
    res = by_case(judge(rows, QCConfig(), got))
    one = res["c001"]
    assert one["reason"].startswith("override include (RAD1, 2024-06-01): normal elongated liver; filter said: exclude")
    assert (one["override_reason"], one["override_reviewer"], one["override_date"]) == (
        "normal elongated liver", "RAD1", dt.date(2024, 6, 1))
    assert res["c005"]["reason"].startswith("override exclude: leaks;") and res["c005"]["override_reviewer"] is None
    y = tmp_path / "o.yaml"  # a date that is no ISO date names the row and the form to write
    y.write_text("- {case_id: c1, term: liver, reason: ok, date: 2024-06-01}\n"
                 "- {case_id: c2, term: liver, reason: ok, date: 01/06/2024}\n")
    with pytest.raises(ConfigError, match=r"row 2: date '01/06/2024' is not a date \(write it YYYY-MM-DD") as e:
        load_overrides(y)
    assert "row 1" not in str(e.value) and e.value.path == str(y)
    for other in ("20240601", "2024-W23-6"):  # other ISO 8601 forms Python reads are not what the docs say
        y.write_text(f"- {{case_id: c1, term: liver, reason: ok, date: {other}}}\n")
        with pytest.raises(ConfigError, match=f"date '{other}' is not a date"):
            load_overrides(y)


def test_a_reason_can_be_required(tmp_path: Path) -> None:
    """A row without a reason was stored as "no reason given"; override_reason: required refuses it."""
    y = tmp_path / "o.yaml"
    y.write_text("- {case_id: c1, term: liver, reason: checked}\n- {case_id: c2, term: liver}\n"
                 "- {case_id: c3, term: spleen, reason: ''}\n")
    assert [o.reason for o in load_overrides(y)] == ["checked", "", ""]
    with pytest.raises(ConfigError) as e:
        load_overrides(y, require_reason=True)
    msg = str(e.value)
    assert "row 2 (c2 / liver) gives no reason" in msg and "row 3 (c3 / spleen)" in msg and "row 1" not in msg
    assert "override_reason: required" in msg
    assert QCConfig.from_dict({"override_reason": "required"}).override_reason == "required"
    with pytest.raises(ConfigError, match="override_reason"):
        QCConfig.from_dict({"override_reason": "yes"})


def test_settings_added_at_their_default_leave_the_hash_as_it_was() -> None:
    """override_reason and on_unmatched_override are new: at their defaults (what qc did before
    them) a workspace's qc run stays current, and its cached measurements stay keyed the same."""
    before = "dc46dec8a5c19d1b"  # QCConfig().config_hash() before the two settings existed
    assert QCConfig().config_hash() == QCConfig().per_case().config_hash() == before
    assert QCConfig(overrides="o.yaml").config_hash() == "119b98366bce81a1"
    changed = {QCConfig(override_reason="required").config_hash(), QCConfig(on_unmatched_override="error").config_hash()}
    assert before not in changed and len(changed) == 2  # set: a change re-judges
    assert QCConfig(on_unmatched_override="error").per_case().config_hash() == before  # ...without re-measuring
    assert QCConfig(on_unmatched_override="error").to_dict()["on_unmatched_override"] == "error"
    from curator.runner.freshness import _changed

    old = {k: v for k, v in QCConfig().to_dict().items() if k not in QCConfig.hashed_when_set()}  # a record before
    assert _changed(old, QCConfig(on_unmatched_override="error"), given={"on_unmatched_override"}) == \
        'on_unmatched_override: "warn" → "error"'
    recorded = QCConfig(on_unmatched_override="error").to_dict()
    assert _changed(recorded, QCConfig(), old_given=()) == \
        'on_unmatched_override: "error" → "warn" (this curator\'s default)'  # neither run gave it
    assert _changed(recorded, QCConfig(), old_given={"on_unmatched_override"}) == \
        'on_unmatched_override: "error" → "warn" (not in pipeline.yaml: the default)'  # taken out of pipeline.yaml
    assert _changed(recorded, QCConfig()) == \
        'on_unmatched_override: "error" → "warn" (not in pipeline.yaml: this curator\'s default)'  # a record before 12-08


def sequences(rows: list[dict[str, Any]], seqs: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f"),
              ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each row as a study of several sequence cases sharing its label file (a BraTS seg): the
    same voxels, a body volume of each sequence's own (so the normalised volume varies a little)."""
    from curator.qc.shared import shared_label_keys

    out, cases = [], []
    for r in rows:
        for j, q in enumerate(seqs):
            cid = f"{r['case_id']}__{q}"
            out.append({**r, "case_id": cid, "norm_volume": r["norm_volume"] * (1 + 0.01 * (j - 1.5))})
            cases.append({"case_id": cid, "study_key": f"s_{r['case_id']}", "label_sha256": f"h_{r['case_id']}"})
    return out, shared_label_keys(cases)


def test_a_label_file_shared_by_a_studys_sequences_counts_once_and_gets_one_decision() -> None:
    """A BraTS study's four sequences share one seg: 6 studies are 6 labels, not a cohort of 24."""
    studies = cohort(n=6)
    rows, shared = sequences(studies)
    cfg = QCConfig(percentiles="empirical", min_cohort=20)
    alone = judge(rows, cfg)  # without knowing the label is shared: 24 labels, judged
    assert alone[0]["cohort_size"] == 24 and {r["decision"] for r in alone} != {"unchecked"}
    out = by_case(judge(rows, cfg, shared=shared))
    assert {r["cohort_size"] for r in out.values()} == {6}
    assert {r["decision"] for r in out.values()} == {"unchecked"} and "has 6 complete labels" in out[
        "c000__t1n"]["reason"]
    # a cohort large enough: bounds from one value per study (the median over its sequences)
    studies = cohort(n=30)
    studies[0].update(norm_volume=0.002, eccentricity=0.95)  # a broken seg: every sequence of its study
    rows, shared = sequences(studies)
    out = by_case(judge(rows, cfg, shared=shared))
    assert {r["cohort_size"] for r in out.values()} == {30}
    assert out["c001__t1n"]["volume_hi"] == pytest.approx(np.percentile([r["norm_volume"] for r in studies], 99.0))
    for s in studies:
        got = [out[f"{s['case_id']}__{q}"] for q in ("t1n", "t1c", "t2w", "t2f")]
        assert len({(g["decision"], g["flagged"], g["out_volume"], g["out_eccentricity"], g["f_volume"])
                    for g in got}) == 1, s["case_id"]
        assert len({g["norm_volume"] for g in got}) == 4  # each row keeps its own measurement
    assert out["c000__t2f"]["decision"] == "exclude" and "(n=30)" in out["c000__t2f"]["reason"]


def test_a_shared_label_decided_near_a_bound_gets_one_decision_for_every_sequence() -> None:
    """Sequences whose body volumes put the normalised volume on both sides of a bound still agree."""
    studies = cohort(n=30)
    rows, shared = sequences(studies)
    cfg = QCConfig(percentiles="empirical", min_cohort=20, vote=1)
    hi = judge(rows, cfg, shared=shared)[0]["volume_hi"]
    for r in rows[:4]:  # study c000 straddles the upper bound
        r["norm_volume"] = hi * (0.98 if r["case_id"].endswith(("t1n", "t1c")) else 1.02)
    out = by_case(judge(rows, cfg, shared=shared))
    got = {out[f"c000__{q}"]["decision"] for q in ("t1n", "t1c", "t2w", "t2f")}
    assert len(got) == 1


def test_an_override_of_one_sequence_decides_the_shared_label_of_them_all() -> None:
    rows, shared = sequences(cohort(n=30))
    ov = Override("c004__t2w", "liver", None, "exclude", "the seg misses the tumour")
    out = by_case(judge(rows, QCConfig(min_cohort=20), [ov], shared=shared))
    assert {out[f"c004__{q}"]["decision"] for q in ("t1n", "t1c", "t2w", "t2f")} == {"exclude"}
    assert out["c005__t2w"]["decision"] != "exclude" or not out["c005__t2w"]["override"]


def test_a_pseudo_layer_or_another_studys_identical_file_is_no_shared_label() -> None:
    from curator.qc.shared import label_units, shared_label_keys

    cases = [{"case_id": "a__t1n", "study_key": "s1", "label_sha256": "h"},
             {"case_id": "a__t2f", "study_key": "s1", "label_sha256": "h"},
             {"case_id": "b__t1n", "study_key": "s2", "label_sha256": "h"},  # a re-upload: dedup's business
             {"case_id": "c__t1n", "study_key": "s3", "label_sha256": None}]
    shared = shared_label_keys(cases)
    assert shared == {"a__t1n": "s1|h", "a__t2f": "s1|h"}
    rows = [{"case_id": c, "term_id": "liver", "origin": o} for c in ("a__t1n", "a__t2f", "b__t1n")
            for o in ("original", "pseudo")]
    units = sorted(sorted(r["case_id"] + "/" + r["origin"] for r in u) for u in label_units(rows, shared))
    assert units == [["a__t1n/original", "a__t2f/original"], ["a__t1n/pseudo"], ["a__t2f/pseudo"],
                     ["b__t1n/original"], ["b__t1n/pseudo"]]


def test_cine_frames_are_judged_in_their_phases_cohort() -> None:
    """ACDC and M&Ms label an end-diastole and an end-systole frame per patient: the ES left
    ventricle holds about half the ED one. Mixed in one (term, modality) cohort, the bounds span
    both phases, so an ES label drawn at ED size (the wrong frame's mask) passed; judged in the ES
    cohort it is outside its volume bounds."""
    ed, es = cohort(n=60, seed=1, term="left_ventricle"), cohort(n=60, seed=2, term="left_ventricle")
    for r in es:
        r.update(case_id=r["case_id"] + "_es", norm_volume=r["norm_volume"] * 0.5)
    es[0]["norm_volume"] = 0.02  # an ES label as large as an ED one
    phases = {**{r["case_id"]: "ED" for r in ed}, **{r["case_id"]: "ES" for r in es}}
    cfg = QCConfig(percentiles="empirical")
    mixed = by_case(judge(ed + es, cfg))
    assert mixed["c000_es"]["out_volume"] is False and mixed["c000_es"]["cohort"] == "left_ventricle/CT/body"
    split = by_case(judge(ed + es, cfg, phases=phases))
    assert split["c000_es"]["out_volume"] is True and split["c000_es"]["cohort"] == "left_ventricle/CT/ES/body"
    assert {split[c]["cohort"] for c in phases if phases[c] == "ED"} == {"left_ventricle/CT/ED/body"}
    assert split["c000_es"]["cohort_size"] == 60
    # a case of unknown phase stays in the (term, modality) cohort
    assert by_case(judge(ed, cfg, phases={"c000": None}))["c000"]["cohort"] == "left_ventricle/CT/body"
