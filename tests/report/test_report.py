"""The QC report: content, self-containment, tolerance of missing tables, the CLI, a real browser."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from curator.config import PipelineConfig
from curator.qc.stage import QCStage
from curator.release.build import build_release
from curator.report import build_html, write_report
from curator.report.data import ReportData
from curator.report.plots import _plt, log_ticks, plain, x_ticks
from curator.runner.context import Context
from curator.runner.run import run_stage
from curator.schema import to_arrow
from curator.testing import browser
from curator.testing.stores import phantom_workspace, record_runs

STEPS = ["curator.qc.release:release_step", "curator.report.release:release_step"]
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def images(text: str) -> list[Image.Image]:
    out = []
    for b64 in IMG.findall(text):
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        im.load()
        out.append(im)
    return out


def test_release_carries_a_self_contained_report(release: Path) -> None:
    page = release / "report.html"
    text = page.read_text(encoding="utf-8")
    info = json.loads((release / "release.json").read_text())
    assert "report.html" in info["files"]
    for section in ("Counts", "Label quality control", "feature distributions before and after filtering",
                    "feature scatter plots", "flagged labels", "Duplicate groups", "Problems", "Review worklist"):
        assert section in text
    assert "<script" not in text and "http://" not in text and "https://" not in text
    pics = images(text)
    # long tail, distributions, scatter, and one gallery figure per excluded label
    assert len(pics) >= 5 and all(p.width > 50 and p.height > 50 for p in pics)
    assert "Phantom__c002" in text and "Phantom__c011" in text
    assert "same scan &lt;re-cropped&gt;" in text  # escaped, not markup
    dup = text[text.index('id="dedup"'):text.index('id="problems"')]
    assert "<th>reason</th>" in dup and "<th>evidence</th>" not in dup  # words, not the JSON
    assert "no attention table" in text
    assert "(ε = 2 %, 2 of 3 features outside; percentiles auto; cohorts of ≥ 10 labels; volume in ml (9 cohorts), per body volume (9 cohorts))" in text


def test_report_is_reproducible(release: Path) -> None:
    data = ReportData.from_release(release, (release.parents[2] / "ws" / "stores",))
    assert build_html(data, max_terms=1, max_gallery=1) == build_html(data, max_terms=1, max_gallery=1)


def test_missing_tables_are_tolerated() -> None:
    empty = build_html(ReportData.from_arrow({}, {"collection": "x", "version": "0.0.1"}))
    assert "no qc table" in empty and "no duplicates table" in empty and "no label table" in empty
    cases = to_arrow("cases", [{"case_id": "a__1", "dataset": "a", "source": "a", "source_case": "1",
                                "patient_id": "p", "modality": "MR", "has_image": True, "has_label": True,
                                "label_only": False, "label_status": "ok"}])
    raw = to_arrow("raw_labels", [{"case_id": "a__1", "label_key": "", "raw_value": 1, "voxels": 5,
                                   "volume_ml": 0.1}])
    page = build_html(ReportData.from_arrow({"cases": cases, "raw_labels": raw, "problems": to_arrow("problems", [])}))
    assert "MR" in page and len(images(page)) == 1  # the long tail from raw label values


def test_cli_writes_outside_the_release_only(release: Path, tmp_path: Path) -> None:
    from curator.cli import app

    out = tmp_path / "r.html"
    stores = release.parents[2] / "ws" / "stores"
    res = CliRunner().invoke(app, ["report", str(release), "--out", str(out), "--stores", str(stores),
                                   "--max-terms", "1", "--max-gallery", "1"])
    assert res.exit_code == 0, res.output
    assert len(images(out.read_text())) == 4  # long tail, distributions, scatter, one gallery figure
    res = CliRunner().invoke(app, ["report", str(release), "--out", str(release / "again.html")])
    assert res.exit_code == 2 and "immutable" in res.output
    with pytest.raises(Exception, match="immutable"):
        write_report(release, release / "x.html")


def test_an_out_that_cannot_be_a_file_is_a_clear_error(release: Path, tmp_path: Path) -> None:
    """-o FOLDER failed with IsADirectoryError (an internal error, exit 3) after drawing the report."""
    from curator.cli import app

    (tmp_path / "f.html").write_text("x")
    folder = f"this is a folder, but a file is to be written here. What to do: give a file path, e.g. {tmp_path}/report.html"
    for out, says in ((tmp_path, folder), (tmp_path / "f.html" / "r.html", "f.html is a file, not a folder")):
        res = CliRunner().invoke(app, ["report", str(release), "-o", str(out)])
        assert res.exit_code == 2 and says in " ".join(res.output.split()), res.output
    assert [p.name for p in tmp_path.iterdir()] == ["f.html"]


def test_the_report_is_not_written_into_another_release(release: Path, tmp_path: Path) -> None:
    import shutil

    from curator.errors import ReleaseError

    other = tmp_path / "0.2.0"
    other.mkdir()
    shutil.copy(release / "release.json", other / "release.json")
    with pytest.raises(ReleaseError, match="immutable") as e:
        write_report(release, other / "sub" / "r.html")
    assert str(other) in str(e.value) and not (other / "sub").exists()


needs_browser = pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))


@needs_browser
def test_cli_report_of_a_damaged_release_names_the_file(release: Path, tmp_path: Path) -> None:
    """A cut qc.parquet was an internal error (Polars' ComputeError); the report needs every table
    (a missing section would read as 'nothing to report'), so it stops and names the file."""
    import os
    import shutil

    from curator.cli import app

    copy = tmp_path / "copy"
    shutil.copytree(release, copy, symlinks=True)
    os.truncate(copy / "qc.parquet", 100)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(copy), "--out", str(out)])
    flat = "".join(res.output.split())  # rich wraps the message (and may fold the long path)
    assert res.exit_code == 2 and "[release_corrupt]" in flat and f"{copy / 'qc.parquet'}:" in flat, res.output
    assert "curatorverify" in flat and not out.exists()


def test_report_renders_in_headless_chromium(release: Path) -> None:
    page = browser.check_page(release / "report.html")
    assert page.title.startswith("QC report")
    assert page.errors == []
    assert len(page.images) >= 5 and page.broken_images == []


@needs_browser
def test_demo_release_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from curator.demo import run_demo

    demo = run_demo(tmp_path / "demo", workers=1, progress=False)
    rel = demo.result.release
    assert rel is not None and (rel / "report.html").exists()
    page = browser.check_page(rel / "report.html")
    assert page.errors == [] and page.broken_images == [] and len(page.images) >= 1
    # the qc stage degrades clearly when preprocess has not written stores
    import pyarrow.parquet as pq

    ws = demo.folder / "workspace"
    qc_problems: list[dict[str, Any]] = pq.read_table(ws / "tables" / "problems__qc.parquet").to_pylist()
    stores = list((ws / "stores").glob("*.zarr")) if (ws / "stores").is_dir() else []
    if not stores:
        assert [p["kind"] for p in qc_problems] == ["store_missing"]
    else:
        assert pq.read_table(ws / "tables" / "qc.parquet").num_rows > 0


def test_empty_qc_table_report() -> None:
    qc = to_arrow("qc", [])
    page = build_html(ReportData.from_arrow({"qc": qc}))
    assert "no qc table" in page
    assert isinstance(qc, pa.Table)


def test_worklist_section_lists_the_flagged_cases_by_rank() -> None:
    """Flagged (case, term) rows only, rank 1 first, whatever the attention table's row order and size."""
    import polars as pl

    from curator.report.html import section_worklist

    rows = [{"case_id": f"C{i:03d}", "dataset": "D", "term_id": "liver", "attention_size": float(i),
             "review_rank": 300 - i, "review": i >= 298} for i in range(300)]  # 300 rows, ranks reversed
    html_text = section_worklist(ReportData({"attention": pl.DataFrame(rows)}))
    assert "2 of 300 cases flagged" in html_text
    first, second = html_text.index("C299"), html_text.index("C298")
    assert first < second and "C297" not in html_text and "C000" not in html_text


def test_worklist_section_keeps_reviewed_cases_with_their_label_states() -> None:
    """The section left a reviewed case out (as review/worklist.csv did), so a coordinator of a
    later round saw neither it nor which of its labels were still pseudo. Every flagged case is
    listed with each term's label_state (the release's attention column; for a release made
    before it, revised or pseudo from labels.origin) and the note counts the reviewed ones."""
    import polars as pl

    from curator.report.html import section_worklist

    rows = [{"case_id": c, "dataset": "D", "term_id": t, "attention_size": 1.0, "review_rank": i + 1,
             "review": True} for i, c in enumerate(["C1", "C2"]) for t in ("liver", "spleen")]
    labels = pl.DataFrame([{"case_id": "C1", "term_id": "liver", "origin": "revised"},
                           {"case_id": "C1", "term_id": "spleen", "origin": "pseudo"},
                           {"case_id": "C2", "term_id": "liver", "origin": "pseudo"}])
    text = section_worklist(ReportData({"attention": pl.DataFrame(rows), "labels": labels}))  # an older release
    assert "2 of 2 cases flagged; 1 of them reviewed already (1 label(s) revised or accepted" in text
    assert "2 with labels still pseudo" in text
    assert "<td>C1</td><td>D</td><td>liver</td><td>revised</td>" in text
    assert "<td>C1</td><td>D</td><td>spleen</td><td>pseudo</td>" in text
    states = {("C1", "liver"): ("revised", 1), ("C1", "spleen"): ("accepted", 2)}
    att = pl.DataFrame([{**r, "label_state": states.get((r["case_id"], r["term_id"]), ("pseudo", None))[0],
                         "review_round": states.get((r["case_id"], r["term_id"]), ("pseudo", None))[1]}
                        for r in rows])
    text = section_worklist(ReportData({"attention": att, "labels": labels}))
    assert "<td>C1</td><td>D</td><td>spleen</td><td>accepted</td><td class=\"n\">2</td>" in text
    assert "1 with labels still pseudo" in text


@pytest.mark.parametrize(("values", "log"), [([0.0104, 0.0109, 0.0117, 0.0125], True), ([2e-5, 3e-5, 9e-5], True),
                                             ([1e-4, 3e-3, 0.2], True), ([0.9766, 0.98, 0.985, 0.9921], False),
                                             ([0.6912, 0.75, 0.801, 0.9043], False)])
def test_x_tick_labels_stand_apart(values: list[float], log: bool) -> None:
    """Narrow ranges once got their tick labels run together or printed over each other: every
    minor tick of a log volume axis under a decade (in scientific notation), nine 6-character
    labels on a kidney eccentricity histogram of 0.977-0.992. Labels must be a character apart."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.3))  # one row of the distributions figure
    fig.subplots_adjust(left=0.1, right=0.98, wspace=0.25)
    ax = axes[2]
    ax.scatter(values, np.linspace(0.5, 0.6, len(values)))
    x_ticks(ax, values, log=log)
    ax.tick_params(labelsize=7)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    labels = [(t.get_window_extent(), t.get_text()) for t in ax.xaxis.get_ticklabels(minor=False)
              + ax.xaxis.get_ticklabels(minor=True) if t.get_visible() and t.get_text() and lo <= t.get_position()[0] <= hi]
    plt.close(fig)
    assert len(labels) >= 2  # the axis is readable
    assert not [t for _, t in labels if "e" in t or "$" in t], labels  # plain decimals: not 6e-05, not 10^-4
    labels.sort(key=lambda b: b[0].x0)
    for (a, text), (b, _) in itertools.pairwise(labels):
        assert b.x0 - a.x1 >= a.width / len(text), (text, a.x1, b.x0)


@pytest.mark.parametrize("counts", [[22, 21, 15, 11, 6, 6], [5000, 800, 40, 3, 1], [3, 2, 1]])
def test_long_tail_counts_read_as_plain_numbers(counts: list[int]) -> None:
    """The labels-per-term axis (log) was labelled 6×10⁰, 10¹, 2×10¹ for the demo's 6-22 labels."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.5, 3.2))
    ax.bar(range(len(counts)), counts)
    log_ticks(ax, counts, "y")
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels(minor=False) + ax.yaxis.get_ticklabels(minor=True)
              if t.get_visible() and t.get_text() and lo <= t.get_position()[1] <= hi]
    plt.close(fig)
    assert len(labels) >= 2
    assert all(t.replace(",", "").replace(".", "").isdigit() for t in labels), labels


def test_plain_tick_values() -> None:
    assert [plain(x) for x in (6e-05, 0.00012, 0.5, 20.0, 1500.0, 2e6)] == [
        "0.00006", "0.00012", "0.5", "20", "1,500", "2,000,000"]


def test_problems_list_errors_then_warnings_then_notes() -> None:
    """The problems table listed rows by severity's spelling: error, info, warning — a harmonize
    note sat between the errors and the warnings that need action."""
    import polars as pl

    from curator.report.html import section_problems

    rows = [{"stage": s, "dataset": "D", "case_id": c, "kind": k, "severity": sev, "message": "m"}
            for s, c, k, sev in [("harmonize", "a", "label_rejected", "info"), ("ingest", "b", "shape_mismatch", "warning"),
                                 ("ingest", "c", "not_3d", "error"), ("qc", "d", "odd", "notice")]]
    page = section_problems(ReportData({"problems": pl.DataFrame(rows)}))
    detail = page[page.index("<table>", page.index("</table>")):]  # the second table: every row
    at = [detail.index(f"<td>{k}</td>") for k in ("not_3d", "shape_mismatch", "label_rejected", "odd")]
    assert at == sorted(at), at


def test_a_damaged_release_store_is_not_drawn_and_says_why(tmp_path: Path) -> None:
    """The gallery drew release stores unchecked: a damaged chunk decodes into other voxels."""
    import shutil

    from curator.report import write_report
    from curator.testing.releases import reseal

    phantom_workspace(tmp_path / "ws", n_cases=16, broken=(2,))
    cfg = PipelineConfig.from_dict({
        "workspace": str(tmp_path / "ws"), "stages": {"qc": {"min_cohort": 10}, "pseudolabel": {"enabled": False},
                                                       "dedup": {"enabled": False}},
        "executor": {"kind": "local", "workers": 1, "progress": False},
        "release": {"root": str(tmp_path / "releases"), "collection": "phantoms", "version": "1.0.0"}})
    ctx = Context(cfg)
    record_runs(ctx, "ingest", "harmonize", "preprocess")
    run_stage(ctx, QCStage)
    release = build_release(ctx, steps=STEPS)
    shutil.copytree(ctx.workspace.stores_dir, release / "stores")  # a release that carries its stores
    reseal(release)
    assert "not drawn" not in write_report(release, tmp_path / "ok.html").read_text(encoding="utf-8")
    chunk = max((p for p in (release / "stores" / "Phantom__c002.zarr").rglob("*") if p.is_file()
                 and p.name != "zarr.json"), key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    page = write_report(release, tmp_path / "r.html").read_text(encoding="utf-8")
    figure = page[page.index("<b>Phantom__c002</b>") - 400:page.index("<b>Phantom__c002</b>")]
    assert "not drawn: the store of case Phantom__c002" in figure and "curator verify" in figure
    assert "<img" not in figure.rsplit("<figure>", 1)[-1]


def test_truncated_labels_larger_than_their_cohort_are_listed_for_review() -> None:
    """A truncated label is kept and not judged, and the gallery draws only `exclude`: a pseudo
    liver leaking to the scan's edge at twice the cohort's size was in no section of the report."""
    import polars as pl

    from curator.qc.cohort import judge
    from curator.qc.config import QCConfig

    rng = np.random.default_rng(1)
    rows = [{"case_id": f"c{i:02d}", "dataset": "d", "term_id": "liver", "origin": "original", "modality": "CT",
             "voxels": 1000, "volume_ml": float(rng.normal(1500, 100)), "surface_mm2": 1.0,
             "sphericity": float(rng.normal(0.6, 0.02)), "eccentricity": float(rng.normal(0.6, 0.03)),
             "components": 1, "largest_component_fraction": 1.0, "truncated": False} for i in range(30)]
    rows += [{**rows[0], "case_id": "leak", "volume_ml": 4000.0, "truncated": True, "border_faces": ["k+"]},
             {**rows[0], "case_id": "cut", "volume_ml": 700.0, "truncated": True, "border_faces": ["k+"]}]
    qc = pl.from_arrow(to_arrow("qc", judge(rows, QCConfig())))
    page = build_html(ReportData({"qc": qc}))
    part = page[page.index('id="oversized"'):]
    assert "truncated but larger than the cohort (1)" in part
    part = part[:part.index("</table>")]
    assert "leak" in part and "larger than any cut explains" in part and "cut</td>" not in part


def test_the_qc_rule_is_the_one_the_release_ran() -> None:
    """The report's QC rule was rebuilt from the release's pipeline.yaml with this curator's
    defaults — for a release an older curator made under other defaults, a rule it never ran.
    release.json's ``stages.qc.config`` records the settings as run; a setting since removed is
    left out, one added since takes its default."""
    from curator.report.qc_sections import _qc_rule

    pipeline = {"stages": {"qc": {"min_cohort": 5}}}
    ran = {**QCStage.config_class().to_dict(), "min_cohort": 5, "epsilon": 3.0, "a_removed_setting": 1}
    ran.pop("volume_norm")
    assert "ε = 3 %" in _qc_rule({"pipeline_config": pipeline, "stages": {"qc": {"config": ran}}})
    assert "cohorts of ≥ 5 labels; volume body" in _qc_rule({"pipeline_config": pipeline,
                                                             "stages": {"qc": {"config": ran}}})
    assert "ε = 2 %" in _qc_rule({"pipeline_config": pipeline})  # no record of the run: the defaults
    assert _qc_rule({}) == ""


def test_the_report_lists_the_pairs_a_dedup_override_split() -> None:
    """A different override that kept apart a pair the hashes matched showed nowhere in the report."""
    rows = [{"row": 1, "action": "different", "case_id": "A__a1", "other_case_id": "B__b1", "reason": "two patients",
             "effect": "split", "tiers": ["exact"], "verified": True, "distance": 0.0, "note": "split: ..."},
            {"row": 2, "action": "keep", "case_id": "C__c1", "reason": "the original", "effect": "chose",
             "policy_kept_case_id": "B__b1", "note": "chose: ..."}]
    page = build_html(ReportData.from_arrow({"dedup_overrides": to_arrow("dedup_overrides", rows)}))
    part = page.split('id="dedup-overrides"')[1]
    assert "1 pair(s) split by an override" in part
    assert part.index("A__a1") < part.index("B__b1") < part.index("two patients") < part.index("C__c1")
    assert "chose" in part
    empty = build_html(ReportData.from_arrow({"dedup_overrides": to_arrow("dedup_overrides", [])}))
    assert 'id="dedup-overrides"' not in empty
