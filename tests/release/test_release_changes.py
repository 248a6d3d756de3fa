"""What changed, said with values: changed columns old → new, the sources' licences, QC rewordings
apart, a release without lineage said so, and ``changes.json`` + the card's "Changes since" section."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from curator.cli import app
from curator.release.build import RELEASE_STEPS, ReleaseBuilder, build_release
from curator.release.diff import diff_releases, diff_table
from curator.release.diff_sources import lineage_note, source_changes, source_lines
from curator.release.integrity import content_sha256, verify_release
from curator.runner.context import Context
from curator.testing.releases import reseal
from tests.release.helpers import set_version

Build = Callable[..., Path]


def test_changed_columns_are_said_with_both_values_a_few_rows_each() -> None:
    """`labels changed: case term origin: qc_decision` said a column changed, not from what to what."""
    a = pl.DataFrame({"k": [1, 2, 3, 4, 5], "decision": ["include"] * 5, "n": [1, 2, 3, 4, 5]})
    b = pl.DataFrame({"k": [1, 2, 3, 4, 5], "decision": ["include", "exclude", "exclude", "exclude", "exclude"],
                      "n": [1, 2, 3, 4, 50]})
    d = diff_table(a, b, ["k"], examples=2)
    assert d.changed_values == [("decision", 4, [((2,), "include", "exclude"), ((3,), "include", "exclude")]),
                                ("n", 1, [((5,), 5, 50)])]
    assert d.to_dict()["changed_values"][1] == {"column": "n", "rows": 1, "examples": [{"key": [5], "a": 5, "b": 50}]}


def test_a_qc_reason_reworded_alone_is_counted_apart_from_a_decision_changed() -> None:
    a = pl.DataFrame({"k": [1, 2, 3], "qc_decision": ["include"] * 3, "qc_reason": ["ok (n=5)"] * 3})
    b = pl.DataFrame({"k": [1, 2, 3], "qc_decision": ["include", "exclude", "include"],
                      "qc_reason": ["ok (n=14)", "too big", "ok (n=5)"]})
    d = diff_table(a, b, ["k"], wording={"qc_reason"})
    assert d.changed == [((2,), ["qc_decision", "qc_reason"])]
    assert d.wording_only == [((1,), ["qc_reason"])]
    assert d.wording_values == [("qc_reason", 1, [((1,), "ok (n=5)", "ok (n=14)")])]
    assert not d.empty and diff_table(a, a, ["k"], wording={"qc_reason"}).empty


def test_sources_whose_licence_or_citation_changed_are_listed_licences_first() -> None:
    row = {"source": "B", "licence": "CC-BY-4.0", "commercial_use": "yes", "derivatives": "yes",
           "redistribution": "yes", "citation": "@misc{b, title={B}}", "dataset_version": "1"}
    a = [row, {**row, "source": "A"}, {**row, "source": "Gone"}]
    b = [row | {"licence": "CC-BY-NC-4.0", "commercial_use": "no"}, {**row, "source": "A", "citation": "@misc{b2}"},
         {**row, "source": "New", "licence": "CC0-1.0"}]
    lines = source_lines(source_changes(a, b))
    assert lines[0] == "B: licence CC-BY-4.0 → CC-BY-NC-4.0; commercial_use yes → no"
    assert "A: citation @misc{b, title={B}} → @misc{b2}" in lines
    assert "New: added (CC0-1.0, commercial_use yes, derivatives yes, redistribution yes)" in lines
    assert any(x.startswith("Gone: removed") for x in lines)
    assert source_changes(a, a) == []


def test_lineage_note_names_a_release_not_derived_from_the_other() -> None:
    old = {"collection": "c", "version": "1.0.0"}
    assert lineage_note(old, {"collection": "c", "version": "1.1.0", "parent_version": "1.0.0"}) is None
    assert lineage_note(old, dict(old)) is None  # the same version built again: a reproduction check
    assert "built without a parent" in str(lineage_note(old, {"collection": "c", "version": "1.1.0"}))
    assert "built on c 0.9.0, not on c 1.0.0" in str(
        lineage_note(old, {"collection": "c", "version": "1.1.0", "parent_version": "0.9.0"}))


def test_the_diff_of_two_demo_releases_says_values_wording_and_sources(demo: Path) -> None:
    coll = demo / "releases" / "demo"
    shutil.copytree(coll / "0.1.0", coll / "0.1.1")
    labels = pl.read_parquet(coll / "0.1.1" / "labels.parquet")
    judged = labels.filter(pl.col("qc_decision") == "include").select("case_id", "term_id", "origin").head(2).rows()
    first, second = (pl.struct("case_id", "term_id", "origin") == pl.lit(
        {"case_id": c, "term_id": t, "origin": o}) for c, t, o in judged)
    labels = labels.with_columns(
        qc_decision=pl.when(first).then(pl.lit("exclude")).otherwise("qc_decision"),
        qc_reason=pl.when(first | second).then(pl.lit("reworded")).otherwise("qc_reason"))
    labels.write_parquet(coll / "0.1.1" / "labels.parquet")
    sources = pl.read_parquet(coll / "0.1.1" / "sources.parquet")
    src = sources["source"][0]
    was = sources["licence"][0]
    sources.with_columns(licence=pl.when(pl.col("source") == src).then(pl.lit("CC-BY-NC-4.0"))
                         .otherwise("licence")).write_parquet(coll / "0.1.1" / "sources.parquet")
    reseal(coll / "0.1.1")
    d = diff_releases(coll / "0.1.0", coll / "0.1.1")
    lt = d.tables["labels"]
    assert lt.changed == [(judged[0], ["qc_decision", "qc_reason"])] and lt.wording_only == [(judged[1], ["qc_reason"])]
    assert ("qc_decision", 1, [(judged[0], "include", "exclude")]) in lt.changed_values
    assert d.sources == [{"source": src, "change": "changed", "licence_changed": True,
                          "fields": {"licence": [was, "CC-BY-NC-4.0"]}}]
    assert d.summary["labels"] == {"added": 0, "removed": 0, "changed": 1, "wording_only": 1}
    assert d.lineage_note is None  # a copy of 0.1.0: the same version built again, not a release without lineage
    runner = CliRunner()
    text = " ".join(runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1")]).output.split())
    assert f"{src}: licence {was} → CC-BY-NC-4.0" in text, text
    assert f"qc_decision: 1 row {' '.join(judged[0])}: include → exclude" in text, text
    assert "wording only" in text and "the wording of their reason" in text, text
    js = runner.invoke(app, ["diff", str(coll / "0.1.0"), str(coll / "0.1.1"), "--json"])
    assert js.exit_code == 0 and json.loads(js.output)["tables"]["labels"]["wording_only"] == [
        {"key": list(judged[1]), "columns": ["qc_reason"]}]


def nc_licence(builder: ReleaseBuilder) -> None:
    """A release step: the demo's DemoTotalSeg source under a non-commercial licence (its YAML edited)."""
    name = next(n for n, s in builder.ctx.sources.items() if s.spec.name == "DemoTotalSeg")
    src = builder.ctx.sources[name]
    # the edited YAML beside the demo's (shared by other tests), so the release ships the file the spec came from
    edited = Path(tempfile.mkdtemp()) / Path(src.spec.path).name
    text = Path(src.spec.path).read_text(encoding="utf-8")
    assert "licence: CC-BY-4.0\n" in text
    edited.write_text(text.replace("licence: CC-BY-4.0\n", "licence: CC-BY-NC-4.0\n"), encoding="utf-8")
    spec = dataclasses.replace(src.spec, licence="CC-BY-NC-4.0", path=str(edited))
    builder.ctx.sources[name] = dataclasses.replace(src, spec=spec)


def test_a_release_built_on_a_parent_holds_its_changes_and_says_them_on_its_card(demo: Path) -> None:
    cfg = set_version(demo / "pipeline.yaml", "0.2.0")
    steps = list(RELEASE_STEPS)
    steps.insert(steps.index("curator.release.sources:release_step"), "tests.release.test_release_changes:nc_licence")
    rel = build_release(Context(cfg), steps=steps)
    parent = demo / "releases" / "demo" / "0.1.0"
    assert not (parent / "changes.json").exists() and "## Changes since" not in (parent / "DATASET_CARD.md").read_text()
    info = json.loads((rel / "release.json").read_text())
    assert "changes.json" in info["files"] and verify_release(rel).ok  # the card's structure checked too
    changes = json.loads((rel / "changes.json").read_text())
    assert changes["parent_version"] == "0.1.0" and changes["lineage_note"] is None
    line = "DemoTotalSeg: licence CC-BY-4.0 → CC-BY-NC-4.0; commercial_use yes → no"
    assert changes["summary"]["sources"] == [line]
    again = diff_releases(parent, rel)  # `curator diff` of the two: the same, and changes.json a file added
    assert again.summary == changes["summary"] and again.files_added == ["changes.json"]
    assert changes["files_added"] == [] and changes["tables"] == again.to_dict()["tables"]
    card = (rel / "DATASET_CARD.md").read_text()
    section = card.split("## Changes since 0.1.0\n", 1)[1].split("\n## ", 1)[0]
    n = changes["summary"]["cases"]
    assert f"| cases | {n['added']} | {n['removed']} | {n['changed']} |" in section
    assert line in section
    # derived from the content and the parent (its lineage part names the build's code): not content
    assert content_sha256({k: v for k, v in info["files"].items() if k != "changes.json"}) == info["content_sha256"]


def test_a_release_built_without_a_parent_is_said_so_in_the_diff(demo: Path, release_with: Build) -> None:
    lone = release_with(demo, "0.2.0", root=str(demo / "elsewhere"))
    assert not (lone / "changes.json").exists()
    parent = demo / "releases" / "demo" / "0.1.0"
    d = diff_releases(parent, lone)
    assert d.lineage_note is not None and "demo 0.2.0 was built without a parent release" in d.lineage_note
    out = " ".join(CliRunner().invoke(app, ["diff", str(parent), str(lone)]).output.split())
    assert "note demo 0.2.0 was built without a parent release" in out, out
