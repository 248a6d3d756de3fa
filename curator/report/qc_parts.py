"""The labels a release excluded because QC excluded a part of them (``curator.qc.release.exclude_with_parts``):
which labels, which part, why — and the person's includes that rule overruled.

>>> lab = pl.DataFrame({"case_id": ["c", "c"], "dataset": ["d", "d"], "term_id": ["kidney_left", "kidney"],
...                     "origin": ["original"] * 2, "layer": ["original"] * 2, "qc_decision": ["exclude"] * 2,
...                     "qc_reason": ["leaks", "a part of it is excluded, so ...: kidney_left (leaks)"]})
>>> with_part_rows(ReportData({"labels": lab})).select("term_id", "excluded_part", "part_reason").rows()
[('kidney', 'kidney_left', 'leaks')]
"""

from __future__ import annotations

import re

import polars as pl

from curator.qc.release import PART_EXCLUDED, UNSTORED_REASON
from curator.report.data import ReportData
from curator.report.markup import esc, table_html

KEY = ["case_id", "term_id", "origin"]
WITH_PART_COLUMNS = ["case_id", "dataset", "term_id", "origin", "own_decision", "excluded_part", "part_reason"]


def excluded_labels(d: ReportData) -> pl.DataFrame | None:
    """The release's ``labels`` rows the training view drops (``qc_decision = exclude``)."""
    if not d.has("labels"):
        return None
    lab = d.get("labels")
    return lab.filter(pl.col("qc_decision") == "exclude") if "qc_decision" in lab.columns else None


def is_with_part(lab: pl.DataFrame) -> pl.Expr:
    """Rows excluded at release for a part QC excluded (their reason says so)."""
    if "qc_reason" not in lab.columns:
        return pl.lit(False)
    return pl.col("qc_reason").fill_null("").str.starts_with(PART_EXCLUDED)


def with_part_rows(d: ReportData) -> pl.DataFrame:
    """One row per (label excluded at release for a part, excluded part): the label, its own decision
    (its ``qc`` row's: what the filter or a person decided; empty without one), the part and the
    part's reason. A label's parts are the excluded labels of the same case and layer below it
    (the release's ``terms.ancestors``; without that table, the excluded terms its reason names)."""
    empty = pl.DataFrame(schema={c: pl.Utf8 for c in WITH_PART_COLUMNS})
    lab = excluded_labels(d)
    if lab is None or not all(c in lab.columns for c in KEY):
        return empty
    layer = "layer" if "layer" in lab.columns else "origin"
    held = lab.filter(is_with_part(lab))
    if held.height == 0:
        return empty
    reason = pl.col("qc_reason").fill_null("")
    parts = lab.filter(~is_with_part(lab) & (reason != UNSTORED_REASON)).select(
        "case_id", pl.col(layer).alias("_layer"), pl.col("term_id").alias("excluded_part"),
        reason.alias("part_reason"))
    pairs = held.with_columns(pl.col(layer).alias("_layer")).join(parts, on=["case_id", "_layer"])
    if d.has("terms") and "ancestors" in d.get("terms").columns:
        above = d.get("terms").select(pl.col("term_id").alias("excluded_part"), "ancestors")
        pairs = pairs.join(above, on="excluded_part", how="left").filter(
            pl.col("ancestors").fill_null([]).list.contains(pl.col("term_id")))
    else:  # the reason names each part, followed by its own reason in brackets
        pairs = pairs.filter(pl.struct("qc_reason", "excluded_part").map_elements(
            lambda r: bool(re.search(rf"[:;] {re.escape(r['excluded_part'])}( \(|;|$)", r["qc_reason"] or "")),
            return_dtype=pl.Boolean))
    own = pl.lit(None, pl.Utf8)
    if d.has("qc") and "decision" in d.get("qc").columns:
        pairs = pairs.join(d.get("qc").select(*KEY, pl.col("decision").alias("own_decision")), on=KEY, how="left")
        own = pl.col("own_decision")
    return pairs.with_columns(own_decision=own, dataset=pl.col("dataset") if "dataset" in pairs.columns
                              else pl.lit(None, pl.Utf8)).select(WITH_PART_COLUMNS).sort(
        ["term_id", "case_id", "origin", "excluded_part"])


def overruled(d: ReportData) -> pl.DataFrame:
    """The labels a person re-included (``override_include``) that the release excludes all the same,
    for a part QC excluded: one row per label and part."""
    rows = with_part_rows(d)
    return rows.filter(pl.col("own_decision") == "override_include")


def section_with_part(d: ReportData) -> str:
    """The labels excluded at release as holding a part QC excluded: what, which part, why."""
    rows = with_part_rows(d)
    if rows.height == 0:
        return ""
    return (f'<h3 id="with-part">excluded at release: a part of it is excluded ({_labels(rows)})</h3>'
            '<p class="muted">a label whose part (a term below it, in the same case and layer) QC excluded holds '
            "that part, or would train without it and call it background, so the training view, the loader and "
            "the exports leave it out whatever its own decision (<code>own_decision</code>, also a person's "
            "<code>override_include</code>); one row per excluded part, with the part's reason</p>"
            + table_html(rows, 500, WITH_PART_COLUMNS))


def _labels(rows: pl.DataFrame) -> int:
    return rows.select(KEY).unique().height


def overruled_note(d: ReportData) -> str:
    """A warning line for the persons' section when an include of theirs was overruled."""
    lost = overruled(d)
    if lost.height == 0:
        return ""
    which = lost.select("case_id", "term_id").unique(maintain_order=True).rows()
    return (f'<p class="warn">{_labels(lost)} label(s) a person re-included are excluded from training all the '
            "same: a part of each is excluded (listed under <a href=\"#with-part\">excluded at release: a part "
            "of it is excluded</a>; problems: <code>override_overruled</code>). To train on one, include its part "
            f"too, or drop the include row: {esc(', '.join(f'{c} {t}' for c, t in which[:10]))}</p>")
