"""The ``sources`` table: each source's licence terms and citation, queryable next to the cases."""

from __future__ import annotations

from pathlib import Path

import yaml

from curator.release.query import Release
from curator.release.sources import source_row


def _entry(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "S", "dataset": "S", "version": "1", "title": "t", "modality": "CT",
                               "region": "abdomen", "cases": 2, "licence": "CC-BY-4.0", "licence_url": None,
                               "licence_terms": None, "citation_key": "k", "citation": "@misc{k}",
                               "homepage": None}
    return {**base, **over}


def test_terms_from_the_id_or_from_the_registrys_researched_terms() -> None:
    by_id = source_row(_entry())
    assert (by_id["commercial_use"], by_id["derivatives"], by_id["redistribution"]) == ("yes", "yes", "yes")
    assert by_id["share_alike"] is None and by_id["attribution_required"] and by_id["terms_from"] == "licence id"
    # a challenge's terms behind a LicenseRef- say nothing by the id alone; the registry's terms do
    ref = source_row(_entry(licence="LicenseRef-challenge-terms",
                            licence_terms={"commercial_use": "no", "derivatives": "yes", "redistribution": "no"}))
    assert (ref["commercial_use"], ref["redistribution"], ref["terms_from"]) == ("no", "no", "registry")
    unknown = source_row(_entry(licence="LicenseRef-unknown"))
    assert unknown["commercial_use"] == "unknown" and unknown["derivatives"] == "unknown"
    # MIT labels on CC-BY-SA images: share-alike named by the registry, not by the id
    sa = source_row(_entry(licence="MIT", licence_terms={"share_alike": "CC-BY-SA-4.0"}))
    assert sa["derivatives"] == "share-alike" and sa["share_alike"] == "CC-BY-SA"
    conflicting = source_row(_entry(licence="conflicting: CC-BY-4.0 vs CC-BY-NC-SA"))
    assert conflicting["licence_conflicting"] and conflicting["commercial_use"] == "no"


def test_the_demo_release_answers_licence_questions_in_sql(demo_base: Path) -> None:
    rel = Release(demo_base / "releases" / "demo" / "0.1.0")
    rows = {r["source"]: r for r in rel.table("sources").to_dicts()}
    card = (rel.path / "DATASET_CARD.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert set(rows) == {s["name"] for s in front["sources"]}  # the card's sources, one row each
    for s in front["sources"]:
        r = rows[s["name"]]
        assert (r["dataset"], r["dataset_version"], r["licence"], r["cases"], r["citation_key"]) == (
            s["dataset"], s["version"], s["licence"], s["cases"], s["citation_key"])
    assert rows["KiTS23"]["commercial_use"] == "no" and rows["KiTS23"]["terms_from"] == "registry"
    assert rows["MSD_Spleen"]["share_alike"] == "CC-BY-SA"
    assert rows["DemoTotalSeg"]["commercial_use"] == "yes" and rows["DemoTotalSeg"]["terms_from"] == "licence id"
    # every case has its source's row: the licence of a case is one join
    per = dict(rel.sql("select s.commercial_use, count(*) from cases c join sources s using (source) "
                       "group by 1").fetchall())
    assert sum(per.values()) == rel.table("cases").height and per["no"] == rows["KiTS23"]["cases"]
    summary = front["licence_summary"]
    assert summary["commercial_use"] == ("no" if "no" in per else "yes")


def test_a_dataset_ingested_under_two_aliases_counts_each_sources_own_cases(tmp_path: Path) -> None:
    """KiTS23 from two roots as `kitsA` (2 cases) and `kitsB` (1): the sources table and the card
    gave each source the dataset's 3 cases (counted per dataset), and the card check let it pass."""
    import numpy as np

    from curator.release.card_check import check_card_file, split_front_matter
    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render
    from curator.testing.pipelines import make_pipeline, run

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    for i, root in enumerate(("ka", "ka", "kb")):
        img, lab = render(Subject.random(i), g, "CT", seed=i)
        write_kits_case(tmp_path / root, f"case_0000{i}", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    off = {s: {"enabled": False} for s in ("dedup", "preprocess", "pseudolabel", "qc")}
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "ka"), "name": "kitsA"},
                                    {"dataset": "KiTS23", "root": str(tmp_path / "kb"), "name": "kitsB"}], stages=off)
    release = run(pipe, release=True).release
    assert release is not None
    rel = Release(release)
    actual = dict(rel.sql("select source, count(*) from cases group by 1").fetchall())
    assert actual == {"kitsA": 2, "kitsB": 1}
    assert dict(rel.sql("select source, cases from sources").fetchall()) == actual
    card = release / "DATASET_CARD.md"
    front = split_front_matter(card.read_text(encoding="utf-8"))[0]
    assert front is not None and {s["name"]: s["cases"] for s in front["sources"]} == actual
    assert check_card_file(card) == []
    # a card whose per-source count is not the release's is caught (the total still matches)
    card.write_text(card.read_text(encoding="utf-8").replace("cases: 1\n", "cases: 3\n", 1), encoding="utf-8")
    want = "source 'kitsB' has cases = 3 in the front matter but the release has 1 cases of it"
    assert check_card_file(card) == [want]
