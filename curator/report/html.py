"""The self-contained ``report.html``: sections over whichever tables a release has.

Every image is an inline PNG (``data:`` URI); there is no script and no external resource,
so the page opens from a file, offline, in any browser.
"""

from __future__ import annotations

import html

import polars as pl

from curator.report import plots
from curator.report.data import ReportData
from curator.report.markup import CSS, esc, img, table_html
from curator.report.qc_sections import section_qc


def section_counts(d: ReportData) -> str:
    out = ['<h2 id="counts">Counts</h2>']
    if d.has("cases"):
        cases = d.get("cases")
        keys: list[str] = [c for c in ("dataset", "modality", "region") if c in cases.columns]
        by = cases.group_by(keys).agg(pl.len().alias("cases")).sort(keys)
        out += ["<h3>cases per dataset, modality and region</h3>", table_html(by)]
    counts = d.term_counts()
    if counts is not None and counts.height:
        out += ["<h3>labels per term (long tail)</h3>", img(plots.long_tail(counts), "labels per term"),
                table_html(counts, limit=300)]
        if d.has("labels"):
            lab = d.get("labels")
            keys = [c for c in ("dataset", "modality", "term_id") if c in lab.columns]
            if "present" in lab.columns:
                lab = lab.filter(pl.col("present"))
            out += ["<h3>labels per dataset, modality and term</h3>",
                    table_html(lab.group_by(keys).agg(pl.len().alias("labels")).sort(keys), limit=300)]
    else:
        out.append('<p class="muted">no label table in this release</p>')
    return "\n".join(out)


def section_table(d: ReportData, name: str, title: str, anchor: str, empty: str,
                  sort: list[str] | None = None, limit: int = 200, columns: list[str] | None = None,
                  note: str = "") -> str:
    out = [f'<h2 id="{anchor}">{html.escape(title)}</h2>']
    if not d.has(name):
        return out[0] + f'<p class="muted">{html.escape(empty)}</p>'
    df = d.get(name)
    if sort:
        missing = [c for c in sort if c not in df.columns]
        if missing:  # a renamed column must not silently unsort a section
            raise ValueError(f"report section {name}: no column {missing} to sort by")
        df = df.sort(sort)
    return out[0] + (f'<p class="muted">{note}</p>' if note else "") + table_html(df, limit, columns)


# the reason says why in words; the evidence JSON (offsets, slab votes, warp...) stays in the table,
# and so does `distance` (1 - score, the score beside it)
DUPLICATE_COLUMNS = ["group_id", "case_id", "dataset", "kept", "kept_case_id", "tiers", "score", "detail",
                     "coverage", "reason"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
DEDUP_OVERRIDE_COLUMNS = ["row", "action", "case_id", "other_case_id", "effect", "distance", "reason", "reviewer",
                          "date", "note"]


def section_dedup_overrides(d: ReportData) -> str:
    """The reviewed dedup overrides and what each did (``dedup_overrides``): the pairs a
    ``different`` row kept apart although the hashes and verification made them one group first.
    Nothing when no override was given."""
    if not d.has("dedup_overrides"):
        return ""
    rows = d.get("dedup_overrides").sort("row")
    split = rows.filter(pl.col("effect") == "split")
    return ('<h3 id="dedup-overrides">Duplicates decided by a person (stages.dedup.overrides)</h3>'
            f'<p class="muted">{split.height} pair(s) split by an override: the hashes and verification made them '
            "one group, a person's <code>different</code> row kept them apart. Every row and its effect: "
            "<code>curator query RELEASE \"select * from dedup_overrides\"</code></p>"
            + (table_html(split, 300, DEDUP_OVERRIDE_COLUMNS) if split.height else "")
            + (table_html(rest, 300, DEDUP_OVERRIDE_COLUMNS) if (rest := rows.filter(pl.col("effect") != "split")).height
               else ""))


WORKLIST_COLUMNS = ["review_rank", "case_id", "dataset", "term_id", "label_state", "review_round", "attention_size",
                    "attention_ml", "inconsistency", "uncertainty", "overlap", "pseudo_ml", "peak_slice"]


def _with_label_state(att: pl.DataFrame, labels: pl.DataFrame | None) -> pl.DataFrame:
    """``att`` with ``label_state``: the release's own column, or (a release made before it) the
    labels table's origin — revised or pseudo (which of the revised were accepted is not known)."""
    if "label_state" in att.columns:
        return att
    done = (labels.filter(pl.col("origin") == "revised").select("case_id", "term_id").unique()
            if labels is not None and {"origin", "term_id"} <= set(labels.columns) else None)
    state = pl.lit("pseudo")
    if done is not None and done.height:
        att = att.join(done.with_columns(_revised=pl.lit(True)), on=["case_id", "term_id"], how="left")
        state = pl.when(pl.col("_revised")).then(pl.lit("revised")).otherwise(state)
    return att.with_columns(label_state=state).drop("_revised", strict=False)


def section_worklist(d: ReportData, limit: int = 200) -> str:
    """The cases flagged for review, by rank (then each case's terms by attention), as worklist.csv:
    those reviewed already too, each label's state (pseudo, or revised / accepted in round N)."""
    out = '<h2 id="review">Review worklist</h2>'
    if not d.has("attention"):
        return out + '<p class="muted">no attention table in this release (the pseudolabel stage did not run)</p>'
    att = _with_label_state(d.get("attention"), d.tables.get("labels"))
    flagged = att.filter(pl.col("review")).sort(["review_rank", "attention_size"], descending=[False, True])
    total = att["case_id"].n_unique()
    cases = flagged["case_id"].n_unique()
    if not cases:
        return out + f'<p class="muted">no case flagged for review among {total}</p>'
    seen = flagged.filter(pl.col("label_state") != "pseudo")
    reviewed = seen["case_id"].n_unique()
    todo = flagged.filter(pl.col("label_state") == "pseudo")["case_id"].n_unique()
    after = (f"; {reviewed} of them reviewed already ({seen.height} label(s) revised or accepted, "
             f"<code>label_state</code>; their <code>pseudo_ml</code> is the pseudo label's, the "
             "<code>labels</code> table holds the revised one), "
             f"{todo} with labels still pseudo" if reviewed else "")
    note = (f'<p class="muted">{cases} of {total} cases flagged{after}; one row per '
            "pseudo-labelled term of each such case, most attention first; previews and editable files: "
            "<code>review/worklist.csv</code>, "
            "<code>curator review export</code></p>")
    return out + note + table_html(flagged, limit, WORKLIST_COLUMNS)


def section_problems(d: ReportData) -> str:
    if not d.has("problems"):
        return '<h2 id="problems">Problems</h2><p class="muted">no problems recorded</p>'
    p = d.get("problems")
    summary = p.group_by(["stage", "kind", "severity"]).agg(pl.len().alias("rows")).sort(["stage", "kind"])
    rank = pl.col("severity").replace_strict(SEVERITY_ORDER, default=len(SEVERITY_ORDER), return_dtype=pl.Int8)
    rows = p.sort([rank, "stage", "dataset", "case_id"], nulls_last=True)  # errors, then warnings, then notes
    return '<h2 id="problems">Problems</h2>' + table_html(summary) + table_html(rows, limit=300)


def build_html(d: ReportData, *, max_terms: int = 12, max_gallery: int = 24) -> str:
    """The whole page."""
    info = d.info
    counts = info.get("counts", {})
    facts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    sections = [
        section_counts(d),
        section_qc(d, max_terms, max_gallery),
        section_table(d, "duplicates", "Duplicate groups", "dedup", "no duplicates table in this release",
                      ["group_id", "case_id"], 300, DUPLICATE_COLUMNS,
                      "one row per scan in a group; the measured evidence (offsets, slab votes, warp) is in "
                      "the table's <code>evidence</code> column: <code>curator query RELEASE "
                      "\"select case_id, evidence from duplicates\"</code>") + section_dedup_overrides(d),
        section_problems(d),
        section_worklist(d),
    ]
    links = [("counts", "counts"), ("qc", "quality control"), ("overrides", "decided by a person"),
             ("dedup", "duplicates"), ("problems", "problems"), ("review", "review worklist")]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links if f'id="{a}"' in "".join(sections))
    # the copy inside a release has no creation time of its own (it is in release.json): a rebuilt
    # release keeps byte-identical files
    stamp = " · ".join(f"{label} {esc(info.get(key))}" for label, key in
                       (("created", "created"), ("code", "code_version"), ("schema", "schema_version"))
                       if info.get(key))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>QC report · {esc(d.title)}</title><style>{CSS}</style></head>'
            f"<body><h1>QC report · {esc(d.title)}</h1>"
            f'<p class="muted">{stamp}<br>{esc(facts)}</p><nav>{nav}</nav>'
            + "\n".join(sections) + "</body></html>\n")
