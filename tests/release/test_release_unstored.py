"""A present label its store does not hold is excluded from the release's training view."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.qc.release import TRAINING_FILTER, UNSTORED_REASON
from curator.release.query import Release
from curator.workspace import write_parquet


def test_a_label_resampling_erased_is_excluded_with_its_reason(demo: Path, release_with: Callable[..., Path]) -> None:
    """A one-slice label under a coarser grid (preprocess's label_lost_in_resampling) kept
    present = true, its source volume and a null decision, so the manifest's training view
    counted a label that no store, loader or export holds."""
    path = demo / "workspace" / "tables" / "labels.parquet"
    labels = pq.read_table(path)
    rows = labels.to_pylist()
    base = next(r for r in rows if r["origin"] == "original" and r["present"] and r["term_id"] == "liver")
    assert not any(r["case_id"] == base["case_id"] and r["term_id"] == "gallbladder" for r in rows)
    lost = {**base, "term_id": "gallbladder", "term": "gallbladder", "voxels": 330, "volume_ml": 2.64}
    write_parquet(pa.Table.from_pylist([*rows, lost], schema=labels.schema), path)
    rel = Release(release_with(demo, "0.2.0"))
    got = rel.sql("select present, volume_ml, qc_decision, qc_reason from labels where case_id = "
                  f"'{base['case_id']}' and term_id = 'gallbladder'").fetchall()
    assert got == [(True, 2.64, "exclude", UNSTORED_REASON)]
    # nothing else the stores lack passes the training filter, and what they hold is untouched; a
    # derived term of pseudo or revised labels (a pseudo kidney of pseudo sides) has no plane of its
    # own: the stores hold its parts, below it in the hierarchy
    unions = ("l.derived and l.layer <> 'original'")
    assert not rel.sql("select * from labels l anti join store_terms s using (case_id, term_id, layer) "
                       f"where l.present and {TRAINING_FILTER} and not ({unions})").fetchall()
    union_rows = rel.sql(f"select case_id, term_id from labels l where l.present and {TRAINING_FILTER} and {unions}").fetchall()
    assert union_rows  # the demo's pseudo kidneys
    parts = rel.sql("select l.case_id, l.term_id, count(*) from labels l join terms t on t.term_id <> l.term_id "
                    "join store_terms s on s.case_id = l.case_id and s.term_id = t.term_id "
                    f"where l.present and {TRAINING_FILTER} and {unions} and list_contains(t.ancestors, l.term_id) "
                    "group by all").fetchall()
    assert {(c, t) for c, t, n in parts if n >= 2} == set(union_rows)
    before = Release(demo / "releases" / "demo" / "0.1.0")
    n_excl = rel.sql("select count(*) from labels where qc_decision = 'exclude'").fetchall()[0][0]
    assert n_excl == before.sql("select count(*) from labels where qc_decision = 'exclude'").fetchall()[0][0] + 1
    # the published counts agree with the training view: release.json and the report count the lost label
    # (they read only the qc table, which never saw it: "flagged labels (0)", kidney_cyst 0 exclude)
    qc = rel.info["qc"]
    assert qc["excluded_not_stored"] == 1 and qc["labels_excluded"] == n_excl
    assert qc["decisions"] == before.info["qc"]["decisions"]  # the qc table's own counts are unchanged
    page = (rel.path / "report.html").read_text()
    assert "excluded at release: not in the store (1)" in page
    listed = page[page.index('id="not-stored"'):]
    assert f"<td>{base['case_id']}</td>" in listed and "<td>gallbladder</td>" in listed
    assert "label_lost_in_resampling" in listed
    rows = table_rows(page, "decisions per term")
    head = rows[0]
    gall = dict(zip(head, next(r for r in rows if r[0] == "gallbladder"), strict=True))
    assert gall["not_stored"] == "1"
    qc_excl = sum(int(dict(zip(head, r, strict=True))["exclude"]) for r in rows[1:])
    assert f"{n_excl} label(s) excluded from training: {qc_excl} by the filter (<code>exclude</code>), 1 at release" in page


def table_rows(page: str, after: str) -> list[list[str]]:
    """The cells of the first table after the text ``after``."""
    i = page.index(after)
    body = page[i:page.index("</table>", i)]
    return [[html.unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_a_label_with_a_part_qc_excluded_is_excluded_as_the_loader_leaves_it_out(
        demo: Path, release_with: Callable[..., Path]) -> None:
    """A derived kidney whose left kidney a person excluded kept its own decision (include), so the
    SQL training view kept a kidney holding the excluded label while the loader left it out."""
    import yaml

    from curator.qc.release import PART_EXCLUDED
    from curator.testing.pipelines import run
    from curator.torch import CaseDataset

    case = "DemoTotalSeg__s0002"
    cfg = yaml.safe_load((demo / "pipeline.yaml").read_text())
    cfg["stages"]["qc"]["overrides"] = "overrides.yaml"
    (demo / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (demo / "overrides.yaml").write_text(f"- {{case_id: {case}, term: kidney_left, action: exclude, reason: leaks}}\n")
    run(demo / "pipeline.yaml", stages=["qc"])
    rel = Release(release_with(demo, "0.2.0"))
    rows = dict(rel.sql("select term_id, qc_decision || ' / ' || coalesce(qc_reason, '') from labels where case_id = "
                        f"'{case}' and term_id like 'kidney%' and origin = 'original'").fetchall())
    assert rows["kidney_left"].startswith("exclude / override exclude")
    assert rows["kidney_right"].startswith("include")  # the other part, and other cases, keep theirs
    assert rows["kidney"].startswith(f"exclude / {PART_EXCLUDED}") and "kidney_left (override exclude" in rows["kidney"]
    # the SQL training view and the loader use the same cases' kidneys
    in_sql = {c for (c,) in rel.sql("select case_id from labels where term_id = 'kidney' and layer in "
                                    f"('original', 'revised') and (present or annotated) and {TRAINING_FILTER}"
                                    ).fetchall()}
    loader = {c["case_id"] for c in CaseDataset(rel, terms=["kidney"], split=None, duplicates=True).cases}
    assert case not in in_sql and in_sql == loader
    qc = rel.info["qc"]
    n_excl = rel.sql("select count(*) from labels where qc_decision = 'exclude'").fetchall()[0][0]
    assert qc["excluded_with_part"] >= 1 and qc["labels_excluded"] == n_excl
    assert qc["labels_excluded"] == qc["decisions"]["exclude"] + qc["excluded_with_part"] + qc["excluded_not_stored"]
    page = (rel.path / "report.html").read_text()
    assert f"{n_excl} label(s) excluded from training" in page and 'id="not-stored"' not in page


def test_a_persons_include_of_a_label_with_an_excluded_part_is_overruled_and_said_everywhere(
        demo: Path, release_with: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    """DQ1 excluded a case's left kidney, RAD2 re-included its kidney (which holds the left kidney):
    the release dropped the kidney from training by the part rule with no warning, release.json
    counted an include, and the report said 're-included by a person'."""
    import yaml

    from curator.testing.pipelines import run
    from curator.torch import CaseDataset

    case = "DemoTotalSeg__s0002"
    cfg = yaml.safe_load((demo / "pipeline.yaml").read_text())
    cfg["stages"]["qc"]["overrides"] = "overrides.yaml"
    (demo / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (demo / "overrides.yaml").write_text(
        f"- {{case_id: {case}, term: kidney_left, action: exclude, reason: leaks, reviewer: DQ1}}\n"
        f"- {{case_id: {case}, term: kidney, action: include, reason: region verified, reviewer: RAD2}}\n")
    run(demo / "pipeline.yaml", stages=["qc"])
    with caplog.at_level(logging.WARNING, logger="curator"):
        rel = Release(release_with(demo, "0.2.0"))
    # the rule: the part's exclusion wins (the loader and the exports leave the kidney out) ...
    (decision, reason), = rel.sql(f"select qc_decision, qc_reason from labels where case_id = '{case}' and "
                                  "term_id = 'kidney' and origin = 'original'").fetchall()
    assert decision == "exclude" and reason.startswith("a part of it is excluded")
    assert "its own decision: override_include — a person's include, overruled by its excluded part" in reason
    assert case not in {c["case_id"] for c in CaseDataset(rel, terms=["kidney"], split=None, duplicates=True).cases}
    # ... and it is said: the qc stage's problem, the run log, release.json, the report
    (msg,), = rel.sql("select message from problems where kind = 'override_overruled'").fetchall()
    assert f"{case} / kidney (original) is overruled" in msg and "kidney_left (override exclude (DQ1)" in msg
    assert any("excluded from training all the same" in r.getMessage() and case in r.getMessage()
               for r in caplog.records)
    assert rel.info["qc"]["overrides"] == {"include": 1, "exclude": 1, "unmatched": 0, "include_overruled": 1}
    page = (rel.path / "report.html").read_text()
    mine = page[page.index('id="overrides"'):page.index('id="gallery"')]
    assert "re-included by a person" in mine and "but excluded from training: its part kidney_left is excluded" in mine
    listed = table_rows(page, 'id="with-part"')
    assert listed[0] == ["case_id", "dataset", "term_id", "origin", "own_decision", "excluded_part", "part_reason"]
    assert [case, "DemoTotalSeg", "kidney", "original", "override_include", "kidney_left"] in [r[:6] for r in listed]
