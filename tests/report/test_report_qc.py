"""The report's QC section as a reviewer reads it: a person's decisions apart from the filter's,
pictures that go through the label, volume axes with their basis, histograms that show every
label kept."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from curator.qc.cohort import Override, judge
from curator.qc.config import QCConfig
from curator.report import build_html
from curator.report.data import ReportData
from curator.report.plots import COLOURS, _plt, distributions_figure, scatter_figure
from curator.schema import to_arrow

OVERRIDES = [Override("odd", "liver", None, "include", "lobulated but real, checked by AB"),
             Override("c05", "liver", None, "exclude", "leaks into the heart")]


def cohort(term: str, n: int, *, body: bool = True, seed: int = 1, **extra: Any) -> list[dict[str, Any]]:
    """``n`` plausible labels of ``term``; ``body``: with a body volume (else judged in ml)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ml = float(rng.normal(1500, 100))
        rows.append({"case_id": f"c{i:02d}", "dataset": "d", "term_id": term, "origin": "original", "modality": "CT",
                     "voxels": 1000, "volume_ml": ml, "body_ml": 30000.0 if body else None,
                     "norm_volume": ml / 30000.0 if body else None, "surface_mm2": 1.0,
                     "sphericity": float(rng.normal(0.6, 0.02)), "eccentricity": float(rng.normal(0.6, 0.03)),
                     "components": 1, "largest_component_fraction": 1.0, "truncated": False, **extra})
    return rows


def odd(case_id: str, **extra: Any) -> dict[str, Any]:
    return {**cohort("liver", 1)[0], "case_id": case_id, "sphericity": 0.3, "eccentricity": 0.95, **extra}


def qc_table(rows: list[dict[str, Any]], overrides: list[Override] = OVERRIDES) -> pl.DataFrame:
    return pl.from_arrow(to_arrow("qc", judge(rows, QCConfig(), overrides)))  # type: ignore[return-value]


def part(page: str, start: str, end: str = "<h3") -> str:
    i = page.index(start)
    return page[i:page.index(end, i + len(start))]


def cells(section: str, first: str) -> list[str]:
    """The cells of the table row starting with ``first``."""
    row = re.search(rf"<tr><td>{first}</td>(.*?)</tr>", section)
    assert row, first
    return re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))


def test_a_persons_decisions_have_their_own_section() -> None:
    """A re-included label vanished from the report (a count in `override_include` only), and a
    person's exclude was listed under "flagged labels" and counted in `exclude`, as the filter's."""
    qc = qc_table([*cohort("liver", 30), odd("odd"), odd("odd2", components=3, largest_component_fraction=0.8)])
    page = build_html(ReportData({"qc": qc}))
    mine = part(page, 'id="overrides"', 'id="gallery"')
    assert "labels decided by a person (2)" in mine
    assert cells(mine, "odd")[:4] == ["d", "liver", "original", "include"]
    assert "<td>lobulated but real, checked by AB</td><td>True</td><td>exclude</td>" in mine  # the filter's verdict
    assert "<td>leaks into the heart</td><td>False</td><td>include</td>" in mine
    assert "re-included by a person</b>: lobulated but real" in mine and "excluded by a person</b>" in mine
    flagged = part(page, 'id="gallery"')
    assert "flagged labels: excluded by the filter (1)" in flagged and "odd2" in flagged
    assert "<td>c05</td>" not in flagged and "<td>odd</td>" not in flagged
    assert "<b>3 separate pieces</b> (the largest 80% of the voxels)" in flagged  # the caption says so
    head = re.search(r"<thead><tr>(.*?)</tr></thead>", part(page, 'id="qc"', "<h3")).group(1)  # type: ignore[union-attr]
    assert re.findall(r"<th>(\w+)</th>", head) == ["term_id", "labels", "include", "exclude", "truncated", "unchecked",
                                                   "override_include", "override_exclude"]
    assert cells(part(page, 'id="qc"', "<h3"), "liver") == ["32", "29", "1", "0", "0", "1", "1"]
    assert "2 by the filter" not in page and "1 by the filter (<code>exclude</code>), 1 by a person" in page


def test_who_decided_and_when_is_shown_from_the_qc_table() -> None:
    """qc v5 keeps an override's reviewer, date and own words; its reason then reads 'override
    include (AB, 2024-06-01): …', which the section took whole as the person's words."""
    ab = [Override("odd", "liver", None, "include", "lobulated but real", reviewer="AB", date=dt.date(2024, 6, 1))]
    qc = qc_table([*cohort("liver", 30), odd("odd")], ab)
    mine = part(build_html(ReportData({"qc": qc})), 'id="overrides"', 'id="gallery"')
    assert "<th>override_reviewer</th>" in mine and "re-included by a person</b> (AB · 2024-06-01)" in mine
    assert "<td>lobulated but real</td><td>True</td><td>exclude</td>" in mine  # the words, then the filter's verdict
    old = qc.drop("override_reason", "override_reviewer", "override_date")  # a release before qc v5
    assert "<td>lobulated but real</td><td>True</td><td>exclude</td>" in part(
        build_html(ReportData({"qc": old})), 'id="overrides"', 'id="gallery"')
    assert "labels decided by a person (0)" in build_html(ReportData({"qc": qc_table(cohort("liver", 30), [])}))


def test_a_reincluded_label_is_drawn(release: Path) -> None:
    """The gallery drew only excluded labels: a label a person re-included had no picture."""
    data = ReportData.from_release(release, (release.parents[2] / "ws" / "stores",))
    flagged = data.get("qc").filter(pl.col("decision") == "exclude")["case_id"].to_list()
    ov = [Override(flagged[0], "liver", None, "include", "checked")]
    data.tables["qc"] = pl.from_arrow(to_arrow("qc", judge(data.get("qc").to_dicts(), QCConfig(min_cohort=10), ov)))  # type: ignore[assignment]
    mine = part(build_html(data), 'id="overrides"', 'id="gallery"')
    assert "labels decided by a person (1)" in mine and len(re.findall(r'<img src="data:image/png', mine)) == 1


def panels(uri: str) -> list[np.ndarray]:
    im = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")).astype(int)
    w = im.shape[1] // 3
    return [im[:, i * w:(i + 1) * w] for i in range(3)]


def red(a: np.ndarray) -> int:
    return int(((a[..., 0] > a[..., 1] + 60) & (a[..., 0] > a[..., 2] + 60)).sum())


def grey(a: np.ndarray) -> int:
    return int(((a.max(-1) - a.min(-1) < 8) & (a[..., 0] > 60) & (a[..., 0] < 200)).sum())


@pytest.mark.parametrize("with_image", [True, False])
def test_every_view_goes_through_a_label_in_pieces(tmp_path: Path, with_image: bool) -> None:
    """Slices went through the label's centroid: between a bilateral tumour's two halves the
    sagittal panel was empty. Without an image the label was red on plain black; the case's
    other labels are now the grey background."""
    from curator.report.gallery import label_figure
    from curator.store import CaseStore
    from curator.testing.phantoms import grid

    g = grid((40, 30, 20), spacing=(4.0, 4.0, 5.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[5:15, 8:22, 5:15] = lab[25:35, 8:22, 5:15] = 1  # two kidneys
    lab[6:12, 12:18, 8:12] = lab[28:33, 10:14, 6:10] = 2  # a tumour in each: the centroid lies between them
    image = np.where(lab > 0, 40, -100).astype(np.int16) if with_image else None
    CaseStore.create(tmp_path / "c.zarr", geometry=g, attrs={"case_id": "c", "modality": "CT"}, image=image,
                     body=None if image is None else image > -500, labels=[(lab, {1: ["kidney"], 2: ["kidney_tumor"]})])
    uri = label_figure(tmp_path / "c.zarr", "kidney_tumor", "original", "c · kidney_tumor")
    assert uri is not None
    views = panels(uri)
    assert all(red(v) > 20 for v in views), [red(v) for v in views]
    if not with_image:
        assert all(grey(v) > 20 for v in views), [grey(v) for v in views]


def test_volume_axes_say_their_basis_per_cohort() -> None:
    """Every plot called the feature 'volume': a share of the body volume for most cohorts, ml for
    cases without an image."""
    from curator.report.qc_sections import _qc_rule

    qc = qc_table([*cohort("liver", 30), *cohort("kidney_tumor", 30, body=False, seed=2)], [])
    fig = distributions_figure(qc, ["liver", "kidney_tumor"])
    assert [fig.axes[i].get_xlabel() for i in (0, 3)] == ["volume / body volume (log10)",
                                                                "store-grid volume (ml, log10)"]
    fig = scatter_figure(qc, ["liver", "kidney_tumor"])
    assert [fig.axes[i].get_xlabel() for i in (1, 3)] == ["volume / body volume (log scale)",
                                                                "store-grid volume (ml, log scale)"]
    _plt().close("all")
    rule = _qc_rule({"pipeline_config": {"stages": {"qc": {}}}}, qc)
    assert rule.endswith("; volume in ml (1 cohort), per body volume (1 cohort))"), rule
    page = build_html(ReportData({"qc": qc_table([*cohort("liver", 30), odd("odd")], [])}))
    assert "<code>f_volume</code>: the volume the filter judged" in part(page, 'id="gallery"')


def test_histograms_show_labels_kept_without_judgement() -> None:
    """Truncated labels stay in training but were not drawn: a cohort of them read as 'all removed'."""
    rows = [*cohort("liver", 30), *[{**r, "case_id": f"t{i}", "truncated": True, "border_faces": ["k+"]}
                                    for i, r in enumerate(cohort("liver", 4, seed=3))]]
    fig = distributions_figure(qc_table(rows, []), ["liver"])
    amber = to_rgb(COLOURS["unchecked"])
    heights = [p.get_height() for p in fig.axes[0].patches if to_rgb(p.get_facecolor()[:3]) == amber]
    _plt().close("all")
    assert sum(heights) == 4


def test_cohorts_without_bounds_are_summarised_not_plotted() -> None:
    """A cohort too small for bounds, with only a side check's or a person's exclusion, got a row of
    histograms of one grey bar, its eccentricity axis running to 1.5."""
    from curator.report.qc_sections import _qc_terms

    few = [*cohort("spleen", 3), {**cohort("spleen", 1, seed=4)[0], "case_id": "cut", "truncated": True,
                                   "border_faces": ["k+"]}]
    qc = qc_table([*cohort("liver", 30), *few], [Override("c01", "spleen", None, "exclude", "cut in two")])
    terms, unbounded = _qc_terms(qc, 12)
    assert terms == ["liver"] and unbounded["cohort"].to_list() == ["spleen/CT/body"]
    page = build_html(ReportData({"qc": qc}))
    assert "not plotted: 1 cohort(s) without bounds" in page and "spleen/CT/body (1 of 1 judged label excluded; 4 in the cohort)" in page


def test_sphericity_and_eccentricity_axes_stay_within_0_and_1() -> None:
    rows = [{**r, "sphericity": 0.02, "eccentricity": 0.99} for r in cohort("liver", 30)]
    qc = qc_table(rows, [])
    for fig, axes in ((distributions_figure(qc, ["liver"]), ((1, "x"), (2, "x"))),
                      (scatter_figure(qc, ["liver"]), ((0, "x"), (0, "y"), (1, "y")))):
        for i, which in axes:
            lo, hi = fig.axes[i].get_xlim() if which == "x" else fig.axes[i].get_ylim()
            assert 0 <= lo < hi <= 1, (i, which, lo, hi)
    _plt().close("all")


def test_override_rows_that_matched_nothing_are_said_in_the_persons_section() -> None:
    """A release whose override file mostly matched nothing showed no sign of it beside the
    decisions; the rows were only in the problems table."""
    qc = qc_table([*cohort("liver", 30), odd("odd")])
    problems = pl.DataFrame({"stage": ["qc"] * 2, "kind": ["override_unmatched", "label_empty"], "case_id": ["x", "y"],
                             "dataset": ["d", "d"], "severity": ["warning"] * 2, "message": ["m", "m"], "path": ["", ""]})
    mine = part(build_html(ReportData({"qc": qc, "problems": problems})), 'id="overrides"', 'id="gallery"')
    assert "1 row(s) of the override file matched no label" in mine
    assert "matched no label" not in part(build_html(ReportData({"qc": qc})), 'id="overrides"', 'id="gallery"')


def test_the_nav_links_the_persons_section_only_when_the_page_has_it() -> None:
    """A reader signing off QC jumps to the labels a person decided; a page without QC has no such link."""
    from curator.report.data import ReportData
    from curator.report.html import build_html

    assert 'href="#overrides"' not in build_html(ReportData({}))
    page = build_html(ReportData({"qc": qc_table([*cohort("liver", 30), odd("odd")])}))
    nav = part(page, "<nav>", "</nav>")
    assert '<a href="#overrides">decided by a person</a>' in nav and 'id="overrides"' in page
    assert '<a href="#qc">' in nav and '<a href="#problems">' in nav


def kidneys_with_a_part_excluded(with_terms: bool) -> ReportData:
    """c01's left kidney excluded by DQ1 and its kidney re-included by RAD2, as the release records them:
    the qc table's own decisions, and labels with the release's part rule applied."""
    from curator.qc.release import exclude_with_parts, join_measurements
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    ov = [Override("c01", "kidney_left", None, "exclude", "over-segmented into fat", reviewer="DQ1"),
          Override("c01", "kidney", None, "include", "region verified", reviewer="RAD2")]
    qc = to_arrow("qc", judge([*cohort("kidney_left", 30), *cohort("kidney", 30, seed=5)], QCConfig(), ov, tax))
    labels = to_arrow("labels", [{"case_id": r["case_id"], "dataset": "d", "term_id": r["term_id"],
                                  "term": r["term_id"], "origin": "original", "layer": "original",
                                  "derived": r["term_id"] == "kidney", "annotated": True, "present": True,
                                  "voxels": 1000, "volume_ml": 1.0} for r in qc.to_pylist()])
    labels, n = exclude_with_parts(join_measurements(labels, qc), tax)
    assert n == 1
    tables: dict[str, Any] = {"qc": pl.from_arrow(qc), "labels": pl.from_arrow(labels)}
    if with_terms:
        tables["terms"] = pl.DataFrame({"term_id": ["kidney_left", "kidney"],
                                        "ancestors": [list(tax.ancestors("kidney_left")), []]})
    return ReportData(tables)


@pytest.mark.parametrize("with_terms", [True, False])
def test_a_reinclude_the_part_rule_overrules_is_said_and_listed(with_terms: bool) -> None:
    """RAD2 re-included c01's kidney, whose left kidney DQ1 excluded: the release excluded it all the
    same (the part rule) while the persons' section said 're-included by a person', and the labels
    excluded for a part were only a count."""
    page = build_html(kidneys_with_a_part_excluded(with_terms))
    mine = part(page, 'id="overrides"', 'id="gallery"')
    assert "re-included by a person, but excluded from training: its part kidney_left is excluded</b> (RAD2)" in mine
    assert "1 label(s) a person re-included are excluded from training all the same" in mine
    assert "<th>training</th>" in mine
    row = cells(mine, "c01")
    assert row[:5] == ["d", "kidney", "original", "include", "excluded: a part of it is excluded (kidney_left)"]
    left = re.search(r"<tr><td>c01</td><td>d</td><td>kidney_left</td>(.*?)</tr>", mine)
    assert left and re.findall(r"<td[^>]*>(.*?)</td>", left.group(1))[1:3] == ["exclude", "excluded"]
    listed = part(page, 'id="with-part"', "</table>")
    assert "excluded at release: a part of it is excluded (1)" in listed
    assert cells(listed, "c01") == ["d", "kidney", "original", "override_include", "kidney_left",
                                    "override exclude (DQ1): over-segmented into fat; filter said: "
                                    + cells(listed, "c01")[5].split("filter said: ", 1)[1]]
    assert "1 at release as holding a part excluded" in page and "listed below" in page


def test_a_share_of_the_voxels_is_not_rounded_up_to_all() -> None:
    """'2 separate pieces (the largest 100% of the voxels)' for a largest piece of 99.62 %."""
    qc = qc_table([*cohort("liver", 30), odd("odd2", components=2, largest_component_fraction=0.9962)])
    flagged = part(build_html(ReportData({"qc": qc})), 'id="gallery"')
    assert "<b>2 separate pieces</b> (the largest 99.6% of the voxels)" in flagged


def test_the_volume_in_the_tables_says_it_is_the_store_grids() -> None:
    """The galleries' volume_ml was qc's store-grid volume (1175 ml) under the name of the labels
    table's source-grid volume_ml (1172.6 ml)."""
    page = build_html(ReportData({"qc": qc_table([*cohort("liver", 30), odd("odd"), odd("odd2")])}))
    for section in (part(page, 'id="overrides"', 'id="gallery"'), part(page, 'id="gallery"')):
        assert "<th>volume_ml (store grid)</th>" in section and "<th>volume_ml</th>" not in section
        assert "the <code>labels</code> table's <code>volume_ml</code> of an original label" in section


def test_the_scatter_legend_hides_no_point_and_cohort_names_are_not_cut() -> None:
    """The legend sat in each row's upper right, over the cluster (a person's exclude under it); a long
    cohort name, a vertical label, ran past its row."""
    qc = qc_table([*cohort("liver", 30), odd("odd"), *cohort("adrenal_gland_right_of_a_long_name", 30, seed=3)])
    fig = scatter_figure(qc, ["liver", "adrenal_gland_right_of_a_long_name"])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    assert legends
    for lg in legends:
        box = lg.get_window_extent(r)
        assert not any(box.overlaps(a.get_window_extent(r)) for a in fig.axes)
    hist = distributions_figure(qc, ["liver", "adrenal_gland_right_of_a_long_name"])
    for f in (fig, hist):
        f.canvas.draw()
        r = f.canvas.get_renderer()
        page = f.bbox
        names = [t for a in f.axes for t in (a.title, a._left_title, a.yaxis.label) if "/CT/" in t.get_text()]
        assert len(names) == 2
        for t in names:
            box = t.get_window_extent(r)
            assert t.get_rotation() == 0 and page.x0 <= box.x0 and box.x1 <= page.x1
    _plt().close("all")
