"""What an export records for whoever evaluates on it (``curator_export.json``, the MONAI
datalist): which test cases and labels it holds back and why, which test labels it exports
although QC flagged them, per term the cases in which it is unknown by reason, and the datasets
whose label of a term may hold more than the taxonomy's term (``may_include``).

* **The test split is not QC-filtered by default.** The training view leaves out the labels QC
  excluded (:mod:`curator.release.training`), but in the release's ``test`` split only with
  ``qc_filter_test`` (``--qc-filter-test``): dropping the test labels QC flagged — the unusual
  shapes — would silently shrink the official test set towards easy cases. ``test_qc_flagged``
  lists the test labels exported despite a flag; ``test_withheld`` the selected test cases the
  export leaves out or writes without a label, and with ``qc_filter_test`` the test labels QC
  took out, each with why.
* **Mixed meanings** (:func:`may_include_notes`): a term whose taxonomy entry lists
  ``may_include`` (``kidney`` may include ``kidney_mass``) means the organ with its masses in a
  dataset that labels no mass apart (AMOS, TotalSegmentator ...) and the parenchyma beside them
  in one that does (KiTS): one warning per term names the datasets whose label may hold what.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from curator.export.common import ExportCase, ExportReport
from curator.release.query import Release
from curator.release.training import TrainingView, held_terms, with_parts


def test_section(release: Release, report: ExportReport, view: TrainingView, selected: Sequence[ExportCase],
                 dropped: Sequence[tuple[ExportCase, str]], name_of: Mapping[str, str], terms: Sequence[str],
                 layers: Sequence[str], *, qc_filter: bool, qc_filter_test: bool) -> dict[str, Any]:
    """The export file's ``qc_filter_test``, ``test_withheld`` and ``test_qc_flagged``, once the
    ``report`` is renamed (``name_of``: case id -> exported name, of the studies exported):

    * ``test_withheld``: ``{"cases": {name: why}, "labels": {name: [{term, layer, qc_reason}]}}`` —
      the ``selected`` test cases (and ``dropped`` duplicates of the test split) not exported with
      a label, and with ``qc_filter_test`` the labels of the requested terms (or their parts) in
      ``layers`` that QC excluded in the exported test cases;
    * ``test_qc_flagged``: ``{name: [{term, layer, qc_reason}]}`` — the same labels exported all the
      same (``qc_filter`` without ``qc_filter_test``)."""
    from curator.release.studies import study_name

    tests = [c for c in selected if c.split == "test"]
    names = {c.case_id for c in tests} | {study_name(c) for c in tests} | {name_of.get(c.case_id, "") for c in tests}
    cases: dict[str, str] = {k: v for k, v in report.skipped.items() if k in names}
    cases.update({k: f"written without a label (image only, for inference): {why}"
                  for k, why in report.unlabelled.items() if k in names})
    for c, used in dropped:
        if c.split == "test":
            cases[c.case_id] = (f"a duplicate of {used}, which is exported for its group instead (one member per "
                                "group; --with-duplicates exports both)" if used else
                                "a duplicate the keep policy dropped (--with-duplicates exports it)")
    wanted = {p for t in terms for p in with_parts(release.taxonomy, t)}
    written = {c.case_id: name_of.get(c.case_id, c.case_id) for c in tests}
    labelled = set(report.cases)

    def rows(labels: Collection[tuple[str, str]], reasons: Mapping[tuple[str, str], str]) -> list[dict[str, str]]:
        return [{"term": t, "layer": x, "qc_reason": reasons.get((t, x), "")}
                for t, x in sorted(labels) if t in wanted and x in layers]

    flagged: dict[str, list[dict[str, str]]] = {}
    withheld_labels: dict[str, list[dict[str, str]]] = {}
    if qc_filter:
        for cid, name in written.items():
            if name not in labelled and name not in report.unlabelled:
                continue
            if qc_filter_test:
                out = view.labels_excluded(cid)
                got = rows(out, _qc_reasons(release, cid)) if out else []
                if got:
                    withheld_labels[name] = got
            elif name in labelled:
                mine = {(t, x): why for t, x, why in view.test_flagged.get(cid, ())}
                got = rows(mine, mine)
                if got:
                    flagged[name] = got
    if withheld_labels:
        report.notes.append(f"warning: --qc-filter-test left out the labels QC excluded in {len(withheld_labels)} "
                            "test case(s): the test set is no longer the release's (the export's "
                            "test_withheld.labels lists them)")
    if flagged:
        report.notes.append(f"{len(flagged)} test case(s) are exported with labels QC flagged (the test split is "
                            "not QC-filtered unless --qc-filter-test): test_qc_flagged lists them, to score "
                            "them apart if you wish")
    return {"qc_filter_test": qc_filter and qc_filter_test,
            "test_withheld": {"cases": dict(sorted(cases.items())), "labels": withheld_labels},
            "test_qc_flagged": flagged}


def _qc_reasons(release: Release, case_id: str) -> dict[tuple[str, str], str]:
    """(term, layer) -> ``qc_reason`` of the labels QC excluded in ``case_id``."""
    cols = set(release.sql("select * from labels limit 0").columns)
    if "qc_reason" not in cols:
        return {}
    quoted = case_id.replace("'", "''")
    return {(t, x): why or "" for t, x, why in release.sql(
        f"select term_id, layer, qc_reason from labels where case_id = '{quoted}' and qc_decision = 'exclude'"
    ).fetchall()}


def unknown_by_reason(report: ExportReport, terms: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per requested term, the exported cases (with a label) in which it is unknown, by reason
    (:data:`curator.export.reasons.UNKNOWN`); terms known everywhere are left out."""
    counts: dict[str, collections.Counter[str]] = {t: collections.Counter() for t in terms}
    for case in report.cases:
        for t, why in report.unknown_why.get(case, {}).items():
            counts[t][why] += 1
    return {t: dict(sorted(c.items())) for t, c in counts.items() if c}


def may_include_notes(report: ExportReport, terms: Sequence[str]) -> None:
    """Warn once per requested term whose exported labels may hold more in some datasets than the
    taxonomy's term (``report.may_include``, :func:`curator.taxonomy.model.Taxonomy.may_hold`)."""
    for t in terms:
        by = report.may_include.get(t)
        if not by:
            continue
        said = "; ".join(f"{d} may include {', '.join(held)}" for d, held in sorted(by.items()))
        report.notes.append(f"warning: '{t}' may mean different things across the exported datasets — a "
                            f"dataset's {t} label holds what it labels nowhere apart: {said} (the taxonomy's "
                            f"may_include), while a dataset labelling those apart leaves them out of its {t}. "
                            f"Compare and score {t} per dataset, or request the inner terms too (--partial marks "
                            "them unknown inside such labels); the export's may_include lists them")


def check_modalities(release: Release, cases: Sequence[ExportCase], terms: Sequence[str], layers: Sequence[str],
                     view: TrainingView, partial: bool) -> list[str]:
    """The modalities of the ``cases`` an export would write: those holding the ``terms`` (every
    one; with ``partial`` one at least) and the test cases (an image for inference) — not cases
    that hold none of them and would be skipped anyway."""
    held = held_terms(release, [c.case_id for c in cases], terms, layers, view)
    need = len(terms) if not partial else 1
    return sorted({c.modality for c in cases if c.split == "test" or len(held.get(c.case_id, [])) >= need})
