"""Release step: measurements and QC decisions joined into the release's ``labels`` table.

After this step one query answers questions like "which cases have a liver over 2.5 l"::

    select case_id from labels where term = 'liver' and volume_ml > 2500

and the training view is ``labels`` without excluded rows (:data:`TRAINING_FILTER`):
flagged labels keep their row, mask and reason; only the loader skips them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from curator.schema import table_schema, to_arrow

if TYPE_CHECKING:
    from curator.taxonomy.model import Taxonomy

log = logging.getLogger("curator")

# The labels a training loader uses: everything but excluded labels (truncated and unchecked
# labels are kept; overrides re-include). Recorded in release.json under qc.training_filter.
TRAINING_FILTER = "coalesce(qc_decision, 'include') <> 'exclude'"
MEASUREMENTS = ("mean_intensity", "sd_intensity", "extent_mm", "centroid_mm", "components")


def join_measurements(labels: pa.Table, qc: pa.Table) -> pa.Table:
    """``labels`` with its measurement and decision columns filled from ``qc`` rows of the same
    (case_id, term_id, origin); rows without a qc row keep nulls."""
    key_cols = ["case_id", "term_id", "origin"]
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in qc.select([*key_cols, *MEASUREMENTS, "decision", "reason"]).to_pylist():
        by_key[tuple(r[k] for k in key_cols)] = r
    rows = labels.to_pylist()
    for row in rows:
        q = by_key.get(tuple(row.get(k) for k in key_cols))
        if q is None:
            continue
        for c in MEASUREMENTS:
            row[c] = q[c]
        row["qc_decision"] = q["decision"]
        row["qc_reason"] = q["reason"]
    return to_arrow("labels", rows)


UNSTORED_REASON = ("not in the case's store: no voxel of it on the stored grid (the preprocess problems say why, "
                   "e.g. label_lost_in_resampling), so training never reads it")


def exclude_unstored(labels: pa.Table, store_terms: pa.Table, stored_cases: set[str], tax: Taxonomy | None = None,
                     ) -> tuple[pa.Table, int]:
    """``labels`` with every present label that its released store does not hold marked
    ``exclude`` (and how many). A label resampling erased (a one-slice structure under a coarser
    grid) kept ``present`` and its source volume with a null decision, so the manifest's
    training view counted a label the store, the loader and the exports all lack. A derived term
    of pseudo or revised labels (:func:`assembled_union`; ``tax`` finds its parts, the bundled
    taxonomy by default) is held when its present parts are."""
    held = {(r["case_id"], r["term_id"], r["layer"])
            for r in store_terms.select(["case_id", "term_id", "layer"]).to_pylist()}
    rows = labels.to_pylist()
    # a derived term of pseudo or revised labels is no term of a layer: held when its present parts are
    parts = _part_rows(rows, tax)
    n = 0
    for row in rows:
        key = (row["case_id"], row["term_id"], row.get("layer"))
        if assembled_union(row):
            stored = all((p["case_id"], p["term_id"], p.get("layer")) in held for p in parts.get(key, ())
                         if p.get("present") and not p.get("derived"))
        else:
            stored = key in held
        if (row.get("present") and row.get("case_id") in stored_cases and row.get("qc_decision") is None
                and not stored):
            row["qc_decision"], row["qc_reason"] = "exclude", UNSTORED_REASON
            n += 1
    return (to_arrow("labels", rows), n) if n else (labels, 0)


# the start of the reason of a label excluded at release because QC excluded a part of it
PART_EXCLUDED = "a part of it is excluded"


def assembled_union(row: dict[str, Any], layer: str = "layer") -> bool:
    """Whether a ``labels`` row is a derived term of pseudo or revised labels, the union of the
    case's labels below it whatever layer each comes from (:mod:`curator.pseudolabel.derived`),
    not a term of its own layer as the dataset's derived terms are."""
    return bool(row.get("derived")) and row.get(layer) != "original"


def _part_rows(rows: list[dict[str, Any]], tax: Taxonomy | None, layer: str = "layer",
               ) -> dict[tuple[Any, Any, Any], list[dict[str, Any]]]:
    """(case, term, layer) of each :func:`assembled_union` row -> the case's rows below it (its parts)."""
    unions = [r for r in rows if assembled_union(r, layer)]
    if not unions:
        return {}
    if tax is None:
        from curator.taxonomy import load_taxonomy

        tax = load_taxonomy()
    of_case: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        of_case.setdefault(r["case_id"], []).append(r)
    return {(u["case_id"], u["term_id"], u.get(layer)): [r for r in of_case[u["case_id"]]
                                                         if r["term_id"] in tax.descendants(u["term_id"])]
            for u in unions}


def excluded_parts(rows: list[dict[str, Any]], tax: Taxonomy, *, layer: str = "layer", decision: str = "qc_decision",
                   reason: str = "qc_reason") -> dict[tuple[Any, Any, str], list[tuple[str, str]]]:
    """(case, layer, term) -> the parts of that term QC excluded in the same case and layer (in any
    layer for a derived term of pseudo or revised labels, :func:`assembled_union`), each with
    its reason: what :func:`exclude_with_parts` excludes a label for. ``rows`` are ``labels`` rows,
    or ``qc`` rows (``layer="origin"``, ``decision="decision"``, ``reason="reason"``); only the rows
    whose own decision is not ``exclude`` are keys.

    >>> from curator.taxonomy import load_taxonomy
    >>> rows = [{"case_id": "c", "origin": "original", "term_id": t, "decision": d, "reason": w}
    ...         for t, d, w in [("kidney_left", "exclude", "leaks"), ("kidney", "override_include", "ok")]]
    >>> excluded_parts(rows, load_taxonomy(), layer="origin", decision="decision", reason="reason")
    {('c', 'original', 'kidney'): [('kidney_left', 'leaks')]}
    """
    excluded: dict[tuple[Any, Any], dict[str, str]] = {}  # (case, layer) -> part -> why
    anywhere: dict[Any, dict[str, str]] = {}  # case -> part -> why, whatever its layer
    for row in rows:
        if row.get(decision) == "exclude":
            excluded.setdefault((row["case_id"], row.get(layer)), {})[row["term_id"]] = row.get(reason) or ""
            anywhere.setdefault(row["case_id"], {})[row["term_id"]] = row.get(reason) or ""
    out: dict[tuple[Any, Any, str], list[tuple[str, str]]] = {}
    for row in rows:
        # a derived term of pseudo or revised labels holds its parts from every layer they come from
        parts = anywhere.get(row["case_id"]) if assembled_union(row, layer) else \
            excluded.get((row["case_id"], row.get(layer)))
        if not parts or row.get(decision) == "exclude" or tax.get(row["term_id"]) is None:
            continue
        below = [(t, parts[t]) for t in tax.descendants(row["term_id"]) if t in parts]
        if below:
            out[(row["case_id"], row.get(layer), row["term_id"])] = below
    return out


# what a person's include overruled by the part rule is told (the qc stage's problem, the release's reason)
OVERRULED_REMEDY = ("to train on it, include its excluded part(s) too (an override include of each, if they are "
                    "right), or drop the include row; a part's exclusion stands for every label holding it")


def exclude_with_parts(labels: pa.Table, tax: Taxonomy) -> tuple[pa.Table, int]:
    """``labels`` with every present label that has a part QC excluded (a term below it, ``part_of``,
    excluded in the same case and layer, or in any layer for a derived term of pseudo or revised
    labels: a pseudo kidney of an excluded revised left kidney) marked ``exclude`` too (and how many): the loader and the
    exports leave such a term out — a derived kidney holding the excluded left kidney, or a
    term trained without its excluded part, which it would call background — while its row kept
    its own decision, so the training view in SQL kept it. The reason names the parts and what
    the label's own decision was. A person's ``override_include`` of the label does not win over
    its part's exclusion (the mask still holds the excluded part): its reason says the include is
    overruled, and what to do (:data:`OVERRULED_REMEDY`)."""
    rows = labels.to_pylist()
    found = excluded_parts(rows, tax)
    n = 0
    for row in rows:
        below = found.get((row["case_id"], row.get("layer"), row["term_id"]))
        if not below or not row.get("present"):
            continue
        why = "; ".join(f"{t} ({w})" if w else t for t, w in below)
        own = f"; its own decision: {row['qc_decision']}" if row.get("qc_decision") else ""
        if row.get("qc_decision") == "override_include":
            own += f" — a person's include, overruled by its excluded part: {OVERRULED_REMEDY}"
        row["qc_decision"] = "exclude"
        row["qc_reason"] = (f"{PART_EXCLUDED}, so training leaves it out rather than hold or miss that part: "
                            f"{why}{own}")
        n += 1
    return (to_arrow("labels", rows), n) if n else (labels, 0)


def summary(qc: pa.Table | None, labels: pa.Table | None = None, not_stored: int = 0,
            with_part: int = 0) -> dict[str, Any]:
    """``release.json``'s ``qc``: the qc table's ``decisions`` (what the filter and the overrides
    decided, as ``select decision, count(*) from qc``), ``excluded_not_stored`` (present labels
    excluded at release because their store does not hold them: they have no qc row), and
    ``excluded_with_part`` (present labels excluded at release because QC excluded a part of them:
    they have a qc row of another decision, or none), and ``labels_excluded`` — every ``labels``
    row the training filter drops, all three kinds (what a reader comparing with the training view
    wants)."""
    out: dict[str, Any] = {}
    if qc is not None:
        counts: dict[str, int] = {}
        for d in qc.column("decision").to_pylist():
            counts[d] = counts.get(d, 0) + 1
        methods = sorted(set(qc.column("method").to_pylist()))
        out.update(decisions=dict(sorted(counts.items())), method=methods[0] if len(methods) == 1 else methods)
    out["excluded_not_stored"] = not_stored
    out["excluded_with_part"] = with_part
    if labels is not None and "qc_decision" in labels.column_names:
        out["labels_excluded"] = sum(d == "exclude" for d in labels.column("qc_decision").to_pylist())
    out["training_filter"] = TRAINING_FILTER
    return out


def conform(qc: pa.Table) -> pa.Table:
    """``qc`` with the columns its declared schema added since it was written (null): a workspace's
    qc table from before ``override_reason``, ``override_reviewer`` and ``override_date`` (those
    overrides had neither reviewer nor date) is released as the schema says, without measuring
    every store again."""
    if set(table_schema("qc").schema.names) <= set(qc.column_names):
        return qc
    return to_arrow("qc", qc.to_pylist())


def override_counts(qc: pa.Table, problems: pa.Table | None, labels: pa.Table | None = None) -> dict[str, int]:
    """``release.json``'s ``qc.overrides``: the labels a person's override decided, by action, the
    override rows that matched no label (``override_unmatched`` rows of ``problems``), and
    ``include_overruled``: of the ``include`` ones, those ``labels`` (the release's) excludes all
    the same, for a part QC excluded (:func:`exclude_with_parts`) — counted in ``include`` too, as
    the file decided them, but not in the training view."""
    out = {"include": 0, "exclude": 0, "unmatched": 0, "include_overruled": 0}
    for r in qc.select(["override", "decision"]).to_pylist():
        if r["override"]:
            out["include" if r["decision"] == "override_include" else "exclude"] += 1
    if problems is not None and "kind" in problems.column_names:
        out["unmatched"] = sum(k == "override_unmatched" for k in problems.column("kind").to_pylist())
    out["include_overruled"] = len(overruled(qc, labels))
    return out


def overruled(qc: pa.Table, labels: pa.Table | None) -> list[dict[str, Any]]:
    """The ``labels`` rows a person re-included (``override_include`` in ``qc``) that the release
    excludes all the same, for a part QC excluded (their ``qc_reason`` starts :data:`PART_EXCLUDED`)."""
    if labels is None or not {"qc_decision", "qc_reason"} <= set(labels.column_names):
        return []
    key = ("case_id", "term_id", "origin")
    mine = {tuple(r[k] for k in key) for r in qc.select([*key, "decision"]).to_pylist()
            if r["decision"] == "override_include"}
    return [r for r in labels.select([*key, "qc_decision", "qc_reason"]).to_pylist()
            if r["qc_decision"] == "exclude" and (r["qc_reason"] or "").startswith(PART_EXCLUDED)
            and tuple(r[k] for k in key) in mine]


def release_step(builder: Any) -> None:
    """Fill ``labels``' measurement columns from ``qc`` (tolerates either table being absent), exclude
    the present labels with a part QC excluded and those their stores do not hold, and record the
    counts in ``release.json``."""
    qc = builder.tables.get("qc")
    if qc is not None:
        conformed = conform(qc)
        if conformed is not qc:
            builder.tables["qc"] = qc = conformed
    if qc is None:  # labels not loaded: a table no step touches is copied file-for-file
        log.info("release: no qc table; labels keep null measurements")
    elif "labels" not in builder.tables:
        log.info("release: no labels table to join qc measurements into (harmonize not run)")
    else:
        builder.tables["labels"] = join_measurements(builder.tables["labels"], qc)
    with_part = _exclude_with_parts(builder) if qc is not None else 0  # before: an unstored label is no part held
    n = _exclude_unstored(builder)
    if qc is not None or n:  # counted after the release's own exclusions: release.json agrees with labels
        builder.extra["qc"] = summary(qc, builder.tables.get("labels"), n, with_part)
    if qc is not None:
        ov = override_counts(qc, builder.tables.get("problems"), builder.tables.get("labels"))
        if any(ov.values()):  # release.json of a release without overrides is as it was
            builder.extra["qc"]["overrides"] = ov


def _exclude_with_parts(builder: Any) -> int:
    from curator.harmonize.stage import harmonize_taxonomy

    labels = builder.tables.get("labels")
    if labels is None or "qc_decision" not in labels.column_names:
        return 0
    builder.tables["labels"], n = exclude_with_parts(labels, harmonize_taxonomy(builder.ctx))
    if n:
        log.info("release: %d present label(s) have a part qc excluded: excluded too", n)
    qc = builder.tables.get("qc")
    lost = overruled(qc, builder.tables["labels"]) if qc is not None else []
    if lost:  # a person's decision not applied is said, not only counted
        log.warning("release: %d label(s) a person re-included are excluded from training all the same, as a part of "
                    "each is excluded (%s): %s", len(lost),
                    ", ".join(f"{r['case_id']} {r['term_id']} ({r['origin']})" for r in lost[:10])
                    + (f" and {len(lost) - 10} more" if len(lost) > 10 else ""), OVERRULED_REMEDY)
    return n


def _exclude_unstored(builder: Any) -> int:
    if not all(t in builder.tables for t in ("labels", "store_terms", "preprocessed")):
        return 0  # (checked before loading any: a table no step touches is copied file-for-file)
    labels, store_terms, pre = (builder.tables[t] for t in ("labels", "store_terms", "preprocessed"))
    from curator.harmonize.stage import harmonize_taxonomy

    builder.tables["labels"], n = exclude_unstored(labels, store_terms, set(pre.column("case_id").to_pylist()),
                                                   harmonize_taxonomy(builder.ctx))
    if n:
        log.info("release: %d present label(s) are not in their stores (lost in resampling): excluded", n)
    return n
