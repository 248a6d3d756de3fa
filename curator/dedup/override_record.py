"""What each reviewed dedup override did: the ``dedup_overrides`` table's rows.

A person's ``same``, ``different`` or ``keep`` row (:mod:`curator.dedup.overrides`) changes the
groups, and without a record the ``duplicates`` table shows only the result: a ``different`` pair
the hashes matched and the override split left no trace at all. :func:`override_rows` compares the
run with what the hashes and verification alone decided (the same candidates verified without the
overrides, ``base``) and says, per row, the pair's hash tiers and its comparison after alignment,
and the effect:

* ``same``: ``joined`` (one group only by the person's word), ``confirmed`` (the hashes and
  verification grouped them too) or ``overruled`` (a ``different`` row keeps them apart);
* ``different``: ``split`` (the hashes and verification alone made the two one group, directly or
  through other members) or ``confirmed`` (they were not grouped anyway);
* ``keep``: ``chose`` (the keep policy alone keeps another member: ``policy_kept_case_id``),
  ``confirmed`` or ``unmatched`` (the case is in no group).

Pure functions (no I/O).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from curator.dedup.detect import REVIEWED, PairResult
from curator.dedup.group import Member, components, pick_kept
from curator.dedup.overrides import DedupOverride
from curator.dedup.search import identical
from curator.dedup.verify import Match, VerifySettings, accepts

TIER_WORDS = {"exact": "identical voxels", "voxels": "an identical voxel array under another header",
              "global": "the 3-D hash", "slab": "the slab hashes", "small": "the small-scan tier"}


def groups_of(pairs: list[PairResult]) -> dict[str, list[str]]:
    """Case id → the members of its group (itself included) by the accepted ``pairs``.

    >>> from curator.dedup.search import Candidate
    >>> groups_of([PairResult(Candidate("A", "B", {"exact"}), None, True)])["B"]
    ['A', 'B']
    """
    accepted = [(p.a, p.b) for p in pairs if p.accepted]
    nodes = sorted({x for e in accepted for x in e})
    return {c: comp for comp in components(nodes, accepted) for c in comp}


def override_rows(overrides: list[DedupOverride], pairs: list[PairResult], base: list[PairResult],
                  dup: list[dict[str, Any]], members: Mapping[str, Member], policy: tuple[str, ...],
                  prefer: tuple[str, ...], compare_cases: Callable[[str, str], Match | None],
                  settings: VerifySettings) -> list[dict[str, Any]]:
    """One ``dedup_overrides`` row per override row. ``pairs``: this run's verified candidates;
    ``base``: the same candidates (without the ``same`` rows' pairs) verified without any
    override; ``dup``: this run's ``duplicates`` rows; ``members``: the keep policy's view of
    each case without ``keep`` rows; ``compare_cases(a, b)``: the comparison of two scans
    (``None`` without both thumbnails), for a pair the search did not compare."""
    group = {r["case_id"]: r["group_id"] for r in dup}
    by_group: dict[str, list[str]] = {}
    for r in dup:
        by_group.setdefault(r["group_id"], []).append(r["case_id"])
    before = groups_of(base)
    found: dict[tuple[str, ...], PairResult] = {(p.a, p.b): p for p in pairs}
    out = []
    for o in overrides:
        row: dict[str, Any] = {"row": o.row, "action": o.action, "case_id": o.cases[0], "reason": o.reason,
                               "reviewer": o.reviewer, "date": o.date, "group_id": group.get(o.cases[0])}
        if o.action == "keep":
            row.update(_keep(o, group.get(o.cases[0]), by_group, members, policy, prefer))
        else:
            row.update(_pair(o, found.get(o.cases), before, group, compare_cases, settings))
        out.append(row)
    return out


def _keep(o: DedupOverride, gid: str | None, by_group: Mapping[str, list[str]], members: Mapping[str, Member],
          policy: tuple[str, ...], prefer: tuple[str, ...]) -> dict[str, Any]:
    case = o.cases[0]
    if gid is None:
        return {"effect": "unmatched", "note": f"no effect: {case} is in no duplicate group; {o.said}"}
    alone = pick_kept([members[c] for c in by_group[gid]], policy, prefer).case_id
    if alone == case:
        return {"effect": "confirmed", "policy_kept_case_id": alone,
                "note": f"no effect: the keep policy keeps {case} in {gid} too; {o.said}"}
    return {"effect": "chose", "policy_kept_case_id": alone,
            "note": f"chose: the keep policy alone keeps {alone} in {gid}; {case} is kept by the person's word "
                    f"({o.said})"}


def _pair(o: DedupOverride, pair: PairResult | None, before: Mapping[str, list[str]], group: Mapping[str, str],
          compare_cases: Callable[[str, str], Match | None], settings: VerifySettings) -> dict[str, Any]:
    a, b = o.cases
    tiers = sorted(pair.candidate.tiers - {REVIEWED}) if pair is not None else []
    m = pair.match if pair is not None and pair.match is not None else compare_cases(a, b)
    same_voxels = pair is not None and identical(pair.candidate)
    out: dict[str, Any] = {"other_case_id": b, "other_group_id": group.get(b), "tiers": tiers,
                           "verified": True if same_voxels else (None if m is None else accepts(m, settings))}
    if m is not None:  # compare(a, b) maps b onto a
        out.update(distance=round(1.0 - m.score, 6), score=round(m.score, 6), detail=round(m.detail, 6),
                   coverage=round(m.coverage, 6), offset_mm=[round(x, 2) + 0.0 for x in m.offset_mm])
    was = before.get(a) is not None and b in before[a]
    now = group.get(a) is not None and group.get(a) == group.get(b)
    hashes = _hashes_said(tiers, m, out["verified"], was, [c for c in before.get(a, []) if c not in (a, b)])
    if o.action == "different":
        effect = "split" if was else "confirmed"
        note = (f"split: {hashes}; kept apart by the person's word" if was else f"no effect: {hashes}")
    else:
        effect = "overruled" if not now else ("confirmed" if was else "joined")
        note = {"joined": f"joined: {hashes}; one group by the person's word",
                "confirmed": f"no effect: {hashes}",
                "overruled": f"not applied: a different row keeps {a} and {b} apart (through their groups); "
                             f"{hashes}"}[effect]
    return {**out, "effect": effect, "note": f"{note} ({o.said})"}


def _hashes_said(tiers: list[str], m: Match | None, verified: bool | None, grouped: bool, through: list[str]) -> str:
    """What the hashes and verification alone made of a pair, in words."""
    proposed = (f"the hashes proposed the pair ({', '.join(TIER_WORDS.get(t, t) for t in tiers)})" if tiers
                else "the hashes did not propose the pair")
    if m is None:
        compared = "no comparison (a thumbnail is missing)" if verified is None else "identical voxels"
    else:
        compared = (f"aligned: rank correlation {m.score:.3f}, texture {m.detail:.3f}, "
                    f"{100 * m.coverage:.0f}% overlap — {'one scan' if verified else 'not one scan'} by verification")
    alone = ("without the overrides they are one group" + (f" (with {', '.join(through)})" if through else "")
             if grouped else "without the overrides they are not one group")
    return f"{proposed}; {compared}; {alone}"
