"""Laterality check: a left structure must lie on the patient's left.

A dataset whose left/right mapping is swapped, or a scan whose header flips the patient,
gives labels that are perfect in shape and wrong in side — no shape feature sees it. Per
(case, layer):

* a **pair** (left kidney and right kidney both labelled): the left one's centroid must lie
  to the patient's left of the right one's (RAS x smaller; RAS +x is the patient's right),
  by more than ``-side_margin_mm``;
* a **single** lateral label: its centroid must not lie more than ``side_margin_mm`` on the
  other side of the body's centre (the preprocess body mask; label-only cases are not
  checked this way);
* a **non-mirrored pair** (:data:`LEFT_OF`: the left and right ventricles, atria, liver lobes):
  the left one lies to the patient's left of the right one, but not of the midline (the right
  ventricle often lies left of it), so the pair test alone: a lone one is not checked.

``lateral_mm`` in the ``qc`` table is how far the label lies towards its own side (of its
partner's centroid, else of the body centre); negative is the wrong side.

When most of a dataset's left/right labels lie on the wrong side, :func:`swapped_datasets` tells
the two causes apart by the unpaired organs that lie on one side (:data:`USUAL_SIDE`: liver and
gallbladder right, spleen and stomach left): a flipped header mirrors them too (the liver on the
patient's left), a mapping that names the sides the wrong way round leaves them where they are.

>>> rows = [{"case_id": "c", "origin": "original", "term_id": "kidney_left", "centroid_mm": [60.0, 0, 0]},
...         {"case_id": "c", "origin": "original", "term_id": "kidney_right", "centroid_mm": [-55.0, 0, 0]}]
>>> [(r["lateral_mm"], r["wrong_side"]) for r in check_sides(rows, 10.0)]
[(-115.0, True), (-115.0, True)]
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from curator.errors import InputError
from curator.taxonomy import load_taxonomy
from curator.taxonomy.model import Taxonomy

# Structures named left and right that are no mirror pair about the midline (normal anatomy,
# situs solitus): the left one's centroid lies to the patient's left of the right one's — the
# left ventricle 35-40 mm left of the right ventricle in short-axis cine MR — though either may lie
# left of the midline, so a lone one says nothing. The taxonomy gives them no laterality (they
# are no left/right copies of one structure); a dataset YAML swapping them (ACDC codes 1 = RV,
# M&Ms 1 = LV) is what this finds.
LEFT_OF = {"left_ventricle": "right_ventricle", "left_atrium": "right_atrium", "liver_left_lobe": "liver_right_lobe"}
_RIGHT_OF = {right: left for left, right in LEFT_OF.items()}


def side_of(term_id: str, tax: Taxonomy | None = None) -> tuple[str | None, str | None]:
    """``(laterality, partner term id)`` of a term in ``tax`` (the bundled taxonomy by default):
    the partner is the other side in a both-sides parent's partition (kidney_left → kidney_right),
    or the other of a :data:`LEFT_OF` pair (left_ventricle → right_ventricle; :func:`mirror_pair`
    is False for those).

    >>> side_of("right_ventricle"), side_of("kidney_left"), side_of("liver")
    (('right', 'left_ventricle'), ('left', 'kidney_right'), (None, None))
    """
    return _side_of(tax or load_taxonomy(), term_id)


def mirror_pair(term_id: str) -> bool:
    """Whether a sided term is one of a mirror pair about the midline, so that a lone one is
    placed against the body's centre (False for the :data:`LEFT_OF` pairs)."""
    return term_id not in LEFT_OF and term_id not in _RIGHT_OF


@functools.lru_cache(maxsize=4096)
def _side_of(tax: Taxonomy, term_id: str) -> tuple[str | None, str | None]:
    for side, pairs in (("left", LEFT_OF), ("right", _RIGHT_OF)):
        if term_id in pairs and tax.get(term_id) is not None and tax.get(pairs[term_id]) is not None:
            return side, pairs[term_id]
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
            elif not mirror_pair(tid):  # the right ventricle may lie left of the midline: only its pair tells
                continue
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


# Unpaired organs on one side of the body in normal anatomy (situs solitus; RAS +x is the
# patient's right): a header that flips the patient moves them to the other side, a dataset
# whose left/right names are swapped does not.
USUAL_SIDE = {"liver": "right", "gallbladder": "right", "spleen": "left", "stomach": "left"}


def mirrored_anatomy(terms: Mapping[str, Mapping[str, Any]], margin_mm: float = 10.0) -> bool | None:
    """Whether one case's (one layer's) unpaired lateral organs (:data:`USUAL_SIDE`; ``terms``:
    term id → row with ``centroid_mm`` and ``body_x_mm``) lie mirrored (``True``), on their usual
    sides (``False``), or it cannot be told (``None``: none labelled, within ``margin_mm`` of
    each other, or disagreeing). Right-sided organs are placed against left-sided ones; a case
    holding organs of one side only, against the body's centre.

    >>> mirrored_anatomy({"liver": {"centroid_mm": [-57.0, 0, 0]}, "spleen": {"centroid_mm": [120.0, 0, 0]}})
    True
    >>> mirrored_anatomy({"liver": {"centroid_mm": [60.0, 0, 0], "body_x_mm": 0.0}})
    False
    """
    xs = {t: float(r["centroid_mm"][0]) for t, r in terms.items() if t in USUAL_SIDE and r.get("centroid_mm") is not None}
    right = [x for t, x in xs.items() if USUAL_SIDE[t] == "right"]
    left = [x for t, x in xs.items() if USUAL_SIDE[t] == "left"]
    if right and left:
        towards = [xr - xl for xr in right for xl in left]  # > 0: the right-sided organ to the patient's right
    else:
        body = next((r["body_x_mm"] for r in terms.values() if r.get("body_x_mm") is not None), None)
        towards = [] if body is None else [(x - body) * (1.0 if USUAL_SIDE[t] == "right" else -1.0)
                                           for t, x in xs.items()]
    usual, mirrored = sum(d > margin_mm for d in towards), sum(d < -margin_mm for d in towards)
    return True if mirrored and not usual else False if usual and not mirrored else None


def lateral_axis(orientation: str | None) -> int | None:
    """The array axis that runs left–right in a header of this orientation code ('RAS' → 0, 'PIR' → 2)."""
    hits = [i for i, c in enumerate(orientation or "") if c in "LR"]
    return hits[0] if len(hits) == 1 else None


def _flip_fix(axes: set[int | None]) -> str:
    """The ``fixes`` that reverse the arrays along their left–right axis, in the dataset YAML's syntax."""
    if len(axes) == 1 and None not in axes:
        a = next(iter(axes))
        return (f"fixes: {{image_flip: {{axes: [{a}]}}, label_flip: {{axes: [{a}]}}}} in its dataset YAML (array axis "
                f"{a} runs left–right in these cases' headers; the label takes the image's axis when it is stored in "
                "the image's voxel order)")
    return ("fixes: {image_flip: {axes: [A]}, label_flip: {axes: [A]}} in its dataset YAML, A being the array axis "
            "that runs left–right in each case's header (the place of L or R in cases.orientation; these cases "
            "differ, so one fix per group of files, each with a `when`)")


def swapped_datasets(rows: list[dict[str, Any]], min_labels: int = 2,
                     orientations: Mapping[str, str | None] | None = None,
                     margin_mm: float = 10.0, excluded: str = "qc excluded them",
                     tax: Taxonomy | None = None) -> list[tuple[str, InputError]]:
    """One ``sides_swapped`` problem per dataset most of whose side-checked labels (and at least
    ``min_labels``) lie on the wrong side: a mapping that reads the dataset's L/R the wrong way
    round (names after the image's or viewer's left, not the patient's), or a header that flips
    the patient, not a few bad cases.

    Which of the two it is, the unpaired organs of those cases say (:func:`mirrored_anatomy`):
    mirrored too — the image is mirrored, and the remedy reverses the arrays (``image_flip`` and
    ``label_flip`` along the axis ``orientations`` (case id → ``cases.orientation``) gives);
    where they usually lie — swap the names; neither known, or the cases disagreeing — both.
    ``excluded`` says what became of the labels (``sources check``, before any run: qc will);
    the message names the structures on the wrong side by their names in ``tax`` (the bundled
    taxonomy by default).

    >>> rows = [{"dataset": "D", "case_id": c, "wrong_side": w} for c, w in (("a", True), ("b", True), ("b", None))]
    >>> [(ds, e.kind) for ds, e in swapped_datasets(rows)]
    [('D', 'sides_swapped')]
    """
    checked: dict[str, list[dict[str, Any]]] = defaultdict(list)
    layers: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r.get("wrong_side") is not None:
            checked[r["dataset"]].append(r)
        if r.get("term_id") in USUAL_SIDE:
            layers[(r["case_id"], r.get("origin") or "")][r["term_id"]] = r
    verdicts: dict[str, set[bool]] = defaultdict(set)
    for (cid, _), terms in layers.items():
        v = mirrored_anatomy(terms, margin_mm)
        if v is not None:
            verdicts[cid].add(v)
    out = []
    for ds, rs in sorted(checked.items()):
        wrong = [r for r in rs if r["wrong_side"]]
        if len(wrong) >= min_labels and 2 * len(wrong) > len(rs):
            cases = sorted({r["case_id"] for r in wrong})
            said = [next(iter(verdicts[c])) if len(verdicts[c]) == 1 else None for c in cases]
            n_mirrored, n_usual = said.count(True), said.count(False)
            detail = (f"{len(wrong)} of the {len(rs)} left/right labels of {ds} whose side was checked "
                      f"({len(cases)} case(s)) lie on the patient's other side ({_which(wrong, rs, tax)})")
            names = ("swap each left/right pair in labels.values or labels.structures of its dataset YAML and run "
                     "again" + (" (ACDC codes 1 right ventricle, 3 left ventricle; M&Ms, M&Ms-2 and CMRxMotion code 1 "
                                "left ventricle, 3 right ventricle: a YAML copied from one for the other swaps them)"
                                if {"left_ventricle", "right_ventricle"} & {r.get("term_id") for r in wrong} else ""))
            flip = _flip_fix({lateral_axis((orientations or {}).get(c)) for c in cases})
            if n_mirrored and not n_usual:
                detail += (f", and so do the unpaired organs (liver, spleen, stomach, gallbladder) in {n_mirrored} of "
                           "those cases: the whole patient is mirrored (a flipped header), not only the names; "
                           f"{excluded}")
                remedy = (f"do not swap the left/right names (that would hide the mirror); reverse the image and label "
                          f"arrays with {flip}, or correct the headers at the source, and run again")
            elif n_usual and not n_mirrored:
                detail += (f"; the unpaired organs (liver, spleen, stomach, gallbladder) lie on their usual sides in "
                           f"{n_usual} of those cases, so the image is not mirrored: the names are; {excluded}")
                remedy = ("open a case in a viewer; if the dataset names its sides after the image's (viewer's) left "
                          f"rather than the patient's, {names}")
            else:
                detail += (f"; {excluded}. The unpaired organs (liver, spleen, stomach, gallbladder) do not tell "
                           "whether the names or the image are mirrored" + (" (the cases disagree)" if n_mirrored else ""))
                remedy = ("open a case in a viewer: if the liver lies on the patient's left (the whole patient "
                          f"mirrored: a flipped header), reverse the image and label arrays with {flip}; if only the "
                          "left/right names are wrong (the dataset names its sides after the image's left), "
                          f"{names}")
            out.append((ds, InputError("sides_swapped", detail, path=f"{ds}:", remedy=remedy)))
    return out


def _which(wrong: list[dict[str, Any]], checked: list[dict[str, Any]], tax: Taxonomy | None) -> str:
    """Which structures lie on the wrong side, each with how many of its checked labels:
    ``left ventricle 3 of 3, right ventricle 3 of 3`` (which pair the YAML swaps)."""
    tax = tax or load_taxonomy()
    of = Counter(r.get("term_id") for r in checked)
    said = Counter(r.get("term_id") for r in wrong)
    names = {tid: t.name if (t := tax.get(str(tid))) is not None else str(tid) for tid in said}
    return ", ".join(f"{names[tid]} {n} of {of[tid]}" for tid, n in sorted(said.items(), key=lambda kv: (-kv[1],
                                                                                                        names[kv[0]])))
