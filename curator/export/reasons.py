"""Why an exported case lacks a requested term, in words true of it: not "holds no brain_edema"
when the case holds it but QC excluded its label (``--no-qc-filter`` exports it), or when the
label sits on another sequence of the study than the first channel, whose labels are exported
(its own label rejected at ingest: a t2f not on the seg's grid)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from curator.release.studies import label_on_other_channel
from curator.release.training import TrainingView, term_parts, usable_terms

if TYPE_CHECKING:
    from curator.export.common import ExportCase
    from curator.release.query import Release
    from curator.store import CaseStore
    from curator.taxonomy.model import Taxonomy


def lacking(case: ExportCase, store: CaseStore, missing: Sequence[str], parts: Mapping[str, Sequence[str]],
            layers: Sequence[str], view: TrainingView | None, tax: Taxonomy,
            channels: Sequence[tuple[ExportCase, CaseStore]] = (), release: Release | None = None) -> str:
    """Why ``case`` (its ``store``) lacks the ``missing`` terms: QC excluded their labels, another
    channel of the study holds them (``channels``: the other sequences' cases and stores), or
    the case holds none of them — saying so when ingest rejected its label (``release``'s
    problems: a ``shape_mismatch`` label is fixable, the anatomy may well be there)."""
    said: list[str] = []
    rest = list(missing)
    rejected = _ingest_problem(release, case.case_id)  # a label ingest refused is why, not the anatomy
    if view is not None and view.labels_excluded(case.case_id):
        unfiltered = usable_terms(store, parts, layers, (), view.labels_absent(case.case_id))
        qc = [t for t in rest if term_parts(t, parts[t], unfiltered, tax)]
        if qc:
            layer = sorted({x for p, x in view.labels_excluded(case.case_id) if any(p in parts[t] for t in qc)})
            said.append(f"QC excluded its {', '.join(qc)} label ({', '.join(layer)} layer; the labels table's "
                        "qc_reason says why): " + ("a test case: without --qc-filter-test (qc_filter_test=False) "
                                                   "it is exported" if case.split == "test" else
                                                   "--no-qc-filter (qc_filter=False) exports it anyway"))
            rest = [t for t in rest if t not in qc]
    if rest and channels:
        on = {t: [c.sequence or c.case_id for c, s in channels if _holds(c, s, t, parts, layers, view, tax)]
              for t in rest}
        elsewhere = [t for t in rest if on[t]]
        if elsewhere:
            seqs = sorted({q for t in elsewhere for q in on[t]})
            said.append(label_on_other_channel(case.sequence, elsewhere, seqs, used="exported", option="--channels",
                                               because=rejected))
            rest = [t for t in rest if t not in elsewhere]
            rejected = ""  # said once
    if rest:
        said.append(f"holds no {', '.join(rest)}{rejected}")
    return "; ".join(said)


# why a requested term is unknown in an exported case (curator_export.json's partial.unknown_by_reason)
UNKNOWN = {
    "not_annotated": "the case's dataset does not annotate it (no label of it or of parts completing it)",
    "qc_excluded": "the case holds it, but QC excluded its label (--no-qc-filter exports it)",
    "other_layers": "the case holds it only in label layers outside --layers (pseudo labels, say)",
    "label_rejected": "ingest rejected the case's label file, or dropped a structure file of it",
}


def unknown_reasons(case: ExportCase, store: CaseStore, unknown: Sequence[str], parts: Mapping[str, Sequence[str]],
                    layers: Sequence[str], view: TrainingView | None, tax: Taxonomy,
                    release: Release | None = None) -> dict[str, str]:
    """Each of the ``unknown`` terms of ``case`` -> why, one key of :data:`UNKNOWN`: QC excluded
    the label the case holds, the case holds it only in other layers, ingest rejected its label
    (``release``'s problems), or its dataset does not annotate it."""
    from curator.store import LAYERS

    excluded = view.labels_excluded(case.case_id) if view is not None else frozenset()
    absent = view.labels_absent(case.case_id) if view is not None else frozenset()
    unfiltered = usable_terms(store, parts, layers, (), absent) if excluded else {}
    wider = usable_terms(store, parts, LAYERS, excluded, absent)
    rejected = bool(_ingest_problem(release, case.case_id))
    out = {}
    for t in unknown:
        if excluded and term_parts(t, parts[t], unfiltered, tax):
            out[t] = "qc_excluded"
        elif term_parts(t, parts[t], wider, tax):
            out[t] = "other_layers"
        elif rejected:
            out[t] = "label_rejected"
        else:
            out[t] = "not_annotated"
    return out


def terms_usable(case_id: str, store: CaseStore, parts: Mapping[str, Sequence[str]], layers: Sequence[str],
                 view: TrainingView | None, tax: Taxonomy) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """``(held, use)``: the terms of ``parts`` (or their parts) ``store`` holds in ``layers`` (term ->
    layer; labels the training ``view`` excludes or finds absent left out), and each term -> what
    exports it (itself, or the parts completing one of its partitions; empty: not held)."""
    excluded = view.labels_excluded(case_id) if view is not None else frozenset()
    absent = view.labels_absent(case_id) if view is not None else frozenset()
    held = usable_terms(store, parts, layers, excluded, absent)
    return held, {t: term_parts(t, parts[t], held, tax) for t in parts}


def _holds(case: ExportCase, store: CaseStore, term: str, parts: Mapping[str, Sequence[str]], layers: Sequence[str],
           view: TrainingView | None, tax: Taxonomy) -> bool:
    return bool(terms_usable(case.case_id, store, {term: parts[term]}, layers, view, tax)[1][term])


def _ingest_problem(release: Release | None, case_id: str) -> str:
    """`` (ingest rejected its label: <kind> — <message>)`` when the release's problems say ingest
    rejected ``case_id``'s label (harmonize's ``label_rejected`` row marks it; the reason is one of
    ingest's warning or error rows of the case), or `` (ingest dropped a structure file of its label:
    …)`` for a structure mask ingest left out; else empty — not any ingest row of the case (an
    info row such as ``label_reoriented`` or an image's header warning rejects nothing)."""
    if release is None or "problems" not in release.table_names():
        return ""
    quoted = case_id.replace("'", "''")
    rows = release.sql(f"select stage, kind, severity, message from problems where case_id = '{quoted}' "
                       "order by kind, message").fetchall()
    rejected = any(kind == "label_rejected" for _, kind, _, _ in rows)
    ingest = [(kind, str(msg)) for stage, kind, sev, msg in rows if stage == "ingest" and sev in ("warning", "error")]
    dropped = [(kind, msg) for kind, msg in ingest if msg.startswith("structure ") and "was dropped from this case" in msg]
    if rejected and ingest:
        kind, message = next(((k, m) for k, m in ingest if (k, m) not in dropped), ingest[0])
        return f" (ingest rejected its label: {kind} — {message.split('. What to do')[0]})"
    if dropped:
        kind, message = dropped[0]
        return f" (ingest dropped a structure file of its label: {kind} — {message.split('. What to do')[0]})"
    return ""
