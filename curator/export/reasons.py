"""Why an exported case lacks a requested term, in words true of it: not "holds no brain_edema"
when the case holds it but QC excluded its label (``--no-qc-filter`` exports it), or when the
label sits on another sequence of the study than the first channel, whose labels are exported
(its own label rejected at ingest: a t2f not on the seg's grid)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

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
    the case holds none of them."""
    said: list[str] = []
    rest = list(missing)
    if view is not None and view.labels_excluded(case.case_id):
        unfiltered = usable_terms(store, parts, layers, (), view.labels_absent(case.case_id))
        qc = [t for t in rest if term_parts(t, parts[t], unfiltered, tax)]
        if qc:
            layer = sorted({x for p, x in view.labels_excluded(case.case_id) if any(p in parts[t] for t in qc)})
            said.append(f"QC excluded its {', '.join(qc)} label ({', '.join(layer)} layer; the labels table's "
                        "qc_reason says why): --no-qc-filter (qc_filter=False) exports it anyway")
            rest = [t for t in rest if t not in qc]
    if rest and channels:
        on = {t: [c.sequence or c.case_id for c, s in channels if _holds(c, s, t, parts, layers, view, tax)]
              for t in rest}
        elsewhere = [t for t in rest if on[t]]
        if elsewhere:
            seqs = sorted({q for t in elsewhere for q in on[t]})
            said.append(f"its {case.sequence} case (the first channel, whose labels are exported) holds no "
                        f"{', '.join(elsewhere)}{_ingest_problem(release, case.case_id)}, but its {', '.join(seqs)} "
                        f"{'case does' if len(seqs) == 1 else 'cases do'}: list {seqs[0]} first in --channels to export its labels")
            rest = [t for t in rest if t not in elsewhere]
    if rest:
        said.append(f"holds no {', '.join(rest)}")
    return "; ".join(said)


def _holds(case: ExportCase, store: CaseStore, term: str, parts: Mapping[str, Sequence[str]], layers: Sequence[str],
           view: TrainingView | None, tax: Taxonomy) -> bool:
    excluded = view.labels_excluded(case.case_id) if view is not None else frozenset()
    absent = view.labels_absent(case.case_id) if view is not None else frozenset()
    held = usable_terms(store, {term: parts[term]}, layers, excluded, absent)
    return bool(term_parts(term, parts[term], held, tax))


def _ingest_problem(release: Release | None, case_id: str) -> str:
    """`` (ingest rejected its label: <kind> — <message>)`` when the release's problems table
    says ingest rejected ``case_id``'s label; else empty."""
    if release is None or "problems" not in release.table_names():
        return ""
    quoted = case_id.replace("'", "''")
    rows = release.sql(f"select kind, message from problems where case_id = '{quoted}' and stage = 'ingest' "
                       "order by kind").fetchall()
    if not rows:
        return ""
    kind, message = rows[0]
    return f" (ingest rejected its label: {kind} — {str(message).split('. What to do')[0]})"
