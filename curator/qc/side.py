"""Laterality check: a left structure must lie on the patient's left.

A dataset whose left/right mapping is swapped, or a scan whose header flips the patient,
gives labels that are perfect in shape and wrong in side — no shape feature sees it. Per
(case, layer):

* a **pair** (left kidney and right kidney both labelled): the left one's centroid must lie
  to the patient's left of the right one's (RAS x smaller; RAS +x is the patient's right),
  by more than ``-side_margin_mm``;
* a **single** lateral label: its centroid must not lie more than ``side_margin_mm`` on the
  other side of the body's centre (the preprocess body mask; label-only cases are not
  checked this way).

``lateral_mm`` in the ``qc`` table is how far the label lies towards its own side (of its
partner's centroid, else of the body centre); negative is the wrong side.

>>> rows = [{"case_id": "c", "origin": "original", "term_id": "kidney_left", "centroid_mm": [60.0, 0, 0]},
...         {"case_id": "c", "origin": "original", "term_id": "kidney_right", "centroid_mm": [-55.0, 0, 0]}]
>>> [(r["lateral_mm"], r["wrong_side"]) for r in check_sides(rows, 10.0)]
[(-115.0, True), (-115.0, True)]
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

from curator.errors import InputError
from curator.taxonomy import load_taxonomy
from curator.taxonomy.model import Taxonomy


def side_of(term_id: str, tax: Taxonomy | None = None) -> tuple[str | None, str | None]:
    """``(laterality, partner term id)`` of a term in ``tax`` (the bundled taxonomy by default):
    the partner is the other side in a both-sides parent's partition (kidney_left → kidney_right)."""
    return _side_of(tax or load_taxonomy(), term_id)


@functools.lru_cache(maxsize=4096)
def _side_of(tax: Taxonomy, term_id: str) -> tuple[str | None, str | None]:
    t = tax.get(term_id)
    if t is None or t.laterality not in ("left", "right"):
        return None, None
    for parent in t.part_of:
        p = tax.get(parent)
        for part in p.partitions if p is not None else ():
            others = [o for o in part if o != term_id]
            if len(part) == 2 and term_id in part and (u := tax.get(others[0])) is not None \
                    and u.laterality not in (None, t.laterality):
                return t.laterality, u.id
    return t.laterality, None


def check_sides(rows: list[dict[str, Any]], margin_mm: float | None, tax: Taxonomy | None = None,
                ) -> list[dict[str, Any]]:
    """Add ``lateral_mm`` and ``wrong_side`` (and ``side_reason`` when wrong) to feature rows
    (each needs case_id, origin, term_id, centroid_mm; ``body_x_mm`` when known); sides and
    partners come from ``tax`` (the pipeline's taxonomy; the bundled one by default)."""
    by_case: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        r.update(lateral_mm=None, wrong_side=None)
        if r.get("centroid_mm") is not None:
            by_case[(r["case_id"], r["origin"])][r["term_id"]] = r
    if margin_mm is None:
        return rows
    tax = tax or load_taxonomy()
    for terms in by_case.values():
        for tid, r in terms.items():
            side, partner = side_of(tid, tax)
            if side is None:
                continue
            sign = -1.0 if side == "left" else 1.0  # RAS: the patient's left is -x
            x = float(r["centroid_mm"][0])
            other = terms.get(partner) if partner else None
            if other is not None:
                ref, what = float(other["centroid_mm"][0]), f"the {tax.term(other['term_id']).name}"
            elif r.get("body_x_mm") is not None:
                ref, what = float(r["body_x_mm"]), "the body's centre"
            else:  # a label-only case holding one side: nothing to compare its position with
                r["side_unchecked"] = (f"side not checked: no {tax.term(partner).name if partner else 'partner'} "
                                       "label and no image (body) to compare its position with")
                continue
            r["lateral_mm"] = round(sign * (x - ref), 3)
            r["wrong_side"] = r["lateral_mm"] < -margin_mm
            if r["wrong_side"]:
                r["side_reason"] = (f"side: the {tax.term(tid).name} lies {-r['lateral_mm']:.0f} mm to the patient's "
                                    f"{'right' if side == 'left' else 'left'} of {what} (left/right swapped in the "
                                    "dataset's mapping, or a flipped header?)")
    return rows


def swapped_datasets(rows: list[dict[str, Any]], min_labels: int = 2) -> list[tuple[str, InputError]]:
    """One ``sides_swapped`` problem per dataset most of whose side-checked labels (and at least
    ``min_labels``) lie on the wrong side: a mapping that reads the dataset's L/R the wrong way
    round (names after the image's or viewer's left, not the patient's), not a few bad cases.

    >>> rows = [{"dataset": "D", "case_id": c, "wrong_side": w} for c, w in (("a", True), ("b", True), ("b", None))]
    >>> [(ds, e.kind) for ds, e in swapped_datasets(rows)]
    [('D', 'sides_swapped')]
    """
    checked: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("wrong_side") is not None:
            checked[r["dataset"]].append(r)
    out = []
    for ds, rs in sorted(checked.items()):
        wrong = [r for r in rs if r["wrong_side"]]
        if len(wrong) >= min_labels and 2 * len(wrong) > len(rs):
            cases = len({r["case_id"] for r in wrong})
            out.append((ds, InputError(
                "sides_swapped", f"{len(wrong)} of the {len(rs)} left/right labels of {ds} whose side was checked "
                f"({cases} case(s)) lie on the patient's other side; qc excluded them", path=f"{ds}:",
                remedy="open a case in a viewer; if the dataset names its sides after the image's (viewer's) left "
                "rather than the patient's, swap each left/right pair in labels.values or labels.structures of its "
                "dataset YAML and run again")))
    return out
