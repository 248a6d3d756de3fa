"""The report's quality-control section: the filter's rule, feature distributions and scatter
plots per term, the labels a person decided (overrides), the gallery of excluded labels,
oversized labels, and labels excluded before the release (not stored)."""

from __future__ import annotations

from typing import Any

import polars as pl

from curator.report import plots, qc_parts
from curator.report.data import ReportData
from curator.report.gallery import label_figure
from curator.report.markup import esc, img, table_html


def _qc_terms(qc: pl.DataFrame, limit: int) -> tuple[list[str], pl.DataFrame]:
    """Terms to plot: those with excluded labels first, then the most frequent judged terms — only
    terms with a cohort that has bounds; and the judged cohorts without bounds (their exclusions are
    the side check's or a person's), with their judged and excluded labels."""
    judged = qc.filter(pl.col("decision").is_in(plots.JUDGED))
    if judged.height == 0:
        return [], judged.select("cohort")
    cohorts = judged.join(qc.group_by("cohort").agg(plots.bounded().alias("bounded")), on="cohort")
    unbounded = cohorts.filter(~pl.col("bounded")).group_by("cohort").agg(
        pl.len().alias("judged"), (pl.col("decision") == "exclude").sum().alias("excluded")).sort("cohort")
    unbounded = unbounded.join(qc.group_by("cohort").agg(pl.len().alias("labels")), on="cohort", how="left")
    agg = cohorts.filter(pl.col("bounded")).group_by("term_id").agg(
        pl.len().alias("n"), (pl.col("decision") == "exclude").sum().alias("x"))
    agg = agg.sort(["x", "n", "term_id"], descending=[True, True, False])
    return agg["term_id"].head(limit).to_list(), unbounded


DISTRIBUTION_LEGEND = ('<p class="muted">one row per term, its largest cohort (term/modality/volume basis, on the '
                       "left); grey: every label of the cohort before filtering; blue: judged labels kept; amber: "
                       "labels kept without being judged (<code>truncated</code> by the field of view, or "
                       "<code>unchecked</code>); grey alone: labels excluded; dashed: the cohort's bounds. The volume "
                       "axis says its basis: a share of the body volume, or millilitres for cases without an image</p>")


def section_plots(qc: pl.DataFrame, limit: int) -> str:
    """Per plotted term, the feature histograms before/after filtering and the scatter plots."""
    terms, unbounded = _qc_terms(qc, limit)
    out = []
    if terms:
        out += ["<h3>feature distributions before and after filtering</h3>",
                DISTRIBUTION_LEGEND,
                img(plots.distributions(qc, terms), "feature distributions"),
                "<h3>feature scatter plots</h3>", img(plots.scatter(qc, terms), "feature scatter plots")]
    if unbounded.height:
        shown = ", ".join(f"{c} ({x} of {j} judged label{'s' if j > 1 else ''} excluded; {n} in the cohort)"
                          for c, j, x, n in unbounded.select("cohort", "judged", "excluded", "labels")
                          .head(40).iter_rows())
        out.append(f'<p class="muted">not plotted: {unbounded.height} cohort(s) without bounds (fewer than '
                   "<code>min_cohort</code> complete labels, so no shape was judged; a label excluded there was "
                   "excluded by the side check or a person; judged labels are those neither truncated nor "
                   f"unchecked): {esc(shown)}"
                   f"{' …' if unbounded.height > 40 else ''}</p>")
    return "\n".join(out)


KEY = ["case_id", "term_id", "origin"]
NOT_STORED_COLUMNS = ["case_id", "dataset", "term_id", "origin", "volume_ml", "qc_reason"]


def excluded_at_release(d: ReportData) -> pl.DataFrame | None:
    """``labels`` rows the release excluded without a qc row of their own: present labels their
    store does not hold (resampling erased them; ``curator.qc.release.exclude_unstored``). The qc
    table never saw them, yet the training view skips them. (Labels excluded for a part QC
    excluded are :func:`excluded_with_part`.)"""
    lab = qc_parts.excluded_labels(d)
    if lab is None:
        return None
    lab = lab.filter(~qc_parts.is_with_part(lab))
    if d.has("qc") and all(c in lab.columns for c in KEY):
        lab = lab.join(d.get("qc").select(KEY), on=KEY, how="anti")
    return lab.sort([c for c in KEY if c in lab.columns])


def excluded_with_part(d: ReportData) -> int:
    """How many labels the release excluded because QC excluded a part of them
    (``curator.qc.release.exclude_with_parts``; the qc table has another decision for them, or none)."""
    lab = qc_parts.excluded_labels(d)
    return 0 if lab is None else lab.filter(qc_parts.is_with_part(lab)).height


def section_not_stored(gone: pl.DataFrame | None) -> str:
    if gone is None or gone.height == 0:
        return ""
    return (f'<h3 id="not-stored">excluded at release: not in the store ({gone.height})</h3>'
            '<p class="muted">present in the source, but no voxel of them is on the stored grid (the preprocess '
            "problems say why, e.g. <code>label_lost_in_resampling</code>): qc could not measure them, and the "
            "training view skips them</p>" + table_html(gone, 500, NOT_STORED_COLUMNS))


def section_qc(d: ReportData, max_terms: int, max_gallery: int) -> str:
    out = ['<h2 id="qc">Label quality control</h2>']
    gone = excluded_at_release(d)
    if not d.has("qc"):
        out.append('<p class="muted">no qc table in this release (the qc stage did not run, or no case had a '
                   "store: run preprocess, then qc)</p>")
        return "\n".join([*out, section_not_stored(gone)])
    qc = d.get("qc")
    method = ", ".join(sorted(set(qc["method"].to_list())))
    rule = _qc_rule(d.info, qc)
    person = by_person(qc)
    excluded = pl.col("decision") == "exclude"
    dec = qc.group_by("term_id").agg(
        pl.len().alias("labels"), (pl.col("decision") == "include").sum().alias("include"),
        (excluded & ~person).sum().alias("exclude"),
        *[(pl.col("decision") == x).sum().alias(x) for x in ("truncated", "unchecked", "override_include")],
        (excluded & person).sum().alias("override_exclude"))
    n_gone = 0 if gone is None else gone.height
    if gone is not None and gone.height:  # a term may have no measured label at all: an outer join, zeros filled
        per = gone.group_by("term_id").agg(pl.len().alias("not_stored"))
        dec = dec.join(per, on="term_id", how="full", coalesce=True).fill_null(0)
    dec = dec.sort("term_id")
    n_filter, n_person = (qc.filter(excluded & p).height for p in (~person, person))
    n_part = excluded_with_part(d)
    parts = [f"{n_filter} by the filter (<code>exclude</code>)"] + (
        [f"{n_person} by a person (<code>override_exclude</code>)"] if n_person else []) + (
        [(f"{n_part} at release as holding a part excluded (a derived kidney of an excluded left kidney; "
          "listed below)")]
        if n_part else []) + (
        [f"{n_gone} at release as not in the store (<code>not_stored</code>, listed below)"] if n_gone else [])
    total = (f"; {n_filter + n_person + n_part + n_gone} label(s) excluded from training: {', '.join(parts)}"
             if n_person or n_gone or n_part else "")
    out += [(f"<p>method <b>{esc(method)}</b>{esc(rule)}; decisions per term (excluded labels keep their row and mask; "
             f"the training view skips them){total}:</p>"), table_html(dec, limit=300)]
    out.append(section_plots(qc, max_terms))
    out.append(section_overrides(d, qc, max_gallery))
    out.append(section_gallery(d, qc, max_gallery))
    out.append(section_oversized(d, qc, max_gallery))
    out.append(qc_parts.section_with_part(d))
    out.append(section_not_stored(gone))
    return "\n".join(out)


BASIS_WORDS = {"body": "per body volume", "section": "per body size at the label's level", "absolute": "in ml"}


def _volume_bases(qc: pl.DataFrame | None) -> str:
    """``volume per body volume (14 cohorts), in ml (2 cohorts)``: the bases the qc table's cohorts
    were judged on (a case without an image has its volume in ml, whatever ``volume_norm`` says);
    empty without the column."""
    if qc is None or "volume_basis" not in qc.columns or qc.height == 0:
        return ""
    per = qc.group_by("volume_basis").agg(pl.col("cohort").n_unique().alias("n")).sort(["n", "volume_basis"],
                                                                                        descending=[True, False])
    if per.height == 1:
        return f"volume {BASIS_WORDS.get(per['volume_basis'][0], per['volume_basis'][0])}"
    return "volume " + ", ".join(f"{BASIS_WORDS.get(b, b)} ({n} cohort{'s' if n > 1 else ''})" for b, n in per.iter_rows())


def _qc_rule(info: dict[str, Any], qc: pl.DataFrame | None = None) -> str:
    """The settings behind the decisions, as the release's qc stage ran them (its ``stages.qc.config``
    in release.json; else its pipeline config with this curator's defaults filled in, which an
    older curator may not have shared), with the volume bases of ``qc``'s cohorts when given:
    `` (ε = 2 %, 2 of 3 features outside; cohorts of ≥ 20 labels; percentiles auto; volume per body
    volume (12 cohorts), in ml (2 cohorts))`` (else the setting: ``volume body``)."""
    import dataclasses

    from curator.errors import CuratorError
    from curator.qc.config import QCConfig

    pipeline = info.get("pipeline_config")
    if not pipeline:  # tables without their release: the settings are unknown
        return ""
    ran = ((info.get("stages") or {}).get("qc") or {}).get("config")
    given: Any
    if isinstance(ran, dict) and ran:  # a setting since removed is left out; one added since takes its default
        known = {f.name for f in dataclasses.fields(QCConfig)}
        given = {k: v for k, v in ran.items() if k in known}
    else:
        given = (pipeline.get("stages") or {}).get("qc")
    try:
        c = QCConfig.from_dict(dict(given or {}), where="stages.qc")
    except CuratorError:
        return ""
    if c.method == "iqr":
        vote = f"Tukey fences k = {c.iqr_k:g}, {c.iqr_vote} of {len(c.iqr_features)} feature(s) outside"
    else:
        vote = f"ε = {c.epsilon:g} %, {c.vote} of {len(c.features)} features outside; percentiles {c.percentiles}"
    return f" ({vote}; cohorts of ≥ {c.min_cohort} labels; {_volume_bases(qc) or f'volume {c.volume_norm}'})"


def by_person(qc: pl.DataFrame) -> pl.Expr:
    """Rows a person's override decided (``qc.override``; false in a table without the column)."""
    return pl.col("override").fill_null(False) if "override" in qc.columns else pl.lit(False)


def section_gallery(d: ReportData, qc: pl.DataFrame, limit: int) -> str:
    flagged = qc.filter((pl.col("decision") == "exclude") & ~by_person(qc)).sort(["term_id", "case_id"])
    return gallery(d, flagged, limit, f'<h3 id="gallery">flagged labels: excluded by the filter ({flagged.height})</h3>',
                   '<p class="muted">the filter excluded no label</p>')


# the override's reason as the qc stage writes it (curator.qc.cohort): the person's words (after who and
# when, in brackets, when the row gave them), then the filter's verdict
OVERRIDE_REASON = r"(?s)^override (?:include|exclude)(?: \([^)]*\))?: (.*?); filter said: (\w+)(?: \((.*)\))?$"
PERSON_COLUMNS = ["case_id", "dataset", "term_id", "origin", "action", "training", "override_reviewer",
                  "override_date", "person_reason", "flagged", "filter_decision", "filter_reason", "volume_ml",
                  "components"]


def decided_by_person(qc: pl.DataFrame) -> pl.DataFrame:
    """The rows an override decided, with the action, the person's reason and the filter's own
    verdict (``filter_decision``, ``filter_reason``) taken apart from ``reason``; a reason in
    another form is shown whole as the person's."""
    rows = qc.filter(by_person(qc)).sort(["term_id", "case_id", "origin"])
    parts = [pl.col("reason").str.extract(OVERRIDE_REASON, i) for i in (1, 2, 3)]
    own = [pl.col("override_reason")] if "override_reason" in rows.columns else []  # qc v5: as the person wrote it
    return rows.with_columns(
        action=pl.when(pl.col("decision") == "exclude").then(pl.lit("exclude")).otherwise(pl.lit("include")),
        person_reason=pl.coalesce(*own, parts[0], pl.col("reason")), filter_decision=parts[1], filter_reason=parts[2])


def section_overrides(d: ReportData, qc: pl.DataFrame, limit: int) -> str:
    """The labels a person decided (``stages.qc.overrides``): what, why, what the filter had said, and
    whether training follows it (``training``: a re-included label with a part QC excluded is
    excluded all the same, ``curator.qc.release.exclude_with_parts``)."""
    rows = decided_by_person(qc)
    lost = qc_parts.overruled(d)
    parts: dict[tuple[Any, ...], list[str]] = {(c, t, o): [] for c, t, o in lost.select(qc_parts.KEY).rows()}
    for c, t, o, part in lost.select(*qc_parts.KEY, "excluded_part").rows():
        parts[(c, t, o)].append(part)
    words = {k: f"excluded: a part of it is excluded ({', '.join(v)})" for k, v in parts.items()}
    rows = rows.with_columns(training=pl.struct(qc_parts.KEY).map_elements(
        lambda r: words.get((r["case_id"], r["term_id"], r["origin"]), ""), return_dtype=pl.Utf8)) \
        if rows.height else rows.with_columns(training=pl.lit("", pl.Utf8))
    rows = rows.with_columns(training=pl.when(pl.col("training") != "").then(pl.col("training"))
                             .when(pl.col("action") == "exclude").then(pl.lit("excluded"))
                             .otherwise(pl.lit("kept")))
    unmatched = (d.get("problems").filter(pl.col("kind") == "override_unmatched").height
                 if d.has("problems") else 0)
    warn = (f'<p class="warn">{unmatched} row(s) of the override file matched no label, so they decided nothing: '
            "see the problems below (<code>override_unmatched</code>)</p>" if unmatched else "")
    warn += qc_parts.overruled_note(d)
    head = (f'<h3 id="overrides">labels decided by a person ({rows.height})</h3>{warn}<p class="muted">rows of the '
            "override file (<code>stages.qc.overrides</code>); <code>flagged</code>, <code>filter_decision</code> "
            "and <code>filter_reason</code> are the filter's own verdict, which the person's decision replaced; "
            "<code>training</code> is what the training view does with the label (a re-included label a part of "
            "which is excluded is left out all the same)</p>")
    if rows.height == 0:
        return (f'<h3 id="overrides">labels decided by a person (0)</h3>{warn}<p class="muted">no override: every '
                "decision is the filter's</p>")

    def caption(r: dict[str, Any]) -> str:
        said = f"{r['filter_decision']} ({r['filter_reason']})" if r.get("filter_reason") else r.get("filter_decision")
        who = " · ".join(str(r[c]) for c in ("override_reviewer", "override_date") if r.get(c))
        part = parts.get((r["case_id"], r["term_id"], r["origin"]))
        done = ("re-included by a person, but excluded from training: its part " + ", ".join(part)
                + " is excluded" if part else "re-included by a person" if r["action"] == "include"
                else "excluded by a person")
        return (f"<b>{esc(done)}</b>{' (' + esc(who) + ')' if who else ''}: {esc(r['person_reason'])} · the filter "
                f"said: {esc(said)}")

    return gallery(d, rows, limit, head, "", PERSON_COLUMNS, caption)


def section_oversized(d: ReportData, qc: pl.DataFrame, limit: int) -> str:
    """Truncated labels (kept, not judged) larger in ml than their cohort's complete labels' upper
    bound: a cut only removes voxels, so their size is not the cut's — a person should look."""
    if "oversized" not in qc.columns:  # a release made before the column
        return ""
    big = qc.filter((pl.col("decision") == "truncated") & pl.col("oversized").fill_null(False))
    head = (f'<h3 id="oversized">truncated but larger than the cohort ({big.height})</h3><p class="muted">cut by '
            "the field of view, so kept and not judged; but larger (ml) than the upper volume bound of their "
            "cohort's complete labels, which no cut explains: review them (an override excludes one)</p>")
    return gallery(d, big.sort(["term_id", "case_id"]), limit, head,
                   '<p class="muted">no truncated label is larger than its cohort</p>')


GALLERY_COLUMNS = ["case_id", "dataset", "term_id", "origin", "volume_ml", "volume_basis", "f_volume", "f_sphericity",
                   "f_eccentricity", "components", "reason"]


FEATURE_LEGEND = ('<p class="muted"><code>f_volume</code>: the volume the filter judged, on its cohort\'s '
                  "<code>volume_basis</code> (body: the label's share of the body volume in the scan; section: "
                  "its volume over the body's size at its level; absolute: millilitres, for cases without an "
                  "image); <code>f_sphericity</code>: how round (1 = a ball, a voxelised ball 2/3); "
                  "<code>f_eccentricity</code>: how elongated (0 = round, near 1 = long and thin); "
                  "<code>components</code>: separate (26-connected) pieces; <code>volume_ml (store grid)</code>: the "
                  "volume qc measured, on the resampled store grid, as every volume in the reasons and the plots — "
                  "the <code>labels</code> table's <code>volume_ml</code> of an original label is counted on the "
                  "source grid and can differ (a few percent for an organ, much more for a structure of a few "
                  "voxels)</p>")

STORE_VOLUME = "volume_ml (store grid)"


def pieces(r: dict[str, Any]) -> str:
    """`` · 3 separate pieces (the largest 81 % of the voxels)`` for a label in several components."""
    n, share = r.get("components"), r.get("largest_component_fraction")
    if not n or n < 2:
        return ""
    return f" · <b>{n} separate pieces</b>" + (f" (the largest {share_text(share)} of the voxels)" if share else "")


def share_text(share: float) -> str:
    """A share as a percentage that never reads 100 % when it is not all (``0.9962`` is ``99.6%``, not
    ``100%``) nor 0 % when it is some.

    >>> share_text(0.81), share_text(0.9962), share_text(1.0), share_text(0.00004)
    ('81%', '99.6%', '100%', '0.004%')
    """
    text, digits = f"{share:.0%}", 0
    while 0 < share < 1 and digits < 6 and float(text[:-1]) in (0.0, 100.0):
        digits += 1
        text = f"{share:.{digits}%}"
    return text


def gallery(d: ReportData, flagged: pl.DataFrame, limit: int, head: str, empty: str,
            cols: list[str] = GALLERY_COLUMNS, caption: Any = None) -> str:
    """Slices through each label of ``flagged`` (``caption(row)`` below, else its reason), then their table."""
    out = [head]
    if flagged.height == 0:
        return head + empty
    figs = []
    tax = d.release.taxonomy if d.release is not None else None
    for r in flagged.head(limit).iter_rows(named=True):
        path = d.store_path(r["case_id"])
        uri = label_figure(path, r["term_id"], r["origin"], f"{r['case_id']} · {r['term_id']}", tax) if path else None
        why = d.damaged.get(r["case_id"])
        pic = (img(uri, f"{r['case_id']} {r['term_id']}") if uri else
               f'<p class="muted">(not drawn: {esc(why)}; run <code>curator verify</code>)</p>' if why else
               '<p class="muted">(no store to draw from)</p>')
        text = caption(r) if caption else esc(r["reason"])
        figs.append(f"<figure>{pic}<figcaption><b>{esc(r['case_id'])}</b> · {esc(r['term_id'])} "
                    f"({esc(r['origin'])}){pieces(r)}: {text}</figcaption></figure>")
    more = f'<p class="muted">showing {limit} of {flagged.height}</p>' if flagged.height > limit else ""
    shown = flagged.rename({"volume_ml": STORE_VOLUME}) if "volume_ml" in flagged.columns else flagged
    cols = [STORE_VOLUME if c == "volume_ml" else c for c in cols]
    return "\n".join(out + [f'<div class="gallery">{"".join(figs)}</div>', more, table_html(shown, 500, cols),
                            FEATURE_LEGEND])
