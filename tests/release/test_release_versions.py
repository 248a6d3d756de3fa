"""Versions end to end on the demo: a second release with an added dataset, immutability,
verify (with tampering), diff, lineage, and the leakage check with a planted duplicate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from curator.config import PipelineConfig
from curator.demo.extra import add_extra_dataset
from curator.errors import ReleaseError
from curator.pipeline import run_pipeline
from curator.release.diff import diff_releases
from curator.release.integrity import verify_release
from curator.release.query import Release
from curator.schema import to_arrow
from curator.workspace import Workspace

Build = Callable[..., Path]


def test_second_release_adds_exactly_the_new_dataset(demo: Path) -> None:
    v1 = demo / "releases" / "demo" / "0.1.0"
    add_extra_dataset(demo / "pipeline.yaml", demo / "raw", version="0.2.0")
    v2 = run_pipeline(PipelineConfig.load(demo / "pipeline.yaml")).release
    assert v2 is not None and v2.name == "0.2.0"

    new_cases = set(pl.read_parquet(v2 / "cases.parquet").filter(pl.col("dataset") == "DemoLiverMR")["case_id"])
    assert len(new_cases) == 7
    d = diff_releases(v1, v2)
    assert set(d.cases_added) == new_cases
    assert d.cases_removed == [] and d.tables["cases"].changed == []
    assert {k[0] for k in d.tables["raw_labels"].added} == new_cases
    assert d.tables["raw_labels"].removed == [] and d.tables["raw_labels"].changed == []
    # the only new problems: info rows for the new dataset's two visits of one patient, which look
    # alike but are two studies (dedup_other_study), never a row of a case the parent released
    added = d.tables["problems"].added
    assert d.tables["problems"].removed == [] and d.tables["problems"].changed == []
    assert {(k[0], k[1], k[4]) for k in added} <= {("dedup", "DemoLiverMR", "dedup_other_study")}
    assert {k[3] for k in added} <= new_cases
    assert {k[0] for k in d.tables["splits"].added} == new_cases
    assert d.split_changes == [] and d.tables["splits"].changed == []
    assert d.schema == {} and d.tables_added == [] and d.tables_removed == []

    # no existing case changed split; they are marked as inherited from the parent
    s1, s2 = pl.read_parquet(v1 / "splits.parquet"), pl.read_parquet(v2 / "splits.parquet")
    joined = s1.join(s2, on="case_id", suffix="_2")
    assert joined.height == s1.height
    assert (joined["split"] == joined["split_2"]).all()
    assert set(joined["reason_2"]) <= {"inherited", "official_test"}
    # patients with two visits are one unit
    mr = s2.filter(pl.col("dataset") == "DemoLiverMR")
    assert mr.group_by("group_key").agg(pl.col("split").n_unique())["split"].max() == 1
    assert sorted(mr["group_size"].to_list()) == [1, 1, 1, 2, 2, 2, 2]

    info = json.loads((v2 / "release.json").read_text())
    assert info["parent_version"] == "0.1.0"
    assert info["parent_release_json_sha256"] and "DemoLiverMR" in info["inputs"]
    for rel in (v1, v2):
        rep = verify_release(rel)
        assert rep.ok, rep.to_dict()


def test_existing_version_with_other_content_is_refused_and_left_intact(demo: Path, release_with: Build) -> None:
    v1 = demo / "releases" / "demo" / "0.1.0"
    def files() -> dict[str, bytes]:
        return {str(p.relative_to(v1)): p.read_bytes() for p in sorted(v1.rglob("*")) if p.is_file()}

    before = files()
    with pytest.raises(ReleaseError) as e:
        release_with(demo, "0.1.0", url="https://example.org/demo")  # the card and croissant.json change
    assert e.value.kind == "release_exists" and "content_sha256" in e.value.detail
    # a damaged copy of the version is built again after deleting its folder (tester 36 #9: verify and
    # query said to "build the release again", which this refusal then forbade without saying how)
    assert e.value.remedy and "delete its folder" in e.value.remedy and "--overwrite" in e.value.remedy
    assert files() == before
    assert not [p for p in v1.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_verify_reports_one_tampered_byte_in_a_store(demo: Path, release_with: Build) -> None:
    rel = release_with(demo, "0.1.1")
    info = json.loads((rel / "release.json").read_text())
    cases = sorted(info["stores"])
    assert cases == sorted(p.name.removesuffix(".zarr") for p in (rel / "stores").glob("*.zarr"))
    assert len(cases) >= 3
    assert verify_release(rel).ok
    # the release's stores are hard links to the workspace's: unlink before editing one in place
    chunk = min((rel / "stores" / f"{cases[1]}.zarr" / "image").rglob("c/*/*/*"))
    data = chunk.read_bytes()
    chunk.unlink()
    chunk.write_bytes(data)

    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    rep = verify_release(rel)
    assert not rep.ok
    assert rep.stores_modified == [cases[1]]
    assert rep.modified == [chunk.relative_to(rel).as_posix()]
    assert rep.added == [] and rep.removed == []


def test_verify_reports_added_removed_and_modified_files(demo: Path, release_with: Build) -> None:
    rel = release_with(demo, "0.1.1")
    store = rel / "stores" / "KiTS23__case_00000.zarr"
    (store / "image" / "zarr.json").unlink()
    (store / "stray.bin").write_bytes(b"x")
    (rel / "notes.txt").write_text("added later")
    with open(rel / "cases.parquet", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    rep = verify_release(rel)
    assert rep.removed == ["stores/KiTS23__case_00000.zarr/image/zarr.json"]
    assert rep.added == ["notes.txt", "stores/KiTS23__case_00000.zarr/stray.bin"]
    assert rep.modified == ["cases.parquet"]
    assert rep.stores_modified == ["KiTS23__case_00000"]


def test_verify_reports_damage_it_cannot_read_instead_of_crashing(demo: Path, release_with: Build) -> None:
    """A truncated table, a table replaced by a dangling link, a link inside a store: each is
    listed as changed; release.json that is no object is a clear release_corrupt error."""
    import os

    rel = release_with(demo, "0.1.1")
    data = (rel / "cases.parquet").read_bytes()
    (rel / "cases.parquet").write_bytes(data[: len(data) // 2])  # the card check reads this table
    (rel / "qc.parquet").unlink()
    os.symlink(rel / "nowhere.parquet", rel / "qc.parquet")
    store = rel / "stores" / "KiTS23__case_00000.zarr"
    os.symlink("/etc/hostname", store / "link.bin")
    rep = verify_release(rel)
    assert {"cases.parquet", "qc.parquet"} <= set(rep.modified)
    assert "KiTS23__case_00000" in rep.stores_modified and "stores/KiTS23__case_00000.zarr/link.bin" in rep.added
    assert rep.card_issues and "cannot be checked" in rep.card_issues[0]
    (rel / "release.json").write_text("[]")
    with pytest.raises(ReleaseError) as e:
        verify_release(rel)
    assert e.value.kind == "release_corrupt"
    with pytest.raises(ReleaseError) as e:
        _ = Release(rel).info
    assert e.value.kind == "release_corrupt"


def test_planted_cross_split_duplicate_fails_the_release(demo: Path, release_with: Build) -> None:
    v1 = demo / "releases" / "demo" / "0.1.0"
    s1 = pl.read_parquet(v1 / "splits.parquet")
    train = s1.filter((pl.col("split") == "train") & (pl.col("dataset") == "KiTS23"))["case_id"][0]
    test = s1.filter(pl.col("split") == "test")["case_id"][0]
    ws = Workspace(demo / "workspace")
    (ws.tables_dir / "duplicates.parquet").unlink()  # the demo's own groups: this test plants one
    # without the planted link the next release builds
    assert release_with(demo, "0.1.1").is_dir()
    cases = pl.read_parquet(v1 / "cases.parquet")
    ds = dict(cases.select("case_id", "dataset").iter_rows())
    rows = [{"group_id": "g_planted", "case_id": c, "dataset": ds[c], "kept": c == train, "kept_case_id": train,
             "group_size": 2, "reason": "planted for the test"} for c in (train, test)]
    ws.write_table("duplicates", to_arrow("duplicates", rows))
    with pytest.raises(ReleaseError) as e:
        release_with(demo, "0.1.2")
    assert e.value.kind == "split_leakage"
    assert "g_planted" in str(e.value) and train in str(e.value) and test in str(e.value)
    assert not (demo / "releases" / "demo" / "0.1.2").exists()

    # resolving by moving the unit to its most restrictive split
    (demo / "pipeline.yaml").write_text((demo / "pipeline.yaml").read_text().replace(
        "stages:\n", "stages:\n  splits: {on_conflict: move}\n"))
    rel = release_with(demo, "0.1.2")
    s = pl.read_parquet(rel / "splits.parquet").filter(pl.col("case_id").is_in([train, test]))
    assert s["split"].to_list() == ["test", "test"]
    assert dict(s.select("case_id", "reason").iter_rows())[train] == "moved"
    d = diff_releases(demo / "releases" / "demo" / "0.1.1", rel)
    assert d.split_changes == [(train, "train", "test")]
    assert d.newly_duplicate == [test]
    assert d.tables_added == ["duplicates"]


def test_a_disabled_stage_publishes_nothing_from_an_earlier_run(demo: Path, release_with) -> None:
    import yaml

    pipe = demo / "pipeline.yaml"
    cfg = yaml.safe_load(pipe.read_text())
    for stage in ("pseudolabel", "qc"):
        cfg.setdefault("stages", {}).setdefault(stage, {})["enabled"] = False
    pipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = Release(demo / "releases" / "demo" / "0.1.0")
    assert {"attention", "qc"} <= set(before.table_names())
    assert before.sql("select count(*) from labels where origin = 'pseudo'").fetchall()[0][0] > 0
    rel = Release(release_with(demo, "0.2.0"))
    assert not {"attention", "qc"} & set(rel.table_names())
    assert {"pseudolabel", "qc"} <= set(before.info["stages"]) and not {"pseudolabel", "qc"} & set(rel.info["stages"])
    assert rel.sql("select count(*) from labels where origin = 'pseudo'").fetchall()[0][0] == 0
    assert rel.sql("select count(*) from problems where stage in ('pseudolabel', 'qc')").fetchall()[0][0] == 0
    # nor do its stores: no pseudo layer to load, export or list in store_terms
    assert before.sql("select count(*) from store_terms where layer = 'pseudo'").fetchall()[0][0] > 0
    assert rel.sql("select count(*) from store_terms where layer = 'pseudo'").fetchall()[0][0] == 0
    assert not list((rel.path / "stores").glob("*.zarr/labels/pseudo"))
    assert list((demo / "workspace" / "stores").glob("*.zarr/labels/pseudo"))  # the workspace keeps them
    assert verify_release(rel.path).ok


def test_tables_out_of_step_with_cases_are_refused(demo: Path, release_with) -> None:
    """A case removed from its source and only ingest re-run: the later stages' rows (and its
    store) must not ship as if the case were still in the collection."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curator.workspace import write_parquet

    path = demo / "workspace" / "tables" / "cases.parquet"
    cases = pq.read_table(path)
    gone = "KiTS23__case_00001"
    write_parquet(cases.filter(pc.invert(pc.equal(cases["case_id"], gone))), path)
    with pytest.raises(ReleaseError, match="out of step") as e:
        release_with(demo, "0.2.0")
    assert gone in str(e.value) and "labels holds 1 case(s) not in cases" in str(e.value)
    assert not (demo / "releases" / "demo" / "0.2.0").exists()
