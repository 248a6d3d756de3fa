"""Which of the selected cases an export takes, and what it says when it can take none.

* A test case of a dataset that provides none of the requested terms is left out
  (:func:`leave_out_foreign_tests`): nobody labelled its image for them, so it can never be
  scored, and it would bring its dataset's licence into the export.
* An export none of whose selected cases holds the terms fails with advice that can help
  (:func:`no_case_error`): the label layers outside the requested ones that hold the terms in
  those cases, and ``--partial`` only when it is not given and would keep a case.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence

from curator.errors import ReleaseError
from curator.export.channels import Study
from curator.export.common import ExportCase, ExportReport
from curator.release.query import Release
from curator.release.training import TrainingView, held_elsewhere, layer_advice, with_parts


def providing_datasets(release: Release, terms: Sequence[str], layers: Sequence[str]) -> set[str]:
    """The datasets that provide at least one of ``terms`` (or a part of one, :func:`with_parts`):
    the ``labels`` table marks it annotated by the dataset (a true negative included), or a case
    of the dataset holds it in one of ``layers`` (``store_terms``)."""
    tax = release.taxonomy
    wanted = {p for t in terms for p in with_parts(tax, t)}
    names = release.table_names()
    out: set[str] = set()
    if "labels" in names and {"annotated", "dataset"} <= set(release.sql("select * from labels limit 0").columns):
        out |= {d for d, t in release.sql("select distinct dataset, term_id from labels where annotated").fetchall()
                if t in wanted}
    if "store_terms" in names:
        out |= {d for d, t, layer in release.sql("select distinct dataset, term_id, layer from store_terms")
                .fetchall() if t in wanted and layer in layers}
    return out


def leave_out_foreign_tests(release: Release, studies: Sequence[Study], terms: Sequence[str],
                            layers: Sequence[str], report: ExportReport) -> list[Study]:
    """``studies`` without the test cases of datasets that provide none of ``terms``
    (:func:`providing_datasets`): such a case is an image nobody labelled for the terms (MSD
    Spleen's unlabelled test image in a kidney export) — it can never be scored, and it would
    bring its dataset's licence into the export. ``report`` names each (``skipped``) and counts them."""
    tests = [s for s in studies if s.cases[0].split == "test"]
    if not tests:
        return list(studies)
    keep = providing_datasets(release, terms, layers)
    left: collections.Counter[str] = collections.Counter()
    for s in tests:
        c = s.cases[0]
        if c.dataset not in keep:
            report.skipped[c.case_id] = (f"a test case of {c.dataset}, which annotates none of {list(terms)} (nor a "
                                         "part of one): it could not be scored")
            left[c.dataset] += 1
    if not left:
        return list(studies)
    report.notes.append(f"{sum(left.values())} test case(s) left out: their datasets annotate none of the terms ("
                        + ", ".join(f"{d}: {n}" for d, n in sorted(left.items()))
                        + "), so they could not be scored and would bring in those datasets' licences "
                        "(`skipped` names them)")
    return [s for s in studies if not (s.cases[0].split == "test" and s.cases[0].dataset not in keep)]


_LIST_FIRST = re.compile(r"list (\S+) first in --channels")  # in a skipped study's reason (export/reasons.py)


def no_case_error(release: Release, cases: Sequence[ExportCase], terms: list[str], layers: Sequence[str],
                  partial: bool, view: TrainingView, what: str = "case",
                  skipped: Mapping[str, str] | None = None) -> ReleaseError:
    """The error of an export in which none of the selected ``cases`` (``what``: "training case")
    could be written with the terms (every one; with ``partial`` one at least): the sequence to
    list first in ``--channels`` when another sequence of the studies holds them (``skipped``: the
    report's reasons), the layers outside ``layers`` that hold the terms in those cases (pseudo
    labels, say) and ``--partial`` only when it is not given and would keep a case — not advice
    that cannot help."""
    ids = {c.case_id for c in cases}
    elsewhere, some = held_elsewhere(release, ids, terms, layers, view)
    n = len(ids)
    noun = what + ("" if n == 1 else "s")
    detail = (f"no selected {what} holds "
              + (f"{terms[0]!r}" if len(terms) == 1 else f"any of the terms {terms}" if partial
                 else f"every term of {terms}") + f" in layers {list(layers)}")
    advice = []
    first = collections.Counter(m.group(1) for why in (skipped or {}).values()
                                for m in [_LIST_FIRST.search(why)] if m is not None)
    if first:  # the first channel's labels are exported: another sequence of the studies holds the terms
        seq, k = first.most_common(1)[0]
        name, why = next((c, w) for c, w in (skipped or {}).items() if f"list {seq} first" in w)
        detail += (f": the first channel's labels are exported, and the {seq} case of {k} "
                   f"stud{'y' if k == 1 else 'ies'} holds them (e.g. {name}: {why})")
        advice.append(f"list {seq} first in --channels (e.g. --channels {seq},...): the export takes the "
                      "labels, and the grid, of the first channel")
    if elsewhere:
        advice.append(layer_advice(elsewhere, n, noun, layers, "--layers {}"))
    if not partial and some:
        advice.append(f"pass --partial: {some} of them hold some of the terms (their other terms are then "
                      "marked unknown)")
    if not advice:
        advice.append("check --terms and --where against `store_terms` (the terms each case holds, per layer)")
    return ReleaseError("release_error", detail, path=str(release.path), remedy="; or ".join(advice))
