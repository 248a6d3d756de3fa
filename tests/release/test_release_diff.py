"""``diff``: labels newly excluded by QC, cases newly marked duplicate, schema and lineage changes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.errors import ReleaseError
from curator.release.diff import diff_releases, diff_table
from curator.schema import to_arrow
from curator.testing.releases import reseal
from curator.workspace import Workspace

Build = Callable[..., Path]


def _labels(case_ids: list[str], excluded: set[str], reasons: dict[str, str] | None = None) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for c in case_ids:
        rows.append({"case_id": c, "dataset": c.split("__")[0], "term_id": "liver", "term": "liver",
                     "origin": "original", "layer": "original", "derived": False, "annotated": True,
                     "present": True, "voxels": 10, "volume_ml": 1.0,
                     "qc_decision": "exclude" if c in excluded else "include",
                     "qc_reason": (reasons or {}).get(c) or (
                         "volume far outside the reference range" if c in excluded else None)})
    return to_arrow("labels", rows)


def test_diff_table_keys_and_changed_columns() -> None:
    a = pl.DataFrame({"k": [1, 2, 3], "x": ["a", "b", "c"], "y": [1.0, 2.0, None]})
    b = pl.DataFrame({"k": [2, 3, 4], "x": ["b", "C", "d"], "y": [2.0, 3.0, 4.0]})
    d = diff_table(a, b, ["k"])
    assert d.added == [(4,)] and d.removed == [(1,)]
    assert d.changed == [((3,), ["x", "y"])]
    assert diff_table(a, a, ["k"]).empty


def test_a_retyped_column_still_has_its_changed_values_named() -> None:
    """int32 -> int64 (or a list of ints -> of strings) used to drop the column from the value
    comparison: the schema change was listed, the rows it changed were not."""
    a = pl.DataFrame({"k": [1, 2, 3], "v": pl.Series([10, 20, 30], dtype=pl.Int32), "l": [[1], [2], [3]]})
    b = pl.DataFrame({"k": [1, 2, 3], "v": pl.Series([10, 25, 30], dtype=pl.Int64), "l": [["1"], ["2"], ["4"]]})
    assert diff_table(a, b, ["k"]).changed == [((2,), ["v"]), ((3,), ["l"])]


def test_diff_names_qc_exclusions_duplicates_and_label_changes(demo: Path, release_with: Build) -> None:
    ws = Workspace(demo / "workspace")
    (ws.tables_dir / "duplicates.parquet").unlink()  # the demo's own groups: this test plants one
    cases = pl.read_parquet(demo / "releases" / "demo" / "0.1.0" / "cases.parquet")["case_id"].to_list()
    ws.write_table("labels", _labels(cases[:4], excluded={cases[0]}))
    a = release_with(demo, "0.2.0")
    ws.write_table("labels", _labels(cases[:3], excluded={cases[0], cases[2]}, reasons={
        cases[2]: "override exclude (RAD1, 2024-06-01): leaks into the heart; filter said: include"}))
    dup = [{"group_id": "g1", "case_id": c, "dataset": c.split("__")[0], "kept": c == cases[5],
            "kept_case_id": cases[5], "group_size": 2, "reason": "same scan"} for c in (cases[5], cases[6])]
    ws.write_table("duplicates", to_arrow("duplicates", dup))
    (demo / "pipeline.yaml").write_text((demo / "pipeline.yaml").read_text().replace(
        "stages:\n", "stages:\n  splits: {on_conflict: move}\n"))
    b = release_with(demo, "0.3.0")
    d = diff_releases(a, b)
    assert d.qc_newly_excluded == [(cases[2], "liver", "original")]
    assert d.qc_newly_included == []
    # the person's decision, not only the label: who, when and why (what the filter said left out)
    assert d.qc_lines(d.qc_newly_excluded) == [
        f"{cases[2]} liver original — override exclude (RAD1, 2024-06-01): leaks into the heart"]
    assert [cases[2], "liver", "original", "override exclude (RAD1, 2024-06-01): leaks into the heart"] in \
        d.to_dict()["qc_reasons"]
    assert d.tables["labels"].removed == [(cases[3], "liver", "original")]
    assert d.tables["labels"].changed == [((cases[2], "liver", "original"), ["qc_decision", "qc_reason"])]
    assert d.newly_duplicate == [cases[6]]
    assert d.tables_added == ["duplicates"]
    assert d.cases_added == [] and d.tables["cases"].changed == []
    assert "pipeline_config" in d.lineage
    back = diff_releases(b, a)
    assert back.qc_newly_included == [(cases[2], "liver", "original")]
    assert back.qc_lines(back.qc_newly_included) == [f"{cases[2]} liver original"]  # the filter keeps it, silently
    assert back.no_longer_duplicate == [cases[6]] and back.tables_removed == ["duplicates"]


def test_a_group_renamed_by_a_member_joining_is_said_with_its_kept_case(demo: Path, release_with: Build) -> None:
    """tester 28: a copy joining a group (a dataset added) gives the group another id; the diff
    showed only duplicates rows added and removed. It names the group by its kept case, both ids
    and the member that joined; a group whose kept case changed is not one of these."""
    ws = Workspace(demo / "workspace")
    cases = pl.read_parquet(demo / "releases" / "demo" / "0.1.0" / "cases.parquet")["case_id"].to_list()

    def group(gid: str, kept: str, members: list[str]) -> list[dict[str, Any]]:
        return [{"group_id": gid, "case_id": c, "dataset": c.split("__")[0], "kept": c == kept, "kept_case_id": kept,
                 "group_size": len(members), "reason": "same scan"} for c in members]

    ws.write_table("duplicates", to_arrow("duplicates", group("dup-a", cases[5], cases[5:7])
                                          + group("dup-b", cases[1], cases[1:3])))
    (demo / "pipeline.yaml").write_text((demo / "pipeline.yaml").read_text().replace(
        "stages:\n", "stages:\n  splits: {on_conflict: move}\n"))
    a = release_with(demo, "0.2.0")
    ws.write_table("duplicates", to_arrow("duplicates", group("dup-c", cases[5], cases[5:8])
                                          + group("dup-d", cases[2], cases[1:3])))
    d = diff_releases(a, release_with(demo, "0.3.0"))
    assert d.groups_regrouped == [(cases[5], "dup-a", "dup-c", [cases[7]], [])]
    assert d.to_dict()["groups_regrouped"][0]["joined"] == [cases[7]]


def test_diff_reports_schema_changes(demo: Path) -> None:
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    p = coll / "0.1.1" / "cases.parquet"
    t = pq.read_table(p)
    t = t.append_column("scanner_site", pa.array(["x"] * t.num_rows)).drop_columns(["bmi"])
    t = t.set_column(t.schema.get_field_index("age_years"), "age_years", t.column("age_years").cast(pa.float32()))
    pq.write_table(t, p)
    reseal(coll / "0.1.1")  # as if built so: its checksum recorded
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.schema == {"cases": {"added": ["scanner_site"], "removed": ["bmi"],
                                  "retyped": [["age_years", "double", "float"]]}}
    assert d.tables["cases"].changed == []  # values of the common, same-typed columns are unchanged


def test_the_cli_names_the_terms_a_taxonomy_change_touched(demo: Path) -> None:
    """A lab's taxonomy edit (a synonym, a new term) showed as "terms changed 2" with nothing named."""
    import polars as pl

    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    p = coll / "0.1.1" / "terms.parquet"
    terms = pl.read_parquet(p)
    extra = terms.filter(pl.col("term_id") == "spleen").with_columns(term_id=pl.lit("lab_spleen_x"),
                                                                       name=pl.lit("lab spleen x"))
    terms = terms.with_columns(synonyms=pl.when(pl.col("term_id") == "liver").then(
        pl.col("synonyms").list.concat(pl.lit(["leber"]))).otherwise(pl.col("synonyms")))
    pl.concat([terms, extra]).write_parquet(p)
    reseal(coll / "0.1.1")
    text = " ".join(CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")]).output.split())
    assert "terms added (1) lab_spleen_x" in text and "terms changed (term: columns) (1) liver: synonyms" in text, text


def test_a_reviewed_label_is_one_origin_change_and_its_store_a_changed_store(demo: Path) -> None:
    """A review replaces (case, term, pseudo) with (case, term, revised): the diff used to show it
    only as a label removed and another added, and never said the case's store changed."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    labels = pl.read_parquet(coll / "0.1.1" / "labels.parquet")
    row = labels.filter(pl.col("origin") == "pseudo").row(0, named=True)
    case, term, voxels, ml = row["case_id"], row["term_id"], row["voxels"], row["volume_ml"]
    if labels.filter((pl.col("case_id") == case) & (pl.col("term_id") == term)).height != 1:
        pytest.fail("the demo's first pseudo-label should be its term's only label in the case")
    mine = (pl.col("case_id") == case) & (pl.col("term_id") == term)
    labels = labels.with_columns(origin=pl.when(mine).then(pl.lit("revised")).otherwise(pl.col("origin")),
                                 voxels=pl.when(mine).then(pl.col("voxels") + 5).otherwise(pl.col("voxels")),
                                 volume_ml=pl.when(mine).then(pl.col("volume_ml") + 0.5).otherwise(pl.col("volume_ml")))
    labels.write_parquet(coll / "0.1.1" / "labels.parquet")
    meta = coll / "0.1.1" / "stores" / f"{case}.zarr" / "zarr.json"
    m = json.loads(meta.read_text())
    m["attributes"]["curator"]["reviewed"] = True  # a store whose content changed (its metadata)
    meta.unlink()  # hard-linked to 0.1.0's file: write a new one
    meta.write_text(json.dumps(m, indent=2))
    reseal(coll / "0.1.1")
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.origin_changes == [(case, term, "pseudo", "revised", voxels, voxels + 5, ml, ml + 0.5)]
    assert d.stores_metadata_changed == [case] and not d.empty  # its metadata alone: the same voxels
    assert d.store_changes == {case: {"attributes": {"": ["curator.reviewed"]}}}
    assert diff_releases(coll / "0.1.1", coll / "0.1.0").origin_changes == [
        (case, term, "revised", "pseudo", voxels + 5, voxels, ml + 0.5, ml)]
    # said as volumes: an original label's voxels are on its source grid, a pseudo one's on the store's
    text = " ".join(CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")]).output.split())
    assert f"{case} {term}: pseudo → revised, {ml:.2f} → {ml + 0.5:.2f} ml" in text, text


def test_stores_differing_only_in_ome_attributes_are_listed_apart(demo: Path) -> None:
    """A release built before curator wrote OME-Zarr attributes, diffed against one after: every
    store's hash differs, and `curator diff` listed every case as a changed store."""
    from tests.store.test_ome import _strip_ome

    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.2")
    stores = sorted((coll / "0.1.2" / "stores").glob("*.zarr"))
    for s in stores:
        _strip_ome(s)
    nudged = json.loads((stores[0] / "zarr.json").read_text())
    nudged["attributes"]["curator"]["affine"][3] += 0.5  # one store also moved: a real change
    (stores[0] / "zarr.json").write_text(json.dumps(nudged, indent=2))
    reseal(coll / "0.1.2")
    d = diff_releases(coll / "0.1.0", coll / "0.1.2")
    with_ome = [s.stem for s in stores if "ome" in json.loads((coll / "0.1.0" / "stores" / s.name / "zarr.json")
                                                              .read_text())["attributes"]]
    assert len(with_ome) >= 10 and stores[0].stem in with_ome
    assert d.stores_changed == [stores[0].stem]
    assert d.stores_ome_changed == sorted(set(with_ome) - {stores[0].stem}) and not d.empty


def _rewrite(array: Path, chunks: tuple[int, ...], flip: bool = False) -> None:
    """Write ``array`` anew with other chunks (no shards, zarr's default codecs), one voxel flipped if asked."""
    import zarr

    values = zarr.open_array(str(array), mode="r")[...]
    shutil.rmtree(array)  # new files: the copied release's own
    if flip:
        values[(0,) * values.ndim] = 1 - values[(0,) * values.ndim]
    zarr.create_array(str(array), shape=values.shape, dtype=values.dtype, chunks=chunks)[...] = values


def test_a_changed_store_is_classified_by_what_differs(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade that added a checksum codec and model fingerprints to every store was listed as
    "cases whose store changed (17)" although no voxel had: the diff now says what differs."""
    from curator.release import store_diff

    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    stores = sorted((coll / "0.1.1" / "stores").glob("*.zarr"))
    s = [x.stem for x in stores]

    def edit(store: Path, node: str, change: Callable[[dict[str, Any]], None]) -> None:
        meta = store / node / "zarr.json"
        m = json.loads(meta.read_text())
        change(m["attributes"])
        meta.unlink()
        meta.write_text(json.dumps(m))

    _rewrite(stores[0] / "body", (32, 32, 32), flip=True)  # voxels (read first: the smaller array) ...
    _rewrite(stores[0] / "image", (32, 32, 32))  # ... so the image is not read at all
    _rewrite(stores[1] / "image", (16, 16, 16))  # encoding only
    edit(stores[2], "", lambda a: a["curator"].update(torch={"version": "2.13"}))  # attributes only
    edit(stores[3], "labels/original/0", lambda a: a["values"].update({"1": ["spleen"]}))  # what a value means
    edit(stores[4], "", lambda a: a["curator"]["affine"].__setitem__(3, a["curator"]["affine"][3] + 1))  # grid
    reseal(coll / "0.1.1")
    read: list[str] = []
    first = store_diff._first_difference
    monkeypatch.setattr(store_diff, "_first_difference", lambda a, b: read.append(f"{a.parent.name}/{a.name}")
                        or first(a, b))
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.stores_changed == sorted([s[0], s[3], s[4]]) and d.stores_metadata_changed == sorted([s[1], s[2]])
    assert d.stores_ome_changed == []
    ch = d.store_changes
    assert ch[s[0]]["voxels"] == {"body": ["values"]}
    assert f"{stores[0].name}/image" not in read and f"{stores[0].name}/body" in read  # stopped at the first
    assert list(ch[s[1]]) == ["encoding"] and list(ch[s[1]]["encoding"]) == ["image"]
    assert {x.split()[0] for x in ch[s[1]]["encoding"]["image"]} >= {"codecs", "chunks"}, ch[s[1]]
    assert ch[s[2]] == {"attributes": {"": ["curator.torch"]}}
    assert ch[s[3]] == {"terms": {"labels/original/0": ["values"]}}
    assert ch[s[4]] == {"grid": {"": ["affine"]}}
    out = CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")]).output
    text = " ".join(out.split())
    assert "cases whose store's voxels, terms or grid changed (3)" in text, text
    assert f"{s[0]}: voxels values (body)" in text and f"{s[2]}: attributes curator.torch (/)" in text, text
    assert "cases whose stores differ only in other attributes or encoding (same voxels, grid and terms) (2)" in text
    js = json.loads(CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "-f", "json"]).output)
    assert js["store_changes"][s[1]]["kind"] == "encoding" and js["stores_metadata_changed"] == sorted([s[1], s[2]])


def test_a_reworded_problem_is_a_changed_problem(demo: Path) -> None:
    """The problems table was keyed on its message too: a newer curator's rewording of the same
    problem showed as a problem removed and another added."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    p = coll / "0.1.1" / "problems.parquet"
    rows = pl.read_parquet(p).to_dicts()
    assert len(rows) >= 2, rows
    first = rows[0]
    twin = {**first, "message": "zz a second problem of this kind in this file"}  # one key, two rows
    pq.write_table(to_arrow("problems", [*rows, twin]), coll / "0.1.0" / "problems.parquet")
    reseal(coll / "0.1.0")
    reworded = [{**first, "message": "reworded: " + first["message"]}, rows[1] | {"message": "said otherwise"},
                *rows[2:], twin]
    p.unlink()
    pq.write_table(to_arrow("problems", reworded), p)
    reseal(coll / "0.1.1")
    t = diff_releases(coll / "0.1.0", coll / "0.1.1").tables["problems"]
    key = [first[k] for k in ("stage", "dataset", "path", "case_id", "kind")]
    assert t.added == [] and t.removed == [], t
    assert t.keys[-1] == "rank_in_key" and len(t.changed) == 2, t  # the twin, unchanged, pairs with itself
    assert ((*key, 1), ["message"]) in t.changed, t  # the unchanged twin took the first place of the key
    assert all(c == ["message"] for _, c in t.changed)


def test_problems_added_and_gone_are_listed_with_what_they_say(demo: Path) -> None:
    """`curator diff` said only "problems: 9 added" when a YAML typo (term_unknown) turned one
    dataset's labels into pseudo labels: the rows themselves, errors first, are what explain it."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    p = coll / "0.1.1" / "problems.parquet"
    rows = pl.read_parquet(p).to_dicts()
    gone, kept = rows[0], rows[1:]
    new = [{**gone, "stage": "harmonize", "case_id": None, "path": "Mine.yaml", "kind": "term_unknown",
            "severity": "error", "dataset": "Mine", "message": "Mine.yaml:labels.values.2: 'livr' is not a "
            "taxonomy term. What to do: fix the name"},
           {**gone, "stage": "ingest", "kind": "label_unmapped", "severity": "warning", "path": "x/y.nii.gz",
            "message": "value 7 maps to no term. What to do: map it"}]
    p.unlink()
    pq.write_table(to_arrow("problems", [*kept, *new]), p)
    reseal(coll / "0.1.1")
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert [(r["severity"], r["kind"]) for r in d.problems_added] == [("error", "term_unknown"),
                                                                     ("warning", "label_unmapped")]
    assert [r["kind"] for r in d.problems_removed] == [gone["kind"]]
    res = CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    said = " ".join(res.stdout.split())
    assert "problems added (severity kind case — message) (2) error term_unknown Mine (dataset) — " \
           "Mine.yaml:labels.values.2: 'livr' is not a taxonomy term" in said, said
    assert "What to do" not in said.split("problems added")[1].split("problems no longer")[0]
    assert f"problems no longer reported (1) {gone['severity']} {gone['kind']}" in said
    js = json.loads(CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "-f", "json"]).stdout)
    assert [r["kind"] for r in js["problems_added"]] == ["term_unknown", "label_unmapped"]


def test_lineage_changes_name_the_entry_that_changed() -> None:
    from curator.release.diff import ReleaseDiff

    d = ReleaseDiff("a", "b", lineage={
        "models": ({"m1": {"sha256": "a" * 64, "n": 1}}, {"m1": {"sha256": "b" * 64, "n": 1}, "m2": {}}),
        "code_version": ("0.1", "0.2")})
    assert d.lineage_changes == ["code_version: 0.1 → 0.2", f"models m1 sha256: {'a' * 12}… → {'b' * 12}…",
                                 "models m2: added"]


def test_lineage_names_the_stage_setting_and_an_extensions_version() -> None:
    """A qc setting changed was the whole settings block (`stages qc: {...} → {...}`), and a lab
    taxonomy's version its own part (`lab-1`, not `1.3+lab-1`) (tester 24)."""
    from curator.release.diff import ReleaseDiff, _taxonomy_version

    qc = {"min_cohort": 5, "volume_norm": "body", "iqr_k": 1.5}
    d = ReleaseDiff("a", "b", lineage={"pipeline_config": ({"stages": {"qc": qc}},
                                                           {"stages": {"qc": {**qc, "epsilon": 10}}})})
    assert d.lineage_changes == ["pipeline_config stages qc epsilon: unset → 10"]  # A's value not recorded
    d.settings_used = ({"qc": {**qc, "epsilon": 3}}, {"qc": {**qc, "epsilon": 10}})
    assert d.lineage_changes == ["pipeline_config stages qc epsilon: 3 (default) → 10"]
    lab = {"file": "lab.yaml", "sha256": "c" * 64, "version": "lab-1", "extends": {"version": "1.3"}}
    assert _taxonomy_version(lab)["version"] == "1.3+lab-1"
    assert _taxonomy_version({"version": "1.3"}) == {"version": "1.3"}


def test_lineage_names_the_sources_added_removed_and_changed() -> None:
    """The `sources` list was one JSON token cut at 60 characters: both sides read the same and
    the source added never appeared; a registry digest gave no hint of what it stands for."""
    from curator.release.diff import ReleaseDiff

    def src(dataset: str, name: str | None = None, pseudo: bool = False) -> dict[str, Any]:
        return {"dataset": dataset, "name": name, "pseudonymous_ids": pseudo}

    a = [src("MSD_Spleen"), src("KiTS23"), src("TS.yaml"), src("KiTS23", "kits_old")]
    b = [src("MSD_Spleen"), src("KiTS23", pseudo=True), src("TS.yaml"), src("PANC.yaml")]
    reg = ({"TS": {"spec_sha256": "a" * 64, "version": "1.0"}, "K": {"spec_sha256": "c" * 64, "version": "1"}},
           {"TS": {"spec_sha256": "b" * 64, "version": "1.0"}, "K": {"spec_sha256": "d" * 64, "version": "2"}})
    d = ReleaseDiff("a", "b", lineage={"pipeline_config": ({"sources": a}, {"sources": b}), "registry": reg})
    assert d.lineage_changes == [
        "pipeline_config sources KiTS23 pseudonymous_ids: false → true", "pipeline_config sources PANC.yaml: added",
        "pipeline_config sources kits_old: removed",
        f"registry K: its dataset YAML changed (version 1 → 2; spec_sha256 {'c' * 12}… → {'d' * 12}…)",
        f"registry TS: its dataset YAML changed (version 1.0 in both; spec_sha256 {'a' * 12}… → {'b' * 12}…)"]
    d = ReleaseDiff("a", "b", lineage={"pipeline_config": ({"sources": a}, {"sources": a[::-1]})})
    assert d.lineage_changes == ["pipeline_config sources: the same entries in another order"]
    d = ReleaseDiff("a", "b", lineage={"pipeline_config": ({"sources": []}, {"sources": a[:1]})})
    assert d.lineage_changes == ["pipeline_config sources MSD_Spleen: added"]


def test_diff_with_a_damaged_table_names_the_file(demo: Path) -> None:
    """A cut qc.parquet made `curator diff` an internal error (pyarrow's ArrowInvalid)."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    damaged = coll / "0.1.1" / "qc.parquet"
    os.truncate(damaged, 100)
    for a, b in ((coll / "0.1.0", coll / "0.1.1"), (coll / "0.1.1", coll / "0.1.0")):
        with pytest.raises(ReleaseError, match="table 'qc' cannot be read") as e:
            diff_releases(a, b)
        assert e.value.kind == "release_corrupt" and e.value.path == str(damaged)
        assert e.value.remedy and "curator verify" in e.value.remedy


def test_diff_names_a_settings_file_edited_in_place(demo: Path, release_with: Build) -> None:
    """QC overrides edited between two releases (same path in pipeline.yaml) changed labels'
    decisions, yet the diff's lineage named no change: release.json kept the file's path only."""
    import yaml

    from curator.testing.pipelines import run

    cfg = yaml.safe_load((demo / "pipeline.yaml").read_text())
    cfg["stages"]["qc"]["overrides"] = "overrides.yaml"
    (demo / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    releases = []
    for version, action in (("0.2.0", "include"), ("0.3.0", "exclude")):
        (demo / "overrides.yaml").write_text(
            f"- {{case_id: DemoTotalSeg__s0001, term: pancreas, action: {action}, reason: checked}}\n")
        run(demo / "pipeline.yaml", stages=["qc"])
        releases.append(release_with(demo, version))
    digests = [json.loads((r / "release.json").read_text())["stages"]["qc"].get("settings_files") for r in releases]
    assert all(digests) and digests[0] != digests[1]
    d = diff_releases(*releases)
    assert [x for x in d.lineage_changes if "settings_files" in x] == [
        f"stages qc settings_files: {digests[0]} → {digests[1]}"]
    assert not diff_releases(releases[0], releases[0]).lineage


def _as_older_curator(release: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite ``release``'s release.json as an older curator wrote it (``edit`` changes it in place)."""
    info = json.loads((release / "release.json").read_text())
    edit(info)
    (release / "release.json").write_text(json.dumps(info, indent=1))


def test_a_release_of_an_older_curator_is_diffed_by_stage_versions_and_changed_defaults(demo: Path) -> None:
    """Upgrading curator and releasing again under the same pipeline.yaml changed rows (attention
    values of a bumped pseudolabel) with no lineage line saying why; and the older release.json's
    ``sources`` entries (a folder name under ``root``, no ``pseudonymous_ids``) read as a change of
    the sources, which nobody made."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.2.0")
    old_keep = ["clean", "terms", "version", "case_id"]

    def older(info: dict[str, Any]) -> None:
        st = info["stages"]
        st["pseudolabel"]["stage_version"] = str(int(st["pseudolabel"]["stage_version"]) - 1)
        st["pseudolabel"]["config"]["device"] = "cpu"  # a nohash setting an older curator published
        st["dedup"]["config"].pop("global_neighbours")  # no such setting then
        st["dedup"]["config"]["keep"] = old_keep  # another default
        st["qc"]["config"]["min_cohort"] = 4  # given in pipeline.yaml: the pipeline_config line says it
        info["pipeline_config"]["stages"]["qc"]["min_cohort"] = 4
        for s in info["pipeline_config"]["sources"]:
            s.pop("pseudonymous_ids")
            s["root"] = "downloads"
        for s in st.values():
            s.pop("settings_files", None)  # not recorded then

    _as_older_curator(coll / "0.1.0", older)
    new = json.loads((coll / "0.2.0" / "release.json").read_text())["stages"]
    d = diff_releases(coll / "0.1.0", coll / "0.2.0")
    version = new["pseudolabel"]["stage_version"]
    assert d.lineage_changes == [
        "pipeline_config stages qc min_cohort: 4 → 5",
        f"stages dedup config global_neighbours: unset → {new['dedup']['config']['global_neighbours']}",
        f'stages dedup config keep: {json.dumps(old_keep)} → {json.dumps(new["dedup"]["config"]["keep"])}',
        f"stages pseudolabel stage_version: {int(version) - 1} → {version}"]
    assert d.to_dict()["lineage"]["stages pseudolabel stage_version"] == {"a": str(int(version) - 1),
                                                                          "b": version}

    # two releases of that older form: their source folders are compared, as they record them
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    _as_older_curator(coll / "0.1.1", lambda i: i["pipeline_config"]["sources"][0].update(root="elsewhere"))
    was, now = diff_releases(coll / "0.1.0", coll / "0.1.1").lineage["pipeline_config"]
    assert [s["root"] for s in was["sources"]][:2] == ["downloads", "downloads"]
    assert [s["root"] for s in now["sources"]][:2] == ["elsewhere", "downloads"]
    # a source that has pseudonymous ids now (an older release had none) is a change
    _as_older_curator(coll / "0.2.0", lambda i: i["pipeline_config"]["sources"][0].update(pseudonymous_ids=True))
    assert any(x.startswith("pipeline_config sources") for x in diff_releases(coll / "0.1.0", coll / "0.2.0")
               .lineage_changes)


def test_the_top_level_seed_of_an_older_release_is_no_lineage_change(demo: Path) -> None:
    """Older curators published pipeline.yaml's top-level `seed` (0 unless given), which set
    nothing; `curator diff` said `pipeline_config seed: 0 → 12345` with no table changed. It is
    not published any more, and an older release's is not compared."""
    coll = demo / "releases" / "demo"
    assert "seed" not in json.loads((coll / "0.1.0" / "release.json").read_text())["pipeline_config"]
    for version, seed in (("0.0.1", 0), ("0.0.2", 12345)):
        shutil.copytree(coll / "0.1.0", coll / version)
        _as_older_curator(coll / version, lambda i, s=seed: i["pipeline_config"].update(seed=s))  # type: ignore[misc]
    for a, b in (("0.0.1", "0.1.0"), ("0.0.1", "0.0.2")):
        assert diff_releases(coll / a, coll / b).lineage_changes == [], (a, b)
    res = CliRunner().invoke(app, ["diff", str(coll / "0.0.2"), str(coll / "0.1.0")])
    assert res.exit_code == 0 and "seed" not in res.output, res.output


def test_diff_names_the_code_revision_when_both_releases_record_one(demo: Path) -> None:
    """release.json records the git commit of the code (``code_version`` is the same for every
    commit between curator releases); a release before it, or from a wheel, has none: not a change."""
    from curator.envinfo import code_revision

    coll = demo / "releases" / "demo"
    info = json.loads((coll / "0.1.0" / "release.json").read_text())
    assert "code_revision" in info and info["code_revision"] == code_revision()
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    for rev in ("b" * 40, None):  # (a wheel records None for both, and nothing is named)
        (coll / "0.1.1" / "release.json").write_text(json.dumps({**info, "code_revision": rev}))
        d = diff_releases(coll / "0.1.0", coll / "0.1.1")
        named = [line for line in d.lineage_changes if line.startswith("code_revision:")]
        assert named == ([f"code_revision: {info['code_revision']} → {rev}"]
                         if rev and info["code_revision"] else []), rev


def test_diff_names_the_torch_threads_behind_the_pseudo_labels(demo: Path) -> None:
    """The attention table's floats move in the 7th digit with torch's CPU thread count: a rebuild
    that differs there says why (release.json["inference"]); a release before it names nothing."""
    coll = demo / "releases" / "demo"
    info = json.loads((coll / "0.1.0" / "release.json").read_text())
    (threads,) = [e["threads"] for e in info["inference"]]
    assert threads >= 1
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    for other in ([{**info["inference"][0], "threads": threads + 1}], None):
        (coll / "0.1.1" / "release.json").write_text(json.dumps({**info, "inference": other}))
        d = diff_releases(coll / "0.1.0", coll / "0.1.1")
        assert ("inference" in d.lineage) == (other is not None), other


def test_the_inference_line_names_the_field_that_changed(demo: Path) -> None:
    """`inference` (a list of records) was one JSON token cut at 57 characters, before `threads`:
    both sides printed the same text and the change was hidden (tester 30 F6)."""
    coll = demo / "releases" / "demo"
    info = json.loads((coll / "0.1.0" / "release.json").read_text())
    (entry,) = info["inference"]
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    _as_older_curator(coll / "0.1.1", lambda i: i.update(inference=[{**entry, "threads": entry["threads"] + 1}]))
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.lineage_changes == [f"inference threads: {entry['threads']} → {entry['threads'] + 1}"]
    res = CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")])
    assert res.exit_code == 0 and f"inference threads: {entry['threads']} → {entry['threads'] + 1}" in res.output


def test_a_long_value_is_shown_where_it_differs() -> None:
    """Two long values are never cut to texts that read the same: each shows its first difference."""
    from curator.release.diff import ReleaseDiff
    from curator.release.diff_lineage import pair

    a, b = ["x" * 40, "y" * 40, "a"], ["x" * 40, "y" * 40, "b"]
    sa, sb = pair(a, b)
    assert sa != sb and sa.endswith('"a"]') and sb.endswith('"b"]') and len(sa) <= 60
    lines = ReleaseDiff("a", "b", lineage={"models": ({"m": {"terms": a}}, {"m": {"terms": b}})}).lineage_changes
    assert lines == [f"models m terms: {sa} → {sb}"]
    (only,) = ReleaseDiff("a", "b", lineage={"x": (a, b)}).lineage_changes
    was, now = only.removeprefix("x: ").split(" → ")
    assert was != now


def test_a_setting_given_explicitly_is_named_with_both_values(demo: Path) -> None:
    """A setting going from its default to a value in pipeline.yaml read `stages splits: added`
    (`stages dedup: added`), with no setting or value (tester 30 F8, tester 28 #8)."""
    coll = demo / "releases" / "demo"
    info = json.loads((coll / "0.1.0" / "release.json").read_text())
    seed, keep = info["splits"]["config"]["seed"], info["stages"]["dedup"]["config"]["keep"]
    assert "splits" not in info["pipeline_config"]["stages"] and "dedup" not in info["pipeline_config"]["stages"]
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")

    def given(i: dict[str, Any]) -> None:
        i["pipeline_config"]["stages"].update(splits={"seed": seed + 7}, dedup={"keep": keep[::-1]})
        i["splits"]["config"]["seed"] = seed + 7
        i["stages"]["dedup"]["config"]["keep"] = keep[::-1]
        i["pipeline_config"]["release"]["url"] = "https://example.org/demo"

    _as_older_curator(coll / "0.1.1", given)
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.lineage_changes == [
        "pipeline_config release url: unset → https://example.org/demo",
        f"pipeline_config stages dedup keep: {json.dumps(keep)} (default) → {json.dumps(keep[::-1])}",
        f"pipeline_config stages splits seed: {seed} (default) → {seed + 7}"]
    back = diff_releases(coll / "0.1.1", coll / "0.1.0")  # and back to the default
    assert f"pipeline_config stages splits seed: {seed + 7} → {seed} (default)" in back.lineage_changes


def test_diff_compares_every_lineage_record_release_json_holds(demo: Path) -> None:
    """The lineage was a fixed list of keys: a record a newer curator adds (library versions, a
    stage's code revision, a key's fingerprint) would have gone unnamed. Every key but the release's
    identity, dates and content is compared; one a release does not record is no change."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    shutil.copytree(coll / "0.1.0", coll / "0.1.2")
    for version, numpy, rev in (("0.1.0", "1.26.4", "a" * 40), ("0.1.1", "2.0.1", "b" * 40)):
        def record(i: dict[str, Any], numpy: str = numpy, rev: str = rev) -> None:
            i.update(environment={"numpy": numpy, "python": "3.12.1"}, pseudonym_key_sha256=rev[:16],
                     created=f"2030-01-0{len(numpy)}")
            i["stages"]["preprocess"].update(code_revision=rev, run_id=rev, finished=rev)
        _as_older_curator(coll / version, record)

    def recorded_none(i: dict[str, Any]) -> None:  # a release made before these records existed
        for k in ("environment", "environments", "pseudonym_key_fingerprint"):
            i.pop(k, None)
        for stage in i["stages"].values():
            for k in ("code_revision", "run_environment", "case_environments"):
                stage.pop(k, None)

    _as_older_curator(coll / "0.1.2", recorded_none)
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.lineage_changes == [
        "environment numpy: 1.26.4 → 2.0.1", f"pseudonym_key_sha256: {'a' * 16} → {'b' * 16}",
        f"stages preprocess code_revision: {'a' * 40} → {'b' * 40}"]
    assert not d.content_differs
    assert diff_releases(coll / "0.1.0", coll / "0.1.2").lineage_changes == []  # 0.1.2 records none of them


def test_diff_exit_code_and_changed_files(demo: Path) -> None:
    """`curator diff` exited 0 whatever differed, and a file other than a table (the card,
    croissant.json, report.html) that differed gave `no differences in the tables` (tester 30 F8)."""
    from curator.io.fsutil import sha256_file

    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    runner = CliRunner()
    same = runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "--exit-code"])
    assert same.exit_code == 0 and "the same content" in same.output, same.output
    croissant = coll / "0.1.1" / "croissant.json"
    croissant.write_text(croissant.read_text().replace('"datePublished": "', '"datePublished": "x'))
    _as_older_curator(coll / "0.1.1", lambda i: i["files"].update({"croissant.json": sha256_file(croissant)}))
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    # croissant.json alone (a rebuild on another day: its datePublished) is listed, not content, as
    # content_sha256 leaves it out (review 30: --exit-code called every rebuild different)
    assert d.empty and d.files_changed == ["croissant.json"] and not d.content_differs
    res = runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "--exit-code"])
    assert res.exit_code == 0 and "datePublished is the build" in " ".join(res.output.split()), res.output
    card = coll / "0.1.1" / "DATASET_CARD.md"
    card.write_text(card.read_text() + "\nedited\n")
    _as_older_curator(coll / "0.1.1", lambda i: i["files"].update({"DATASET_CARD.md": sha256_file(card)}))
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    assert d.empty and d.files_changed == ["DATASET_CARD.md", "croissant.json"] and d.content_differs
    res = runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "--exit-code"])
    assert res.exit_code == 1 and "DATASET_CARD.md" in res.output and "the same content" not in res.output
    assert runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")]).exit_code == 0
    js = runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "--exit-code", "-f", "json"])
    assert js.exit_code == 1 and json.loads(js.output)["files_changed"] == ["DATASET_CARD.md", "croissant.json"]
    missing = runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "9.9.9"), "--exit-code"])
    assert missing.exit_code == 2


def test_a_term_whose_only_change_is_its_defining_file_is_counted_apart(demo: Path) -> None:
    """A byte-identical copy of the bundled taxonomy passed by path changed every term's
    `defined_in` (curator → taxonomy.yaml): 516 `terms changed` lines hid the one term whose
    synonyms changed (tester 30 F7)."""
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    terms = pl.read_parquet(coll / "0.1.1" / "terms.parquet")
    assert set(terms["defined_in"]) == {"curator"}
    edited = terms.with_columns(defined_in=pl.lit("taxonomy.yaml"), synonyms=pl.when(
        pl.col("term_id") == "liver").then(pl.col("synonyms").list.concat(pl.lit(["hepar"]))).otherwise("synonyms"))
    pq.write_table(to_arrow("terms", edited.to_dicts()), coll / "0.1.1" / "terms.parquet")
    reseal(coll / "0.1.1")
    tt = diff_releases(coll / "0.1.0", coll / "0.1.1").tables["terms"]
    assert tt.changed == [(("liver",), ["synonyms", "defined_in"])]
    assert len(tt.provenance_only) == terms.height - 1
    assert tt.provenance_values == [("defined_in", "curator", "taxonomy.yaml", terms.height - 1)]
    res = CliRunner().invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "--exit-code"])
    assert res.exit_code == 1
    assert "liver: synonyms, defined_in" in res.output
    assert f"defined_in: curator → taxonomy.yaml ({terms.height - 1} rows)" in res.output
    assert "abdominal_tissue" not in res.output
