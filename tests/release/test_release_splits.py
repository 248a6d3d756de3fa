"""Split assignment: units, official test, stratification, stability, conflicts, leakage check."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.errors import ConfigError, ReleaseError
from curator.release.splits import SplitConfig, assign_splits, check_leakage
from curator.release.units import find_leaks, link_table, unit_labels


def cases(rows: list[dict[str, Any]]) -> pl.DataFrame:
    base = {"dataset": "A", "modality": "CT", "official_split": None, "study_key": None}
    full = [{**base, "study_key": f"s_{r['case_id']}", **r} for r in rows]
    return pl.DataFrame(full, schema={"case_id": pl.String, "dataset": pl.String, "modality": pl.String,
                                      "patient_id": pl.String, "study_key": pl.String,
                                      "official_split": pl.String})


def dups(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"group_id": pl.String, "case_id": pl.String}, orient="row")


def split_of(df: pl.DataFrame) -> dict[str, str]:
    return dict(df.select("case_id", "split").iter_rows())


def test_units_close_patient_study_and_duplicate_links_transitively() -> None:
    c = cases([{"case_id": "a1", "patient_id": "pa"}, {"case_id": "a2", "patient_id": "pa"},
               {"case_id": "b1", "patient_id": "pb", "study_key": "s_shared"},
               {"case_id": "b2", "patient_id": "pb2", "study_key": "s_shared"},
               {"case_id": "c1", "patient_id": "pc", "dataset": "B"}, {"case_id": "d1", "patient_id": "pd"}])
    d = dups([("g1", "a2"), ("g1", "c1"), ("g2", "not_released")])
    u = unit_labels(c["case_id"], link_table(c, d)).to_list()
    assert u[0] == u[1] == u[4]  # patient a + duplicate of a2 in another dataset
    assert u[2] == u[3]  # two sequences of one study
    assert len({u[0], u[2], u[5]}) == 3


def test_official_test_wins_for_the_whole_unit() -> None:
    c = cases([{"case_id": "x1", "patient_id": "p1", "official_split": "test"},
               {"case_id": "x2", "patient_id": "p1", "official_split": "train"},
               {"case_id": "y1", "patient_id": "p2", "dataset": "B"}])
    s = assign_splits(c, dups([("g", "x2"), ("g", "y1")]), None, SplitConfig())
    assert set(split_of(s).values()) == {"test"}
    assert set(s["reason"]) == {"official_test"}
    assert set(assign_splits(c, None, None, SplitConfig(official_test=False))["reason"]) == {"assigned"}


def test_every_small_stratum_gets_its_share_and_strata_are_balanced() -> None:
    rows = [{"case_id": f"{ds}{i:03d}", "patient_id": f"{ds}p{i}", "dataset": ds}
            for ds, n in (("A", 10), ("B", 200)) for i in range(n)]
    s = assign_splits(cases(rows), None, None, SplitConfig())
    counts = {(ds, sp): n for ds, sp, n in s.group_by("dataset", "split").len().iter_rows()}
    assert (counts[("A", "train")], counts[("A", "val")], counts[("A", "test")]) == (8, 1, 1)
    assert (counts[("B", "train")], counts[("B", "val")], counts[("B", "test")]) == (160, 20, 20)


def test_assignment_is_deterministic_and_seed_dependent() -> None:
    rows = [{"case_id": f"c{i:03d}", "patient_id": f"p{i}"} for i in range(50)]
    a = assign_splits(cases(rows), None, None, SplitConfig())
    assert a.equals(assign_splits(cases(list(reversed(rows))), None, None, SplitConfig()))
    assert not a.equals(assign_splits(cases(rows), None, None, SplitConfig(seed=1)))


def test_adding_cases_never_moves_existing_ones_and_a_growing_unit_keeps_its_split() -> None:
    rows = [{"case_id": f"c{i:03d}", "patient_id": f"p{i}"} for i in range(40)]
    v1 = assign_splits(cases(rows), None, None, SplitConfig())
    test_case = v1.filter(pl.col("split") == "test")["case_id"][0]
    # v2: 40 new patients, a new timepoint of the test patient whose id sorts first ("a...")
    more = rows + [{"case_id": f"d{i:03d}", "patient_id": f"q{i}"} for i in range(40)]
    pid = next(r["patient_id"] for r in rows if r["case_id"] == test_case)
    more.append({"case_id": "a_followup", "patient_id": pid})
    v2 = assign_splits(cases(more), None, v1.select("case_id", "split"), SplitConfig())
    old, new = split_of(v1), split_of(v2)
    assert all(new[c] == s for c, s in old.items())
    assert new["a_followup"] == "test"
    # new, so not 'inherited' (that is a case's own split in the parent): it joined a released unit
    reasons = dict(v2.select("case_id", "reason").iter_rows())
    assert reasons["a_followup"] == "joined" and reasons[test_case] == "inherited"
    assert {reasons[c] for c in old} == {"inherited"}
    assert v2.filter(pl.col("previous_split").is_null())["reason"].unique().sort().to_list() == ["assigned", "joined"]
    check_leakage(v2, cases(more), None)


def test_conflicting_merge_fails_or_moves_to_the_most_restrictive_split() -> None:
    rows = [{"case_id": f"c{i:03d}", "patient_id": f"p{i}"} for i in range(30)]
    v1 = assign_splits(cases(rows), None, None, SplitConfig())
    tr = v1.filter(pl.col("split") == "train")["case_id"][0]
    va = v1.filter(pl.col("split") == "val")["case_id"][0]
    d = dups([("g", tr), ("g", va)])
    kept = assign_splits(cases(rows), d, v1.select("case_id", "split"), SplitConfig())
    assert split_of(kept)[tr] == "train" and split_of(kept)[va] == "val"
    with pytest.raises(ReleaseError) as e:
        check_leakage(kept, cases(rows), d)
    assert e.value.kind == "split_leakage" and "duplicate g" in str(e.value)
    moved = assign_splits(cases(rows), d, v1.select("case_id", "split"), SplitConfig(on_conflict="move"))
    assert split_of(moved)[tr] == split_of(moved)[va] == "val"
    assert moved.filter(pl.col("case_id") == tr)["reason"][0] == "moved"
    check_leakage(moved, cases(rows), d)


def test_leakage_check_finds_a_planted_cross_split_duplicate() -> None:
    c = cases([{"case_id": "a", "patient_id": "pa"}, {"case_id": "b", "patient_id": "pb"},
               {"case_id": "c", "patient_id": "pa"}])
    planted = pl.DataFrame({"case_id": ["a", "b", "c"], "split": ["train", "test", "train"]})
    check_leakage(planted, c, None)  # no link between a and b yet
    leaks = find_leaks(planted, link_table(c, dups([("g", "a"), ("g", "b")])))
    assert leaks.select("kind", "key").rows() == [("duplicate", "g")]
    with pytest.raises(ReleaseError):
        check_leakage(planted, c, dups([("g", "a"), ("g", "b")]))
    with pytest.raises(ReleaseError):  # same patient in two splits
        check_leakage(planted.with_columns(split=pl.Series(["train", "test", "val"])), c, None)
    with pytest.raises(ReleaseError):  # a case without a split
        check_leakage(planted.head(2), c, None)


@pytest.mark.parametrize("bad", [{"fractions": {"train": 0.5, "val": 0.1}}, {"fractions": {"train": 1.2, "test": -0.2}},
                                 {"fractions": {"train": 0.9, "holdout": 0.1}}, {"stratify": ["site"]},
                                 {"on_conflict": "ignore"}, {"fraction": {}}])
def test_bad_split_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SplitConfig.from_dict(bad)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), patients=st.integers(1, 30), groups=st.lists(st.tuples(
    st.integers(0, 89), st.integers(0, 89)), max_size=15), extra=st.integers(0, 30), seed=st.integers(0, 3))
def test_property_no_leakage_and_stability(n: int, patients: int, groups: list[tuple[int, int]], extra: int,
                                           seed: int) -> None:
    """v1 never leaks; v2 (more cases, more links) keeps every v1 case where it was unless a new link
    joins cases of different splits: then `fail` keeps them and the check fails, `move` moves them."""
    rows = [{"case_id": f"c{i:03d}", "patient_id": f"p{i % patients}", "dataset": "AB"[i % 2],
             "official_split": "test" if i % 17 == 5 else None} for i in range(n + extra)]
    d_all = dups([(f"g{k}", f"c{x:03d}") for k, pair in enumerate(groups) for x in pair])
    d_v1 = d_all.filter(pl.col("case_id").is_in([r["case_id"] for r in rows[:n]]))
    v1 = assign_splits(cases(rows[:n]), d_v1, None, SplitConfig(seed=seed))
    check_leakage(v1, cases(rows[:n]), d_v1)
    prev = v1.select("case_id", "split")
    kept = assign_splits(cases(rows), d_all, prev, SplitConfig(seed=seed))
    assert all(split_of(kept)[c] == s for c, s in split_of(v1).items())
    conflicts = kept.filter(pl.col("reason") == "conflict").height
    if conflicts:
        with pytest.raises(ReleaseError):
            check_leakage(kept, cases(rows), d_all)
    else:
        check_leakage(kept, cases(rows), d_all)
    moved = assign_splits(cases(rows), d_all, prev, SplitConfig(seed=seed, on_conflict="move"))
    check_leakage(moved, cases(rows), d_all)
    changed = {c for c, s in split_of(v1).items() if split_of(moved)[c] != s}
    assert changed == set(moved.filter(pl.col("reason") == "moved")["case_id"])
    assert bool(changed) == bool(conflicts)


def _new_patient_copying_a_train_and_a_val_case() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, str, str]:
    """(cases, duplicates, parent splits, train case, val case): 30 released patients, and a new
    patient px whose visit x_v1 copies a val case (group g1) and x_v2 a train case (group g2)."""
    rows = [{"case_id": f"c{i:03d}", "patient_id": f"p{i}"} for i in range(30)]
    v1 = assign_splits(cases(rows), None, None, SplitConfig())
    tr = v1.filter(pl.col("split") == "train")["case_id"][0]
    va = v1.filter(pl.col("split") == "val")["case_id"][0]
    more = cases(rows + [{"case_id": "x_v1", "patient_id": "px"}, {"case_id": "x_v2", "patient_id": "px"}])
    return more, dups([("g1", va), ("g1", "x_v1"), ("g2", tr), ("g2", "x_v2")]), v1.select("case_id", "split"), tr, va


def test_new_cases_that_join_released_units_are_joined_not_inherited() -> None:
    """A new patient whose two visits copy a val case and a train case of the parent: under `move`
    the new visits had `reason = inherited` with no split of their own in the parent."""
    more, d, prev, tr, va = _new_patient_copying_a_train_and_a_val_case()
    moved = assign_splits(more, d, prev, SplitConfig(on_conflict="move"))
    got = {r[0]: r[1:] for r in moved.select("case_id", "split", "reason", "previous_split").iter_rows()}
    assert got["x_v1"] == got["x_v2"] == ("val", "joined", None)
    assert got[tr] == ("val", "moved", "train") and got[va] == ("val", "inherited", "val")
    check_leakage(moved, more, d)


def test_the_leakage_error_names_both_sides_and_the_links_that_joined_them() -> None:
    """A new patient whose visits copy a val and a train case of the parent: the error named only
    the duplicate group whose cases span two splits after placement (the train side), neither the
    val case nor the patient link between the new visits that joined the two released units."""
    more, d, prev, tr, va = _new_patient_copying_a_train_and_a_val_case()
    kept = assign_splits(more, d, prev, SplitConfig())
    with pytest.raises(ReleaseError) as e:
        check_leakage(kept, more, d, parent="0.1.0")
    said = str(e.value)
    assert f"in train: {tr} (train in 0.1.0)" in said
    assert f"in val: {va} (val in 0.1.0), x_v1, x_v2 (new)" in said
    assert f"joined by duplicate g2 ({tr}, x_v2), patient px (x_v2, x_v1), duplicate g1 (x_v1, {va})" in said
    # without a parent: the sides are the splits the cases are in, joined by the link that spans them
    planted = pl.DataFrame({"case_id": ["a", "b"], "split": ["train", "test"]})
    with pytest.raises(ReleaseError) as e:
        check_leakage(planted, cases([{"case_id": "a", "patient_id": "p"}, {"case_id": "b", "patient_id": "p"}]), None)
    assert "2 linked cases, in train: a (new); in test: b (new) — joined by patient p (a, b)" in str(e.value)
