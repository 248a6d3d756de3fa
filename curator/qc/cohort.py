"""Cohort bounds, flags and decisions (SOLF and the IQR baseline) — pure functions over rows.

A cohort is every label of one term in one modality whose volume has the same basis
(normalised by the body volume or by the body size at the label's level, per
``volume_norm``, or absolute millilitres when the case has no image), so normalised and
absolute volumes are never compared; the labels of cine frames whose cardiac phase is known
(``cases.phase``: ED, ES) are split by phase too. Truncated labels (cut by the field
of view) are left out of the bounds and not judged.

>>> rows = [{"case_id": f"c{i}", "term_id": "liver", "modality": "CT", "volume_basis": "body",
...          "norm_volume": 0.02 + 0.0001 * i, "volume_ml": 1500.0, "sphericity": 0.6,
...          "sphericity_mesh": None, "eccentricity": 0.5 + 0.001 * i, "truncated": False}
...         for i in range(50)]
>>> rows[0].update(norm_volume=0.002, eccentricity=0.95)  # a broken label: tiny and elongated
>>> out = judge(rows, QCConfig())
>>> [(r["case_id"], r["decision"]) for r in out if r["decision"] != "include"]
[('c0', 'exclude')]
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np

from curator.qc.config import ALL_FEATURES, QCConfig
from curator.qc.shared import label_units, representative
from curator.qc.side import check_sides
from curator.taxonomy.model import Taxonomy

LABELS = {"volume": "normalised volume", "sphericity": "sphericity", "eccentricity": "eccentricity",
          "detached": "detached share"}
DETACHED_OFFSET = 0.01  # log(d + 1 %): single-piece labels (d = 0) sit at one point
DETACHED_MIN_SCALE = 0.5  # ...and a few stray voxels must not count as an outlier
TAIL_FIT_LARGE = 2000  # cohorts this large use the normal quantile as it is (< 1 % too narrow)


@lru_cache(maxsize=4096)
def tail_factor(n: int, tail: float, sides: int = 2) -> float:
    """``k`` such that, on average, the share ``tail`` of a normal cohort's ``n`` labels lies beyond
    each of ``median ± k·s`` (``s`` = 1.4826·MAD of the same labels) — what the empirical
    ε/2 percentile gives a large cohort (``tail`` = ε/200).

    The plug-in normal quantile (``k = z``) treats the median and MAD of ``n`` labels as the
    cohort's true centre and spread. They are not (the MAD of 20 labels is off by ~25 %), and
    bounds set with them cut off too much on average: at ε = 2, 4.1 % of a clean cohort's
    labels lie beyond a feature's bounds at n = 20, 3.1 % at n = 40, 7.5 % at n = 6, where the
    percentiles promise 2 %. ``k`` is found by Monte Carlo over standard normal cohorts (a fixed
    seed: the same ``k`` in every run) as the quantile of every label's ``|x − median| / s``.
    ``sides`` = 1 counts the upper tail only. ``k`` falls to ``z`` as ``n`` grows (``n`` ≥
    ``TAIL_FIT_LARGE`` returns ``z``).

    >>> z = NormalDist().inv_cdf(0.99)
    >>> round(tail_factor(20, 0.01) / z, 2), round(tail_factor(200, 0.01) / z, 2)
    (1.19, 1.02)
    """
    z = NormalDist().inv_cdf(1.0 - tail)
    if n >= TAIL_FIT_LARGE or n < 2:  # one label has no spread to correct
        return z
    rng = np.random.default_rng(20261204)
    x = rng.standard_normal((max(200, 400_000 // n), n))  # ≈ 400k labels: ≈ 0.02 s per cohort size
    med = np.median(x, axis=1, keepdims=True)
    s = 1.4826 * np.median(np.abs(x - med), axis=1, keepdims=True)
    r = (np.abs(x - med) if sides == 2 else x - med) / s
    return max(z, float(np.quantile(r, 1.0 - sides * tail)))


@dataclass(frozen=True)
class Override:
    """A person's decision on one label: re-include (or exclude) it whatever the filter says."""

    case_id: str
    term_id: str
    origin: str | None
    action: str  # include | exclude
    reason: str
    reviewer: str | None = None  # who decided (as the file gives it: initials, a role)
    date: dt.date | None = None  # when
    row: int = field(default=0, compare=False)  # its row in the override file (1-based; 0: not from a file)

    @property
    def said(self) -> str:
        """The decision as ``qc.reason`` and ``curator diff`` give it: ``override include (AB,
        2024-06-01): horseshoe kidney``."""
        who = ", ".join(x for x in (self.reviewer, self.date.isoformat() if self.date else None) if x)
        return f"override {self.action}{f' ({who})' if who else ''}: {self.reason or 'no reason given'}"

    def matches(self, row: Mapping[str, Any]) -> bool:
        return (row["case_id"] == self.case_id and row["term_id"] == self.term_id
                and (self.origin is None or row.get("origin") == self.origin))


VOLUME_COLUMNS = {"body": "norm_volume", "section": "norm_volume_section", "absolute": "volume_ml"}
# the volumes are the store grid's (qc measures the stores): an original label's labels.volume_ml is its source's
VOLUME_NAMES = {"body": "normalised volume", "section": "volume / body size", "absolute": "store-grid volume (ml)"}


def volume_basis(row: Mapping[str, Any], cfg: QCConfig) -> str:
    """The volume basis a row is judged on: ``cfg.volume_norm`` when the row has that normalised
    volume (a case with an image), else ``absolute`` (millilitres)."""
    return cfg.volume_norm if _num(row.get(VOLUME_COLUMNS[cfg.volume_norm])) is not None else "absolute"


def feature_values(row: Mapping[str, Any], cfg: QCConfig) -> dict[str, float | None]:
    """The three SOLF features of a row: volume (normalised per ``cfg.volume_norm`` when the case
    has a body, else millilitres), sphericity (faces or mesh, per ``cfg``), eccentricity."""
    vol = row.get(VOLUME_COLUMNS[volume_basis(row, cfg)])
    sph = row.get("sphericity_mesh") if cfg.sphericity == "mesh" else row.get("sphericity")
    lcf = _num(row.get("largest_component_fraction"))
    return {"volume": _num(vol), "sphericity": _num(sph), "eccentricity": _num(row.get("eccentricity")),
            "detached": None if lcf is None else max(0.0, 1.0 - lcf)}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if np.isfinite(f) else None


def cohort_key(row: Mapping[str, Any], phase: str | None = None) -> str:
    """``term/modality/volume basis``; with the case's cardiac ``phase`` (``cases.phase``),
    ``term/modality/phase/volume basis``: an end-systole ventricle is about half its end-diastole
    volume, so the two phases mixed in one cohort made its bounds span both.

    >>> row = {"term_id": "left_ventricle", "modality": "MR", "volume_basis": "body"}
    >>> cohort_key(row), cohort_key(row, "ES")
    ('left_ventricle/MR/body', 'left_ventricle/MR/ES/body')
    """
    phase_part = f"{phase}/" if phase else ""
    return f"{row['term_id']}/{row.get('modality') or '?'}/{phase_part}{row.get('volume_basis') or 'absolute'}"


def percentile_bounds(values: Iterable[float], epsilon: float) -> tuple[float, float]:
    """UKBOB Eq. (1): (P_{ε/2}, P_{100−ε/2}) with linear interpolation between order statistics."""
    v = np.asarray(list(values), dtype=np.float64)
    lo, hi = np.percentile(v, [epsilon / 2, 100.0 - epsilon / 2])
    return float(lo), float(hi)


def _to_line(feature: str, v: np.ndarray) -> np.ndarray:
    """Map a feature onto the real line: log for volumes, logit for the (0, 1) shape ratios."""
    if feature == "volume":
        return np.asarray(np.log(np.clip(v, 1e-12, None)), dtype=np.float64)
    if feature == "detached":
        return np.asarray(np.log(np.clip(v, 0, None) + DETACHED_OFFSET), dtype=np.float64)
    c = np.clip(v, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(c / (1 - c)), dtype=np.float64)


def _from_line(feature: str, t: float) -> float:
    if feature == "volume":
        return float(np.exp(t))
    if feature == "detached":
        return float(max(0.0, np.exp(t) - DETACHED_OFFSET))
    return float(1.0 / (1.0 + np.exp(-t)))


def normal_bounds(values: Iterable[float], epsilon: float, feature: str) -> tuple[float, float]:
    """The same percentiles estimated from a robust location-scale fit (median, 1.4826·MAD) of the
    feature on the real line (log volume, logit sphericity/eccentricity).

    A cohort of N labels only resolves the ε/2 percentile empirically when N·ε/200 labels lie
    beyond it; below that the empirical bound is just the cohort's most extreme label (so a
    single broken label *is* the bound). The fit extrapolates the tails from the bulk instead,
    and a few broken labels barely move the median and MAD. The bounds lie ``tail_factor(N)``
    MADs out, not the plug-in ``z``: on average ε/200 of a clean cohort lies beyond each, however
    small the cohort (see :func:`tail_factor`).
    """
    v = np.asarray(list(values), dtype=np.float64)
    if epsilon <= 0:
        return float("-inf"), float("inf")
    t = _to_line(feature, v)
    med = float(np.median(t))
    mad = 1.4826 * float(np.median(np.abs(t - med)))
    if feature == "detached":  # one-sided: only too much detached matters
        return 0.0, _from_line(feature, med + tail_factor(len(v), epsilon / 200.0, sides=1)
                               * max(mad, DETACHED_MIN_SCALE))
    if mad <= 0:
        return percentile_bounds(v, epsilon)
    k = tail_factor(len(v), epsilon / 200.0)
    return _from_line(feature, med - k * mad), _from_line(feature, med + k * mad)


def iqr_bounds(values: Iterable[float], k: float) -> tuple[float, float]:
    """Tukey fences: (Q1 − k·IQR, Q3 + k·IQR)."""
    v = np.asarray(list(values), dtype=np.float64)
    q1, q3 = np.percentile(v, [25.0, 75.0])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def estimator(cfg: QCConfig, n: int) -> str:
    """How a SOLF cohort of ``n`` labels gets its percentiles: ``empirical`` or ``fitted``."""
    if cfg.percentiles == "empirical" or (cfg.percentiles == "auto" and n * cfg.epsilon / 200.0 >= cfg.min_tail):
        return "empirical"
    return "fitted"


def _bounds(values: list[float], cfg: QCConfig, feature: str) -> tuple[float | None, float | None]:
    if cfg.method == "solf" and feature in cfg.features:
        if estimator(cfg, len(values)) == "empirical":
            lo, hi = percentile_bounds(values, cfg.epsilon)
            return (0.0 if feature == "detached" else lo), hi
        return normal_bounds(values, cfg.epsilon, feature)
    if cfg.method == "iqr" and feature in cfg.iqr_features:
        return iqr_bounds(values, cfg.iqr_k)
    return None, None


def reference(members: list[dict[str, Any]], min_cohort: int, copies: Collection[str] = ()) -> list[dict[str, Any]]:
    """The labels of a cohort that set its bounds: untruncated ones, not of a scan dedup dropped
    as a copy (the same label twice would count double), and of them the people's labels
    (``original``, ``revised``) when there are ``min_cohort`` of them — pseudo labels are then
    judged against those, not against each other; otherwise every such label."""
    complete = complete_labels(members, copies)
    human = [r for r in complete if r.get("origin") != "pseudo"]
    return human if len(human) >= min_cohort else complete


def complete_labels(members: list[dict[str, Any]], copies: Collection[str] = ()) -> list[dict[str, Any]]:
    """The labels of a cohort the field of view did not cut, without the scans dedup dropped as copies."""
    return [r for r in members if not r.get("truncated") and r.get("case_id") not in copies]


def judge(rows: list[dict[str, Any]], cfg: QCConfig, overrides: Iterable[Override] = (),
          tax: Taxonomy | None = None, copies: Collection[str] = (),
          shared: Mapping[str, str] | None = None, phases: Mapping[str, str | None] | None = None,
          ) -> list[dict[str, Any]]:
    """Add bounds, out-of-bounds flags and a decision with its reason to every feature row
    (and the laterality check of :mod:`curator.qc.side` with ``tax``, the pipeline's taxonomy:
    a label on the wrong side is excluded). The bounds come from each cohort's
    :func:`reference` labels (``copies``: the case ids dedup dropped); every label is judged.
    ``shared`` (:func:`curator.qc.shared.shared_label_keys`) names the cases whose original label
    is one file of their study: such a label is one cohort member, judged once, and each of its
    cases' rows gets that one verdict (an override of one of them decides them all). ``phases``:
    case id -> its cardiac phase (``cases.phase``), which splits the cohorts (:func:`cohort_key`)."""
    phases = phases or {}
    rows = check_sides([dict(r) for r in rows], cfg.side_margin_mm, tax)
    for r in rows:
        r["volume_basis"] = volume_basis(r, cfg)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[cohort_key(r, phases.get(r["case_id"]))].append(r)
    out: list[dict[str, Any]] = []
    fellows: list[set[str]] = []  # per row of out: the cases sharing its label (overrides decide them all)
    for key, members in sorted(groups.items()):
        units = label_units(members, shared or {})
        reps = [representative(u, copies) for u in units]
        complete = reference(reps, cfg.min_cohort, copies)
        feats = [feature_values(r, cfg) for r in complete]
        bounds: dict[str, tuple[float | None, float | None]] = {}
        for f in ALL_FEATURES:
            vals = [v for x in feats if (v := x[f]) is not None]
            bounds[f] = _bounds(vals, cfg, f) if len(vals) >= cfg.min_cohort else (None, None)
        whole = complete_labels(reps, copies) if any(r.get("truncated") for r in reps) else []
        cut = complete_volume_bound(whole, cfg), len(whole)  # what a truncated label is compared with
        verdict: dict[int, tuple[dict[str, Any], set[str]]] = {}
        for unit, rep in zip(units, reps, strict=True):
            judged, ids = _judge_one(rep, key, len(complete), bounds, cfg, cut), {str(m["case_id"]) for m in unit}
            for m in unit:
                verdict[id(m)] = (judged if len(unit) == 1 else _shared_verdict(m, judged)), ids
        for m in members:
            out.append(verdict[id(m)][0])
            fellows.append(verdict[id(m)][1])
    ovs = list(overrides)
    for r, ids in zip(out, fellows, strict=True):
        said = r["decision"] + (f" ({r['reason']})" if r.get("reason") else "")  # the filter's, before any override
        for ov in ovs:  # load_overrides refuses two rows for one label; the last one decides
            if ov.matches(r) or (ov.case_id in ids and ov.matches({**r, "case_id": ov.case_id})):
                _apply_override(r, ov, said)
    return out


# what a shared label's verdict gives each of its cases' rows (their measurements stay their own)
VERDICT = ("method", "cohort", "cohort_size", "override", "oversized", "n_out", "flagged", "decision", "reason",
           "lateral_mm", "wrong_side",
           *(f"{p}{f}{s}" for f in ALL_FEATURES for p, s in (("f_", ""), ("", "_lo"), ("", "_hi"), ("out_", ""))))


def _shared_verdict(row: Mapping[str, Any], judged: Mapping[str, Any]) -> dict[str, Any]:
    r = {k: v for k, v in row.items() if k not in ("side_reason", "side_unchecked")}
    r.update({k: judged.get(k) for k in VERDICT})
    return r


def complete_volume_bound(complete: list[dict[str, Any]], cfg: QCConfig) -> float | None:
    """The upper bound of the ``complete`` labels' absolute volumes in ml (every layer: people's and
    models' labels alike, not only the :func:`reference` ones), by the filter's own rule (ε and
    estimator; Tukey's fence with ``iqr``) — ``None`` below ``min_cohort`` labels or when the
    filter does not judge the volume.

    Cutting a label can only remove voxels, so a truncated label above this bound would be above
    it complete too: no cut explains its size. Its shape (sphericity, eccentricity) is the cut's,
    and cannot be judged; the millilitres, not the normalised volume, are compared, since a cut
    scan's body volume shrinks with it.
    """
    vals = [v for r in complete if (v := _num(r.get("volume_ml"))) is not None]
    return _bounds(vals, cfg, "volume")[1] if len(vals) >= cfg.min_cohort else None


def _judge_one(row: dict[str, Any], key: str, n: int, bounds: Mapping[str, tuple[float | None, float | None]],
               cfg: QCConfig, cut: tuple[float | None, int] = (None, 0)) -> dict[str, Any]:
    r = dict(row)
    vals = feature_values(row, cfg)
    r.update(method=cfg.method, cohort=key, cohort_size=n, override=False, oversized=None)
    outs: list[str] = []
    for f in ALL_FEATURES:
        lo, hi = bounds[f]
        r[f"f_{f}"], r[f"{f}_lo"], r[f"{f}_hi"] = vals[f], lo, hi
        v = vals[f]
        if lo is None or hi is None or v is None or row.get("truncated"):
            r[f"out_{f}"] = None
            continue
        r[f"out_{f}"] = bool(v < lo or v > hi)
        if r[f"out_{f}"]:
            bound = lo if v < lo else hi
            digits = next((d for d in range(4, 12) if _fmt(v, d) != _fmt(bound, d)), 12)  # never "0.4489 > 0.4489"
            name = VOLUME_NAMES[r["volume_basis"]] if f == "volume" else LABELS[f]
            outs.append(f"{name} {_fmt(v, digits)} {'<' if v < lo else '>'} {_fmt(bound, digits)}")
    need = cfg.vote if cfg.method == "solf" else cfg.iqr_vote
    checked = [f for f in ALL_FEATURES if r[f"out_{f}"] is not None]
    r["n_out"] = len(outs)
    r["flagged"] = bool(checked) and len(outs) >= need
    if row.get("truncated"):
        faces = ", ".join(row.get("border_faces") or []) or "edge"
        edge = ("touches the field-of-view edge" if cfg.border_margin <= 1 else
                f"lies within {cfg.border_margin - 1} voxel(s) of the field-of-view edge (border_margin "
                f"{cfg.border_margin})")
        r["decision"], r["reason"] = "truncated", (f"{edge} ({faces}): kept, left out of the cohort bounds and "
                                                   "not judged")
        ml, (cut_hi, n_whole) = _num(row.get("volume_ml")), cut
        if cut_hi is not None and ml is not None:
            r["oversized"] = ml > cut_hi
        if r["oversized"] and ml is not None and cut_hi is not None:
            digits = next((d for d in range(4, 12) if _fmt(ml, d) != _fmt(cut_hi, d)), 12)
            upper = (f"P{100 - cfg.epsilon / 2:g} ({estimator(cfg, n_whole)})" if cfg.method == "solf"
                     else f"Tukey fence Q3 + {cfg.iqr_k:g}·IQR")
            r["reason"] += (f"; but its store-grid volume {_fmt(ml, digits)} ml > the {n_whole} complete labels' {upper} "
                            f"{_fmt(cut_hi, digits)} ml: larger than any cut explains — review it")
    elif not checked:
        r["decision"], r["reason"] = "unchecked", (f"cohort {key} has {n} complete labels (< min_cohort "
                                                   f"{cfg.min_cohort}): not judged")
    elif r["flagged"]:
        rule = (f"SOLF ε={cfg.epsilon:g}: {len(outs)} of {len(checked)} features outside the P{cfg.epsilon / 2:g}-"
                f"P{100 - cfg.epsilon / 2:g} bounds ({estimator(cfg, n)})" if cfg.method == "solf"
                else f"IQR k={cfg.iqr_k:g}: {len(outs)} of {len(checked)} features outside the Tukey fences")
        r["decision"], r["reason"] = "exclude", f"{rule} of cohort {key} (n={n}): " + "; ".join(outs)
    elif outs:  # kept, but a feature is out: said, so a distant blob caught by `detached` alone is seen
        r["decision"], r["reason"] = "include", (f"kept: {len(outs)} of {len(checked)} features outside the bounds, "
                                                 f"{need} needed to exclude: " + "; ".join(outs))
    else:  # said too: an export of the decisions has no blank reasons to wonder about
        feats = f"all {len(checked)} features judged are" if len(checked) > 1 else "the feature judged is"
        r["decision"], r["reason"] = "include", f"kept: {feats} within the bounds of cohort {key} (n={n})"
    side = r.pop("side_reason", None)
    unchecked = r.pop("side_unchecked", None)
    if unchecked and r["decision"] != "exclude":
        r["reason"] = f"{r['reason']}; {unchecked}" if r["reason"] else unchecked
    if r.get("wrong_side"):  # shape cannot see it: a perfect left kidney on the right is still wrong
        r["reason"] = side if r["decision"] != "exclude" else f"{side}; {r['reason']}"
        r["decision"] = "exclude"
    return r


def _apply_override(r: dict[str, Any], ov: Override, filter_said: str) -> None:
    r["override"] = True
    if ov.action == "include":
        r["decision"] = "override_include"
    else:
        r["decision"] = "exclude"
    r["reason"] = f"{ov.said}; filter said: {filter_said}"
    r.update(override_reason=ov.reason or None, override_reviewer=ov.reviewer, override_date=ov.date)


def _fmt(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}"
