"""``duplicates`` rows from verified pairs: one row per group member, saying why.

Pure functions (no I/O): :func:`duplicate_rows` takes the accepted pairs, what the keep
policy needs to know about each case, and a comparison function for the evidence of
members that were joined only through another member.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from curator.dedup.detect import PairResult
from curator.dedup.group import Member, components, group_id, pick_kept, why_kept
from curator.dedup.verify import Match

TIER_WORDS = {"exact": "identical voxels", "voxels": "identical voxel array, different header geometry",
              "global": "3-D perceptual hash", "slab": "slab hashes", "reviewed": "a reviewed same override"}


def header_geometry(case: Mapping[str, Any]) -> dict[str, Any]:
    """What a case's header says about its place in the patient (``cases`` columns, rounded)."""
    def r(xs: Any, nd: int) -> list[float] | None:
        return None if xs is None else [round(float(x), nd) + 0.0 for x in xs]

    return {"orientation": case.get("orientation"), "spacing_mm": r(case.get("spacing_mm"), 4),
            "origin_mm": r(case.get("origin_mm"), 2), "direction": r(case.get("direction"), 4)}


def _header_differences(kept: Mapping[str, Any], this: Mapping[str, Any]) -> str:
    """The header fields that differ, in words ("orientation RAS (kept) vs RAI, origin ...")."""
    def show(key: str, v: Any) -> str:
        if key == "orientation" or v is None:
            return str(v)
        nums = [f"{x:g}" for x in v]
        return " × ".join(nums) + " mm" if key == "spacing_mm" else "(" + ", ".join(nums) + ") mm"

    out = []
    for key, word in (("orientation", "orientation"), ("spacing_mm", "spacing"), ("origin_mm", "origin")):
        if kept.get(key) != this.get(key):
            out.append(f"{word} {show(key, kept.get(key))} (kept) vs {show(key, this.get(key))}")
    if kept.get("direction") != this.get("direction"):
        out.append("another direction matrix")
    return ", ".join(out) or "the same header fields"


def _evidence(pair: PairResult | None, m: Match | None,
              headers: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
              reviewed: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"tiers": sorted(pair.candidate.tiers) if pair else [],
                          "verified_directly": pair is not None and pair.match is not None}
    if reviewed:
        ev["reviewed"] = reviewed
    if "voxels" in ev["tiers"] and headers is not None:
        ev["header_geometry"] = {"kept": dict(headers[0]), "this": dict(headers[1])}
    if pair is not None:
        if pair.candidate.global_distance is not None:
            ev["global_hash_bits"] = pair.candidate.global_distance
        if pair.candidate.slab_votes:
            ev["slab_votes"] = pair.candidate.slab_votes
            ev["slab_offset_mm"] = pair.candidate.slab_offset_mm
    if m is not None:
        ev.update(m.to_dict())
    return ev


def _tiers(pair: PairResult | None) -> set[str]:
    return pair.candidate.tiers if pair is not None else set()


def _because(ev: dict[str, Any]) -> str:
    parts = []
    if ev.get("reviewed"):
        parts.append(ev["reviewed"])
    if "exact" in ev["tiers"]:
        parts.append("identical voxel content")
    if "voxels" in ev["tiers"]:
        hg = ev.get("header_geometry")
        differs = f": {_header_differences(hg['kept'], hg['this'])}" if hg else ""
        parts.append(f"{TIER_WORDS['voxels']}{differs} — one of the headers places the scan wrongly; "
                     "open both in a viewer before trusting the kept one's")
    if "global_hash_bits" in ev:
        parts.append(f"3-D hash {ev['global_hash_bits']} bits apart")
    if "slab_votes" in ev:
        parts.append(f"{ev['slab_votes']} axial slabs match at one height offset")
    if not ev["tiers"]:
        parts.append("joined through another member of the group")
    if "score" in ev:
        off = ev["offset_mm"]
        moved = f"; headers disagree by ({off[0]:g}, {off[1]:g}, {off[2]:g}) mm" if max(map(abs, off)) >= 2 else ""
        rigid = f", its parts agree within {ev['warp']:.2f} voxels" if ev.get("warp") is not None else ""
        parts.append(f"aligned: rank correlation {ev['score']:.3f}, texture {ev['detail']:.3f}, "
                     f"{100 * ev['coverage']:.0f}% of the more contained scan overlaps{rigid}{moved}")
    return "; ".join(parts)


def duplicate_rows(pairs: list[PairResult], members: dict[str, Member], policy: tuple[str, ...],
                   prefer: tuple[str, ...], compare_cases: Callable[[str, str], Match | None],
                   headers: Mapping[str, Mapping[str, Any]] | None = None,
                   reviewed: Mapping[tuple[str, ...], str] | None = None) -> list[dict[str, Any]]:
    """One row per member of every group of accepted pairs. ``headers`` (case id →
    :func:`header_geometry`) shows both headers in the evidence of an identical array whose
    header geometry differs (the ``voxels`` tier); ``reviewed`` (sorted pair of case ids → a
    ``same`` override's words) puts a person's word in the evidence and reason of its pair."""
    accepted = [p for p in pairs if p.accepted]
    by_pair = {(p.a, p.b): p for p in accepted}
    rows: list[dict[str, Any]] = []
    nodes = sorted({x for p in accepted for x in (p.a, p.b)})
    for comp in components(nodes, [(p.a, p.b) for p in accepted]):
        gid = group_id(comp)
        group = [members[c] for c in comp]
        kept = pick_kept(group, policy, prefer)
        for cid in comp:
            m = members[cid]
            row: dict[str, Any] = {"group_id": gid, "case_id": cid, "dataset": m.dataset, "kept": cid == kept.case_id,
                                   "kept_case_id": kept.case_id, "group_size": len(comp)}
            if cid == kept.case_id:
                others = ", ".join(c for c in comp if c != cid)
                reasons = sorted({why_kept(kept, members[c], policy, prefer, group) for c in comp if c != cid})
                reheadered = [c for c in comp if c != cid and "voxels" in _tiers(by_pair.get((min(c, cid), max(c, cid))))]
                also = (f" ({', '.join(reheadered)}: {TIER_WORDS['voxels']} — check which header is right)"
                        if reheadered else "")
                row.update(distance=0.0, tiers=[], evidence=json.dumps({"kept": True}),
                           reason=f"kept: one scan with {others}{also}; kept because: {'; '.join(reasons)}")
                rows.append(row)
                continue
            key = (min(cid, kept.case_id), max(cid, kept.case_id))
            pair = by_pair.get(key)
            if pair is not None and pair.match is not None:  # compare(a, b) maps b onto a: orient it to the kept
                match: Match | None = pair.match if pair.a == kept.case_id else _flip(pair.match)
            else:
                match = compare_cases(kept.case_id, cid)
            both = (headers[kept.case_id], headers[cid]) if headers and kept.case_id in headers and cid in headers else None
            said = (reviewed or {}).get(key) or next((w for k, w in sorted((reviewed or {}).items()) if cid in k), None)
            ev = _evidence(pair, match, both, said)
            row.update(tiers=ev["tiers"], evidence=json.dumps(ev, sort_keys=True),
                       reason=f"same scan as {kept.case_id} ({_because(ev)}); dropped: the kept member has "
                              f"{why_kept(kept, m, policy, prefer, group)}")
            if match is not None:
                row.update(distance=round(1.0 - match.score, 6), score=round(match.score, 6),
                           detail=round(match.detail, 6), coverage=round(match.coverage, 6),
                           offset_mm=[round(x, 2) + 0.0 for x in match.offset_mm])
            rows.append(row)
    return rows


def _flip(m: Match) -> Match:
    """The same comparison seen from the other side (b onto a instead of a onto b)."""
    return Match(m.score, m.detail, m.coverage, m.dice, m.voxels, tuple(-x for x in m.offset_mm))  # type: ignore[arg-type]
