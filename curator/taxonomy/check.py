"""Consistency checks of the taxonomy's hierarchy; every problem is returned as data.

Kinds: ``unknown_term`` (a parent or partition member that does not exist), ``cycle``,
``laterality`` (a left term part of a right one, or an id/side mismatch), ``partition``
(a partition member that is not ``part_of`` the term), ``may_include`` (a term its own label
may hold that is itself or in its part_of hierarchy), ``ambiguous_name`` (one name claimed
by two terms) and ``ambiguous_bag`` (two terms equal up to word order/plurals: such a query
stays unresolved; reported, not fatal).
"""

from __future__ import annotations

from curator.registry.spec import Issue
from curator.taxonomy.model import RELATIONS, Taxonomy
from curator.taxonomy.normalize import bag_key, sides_said


def _cycles(tax: Taxonomy) -> list[list[str]]:
    """Every cycle of the part_of ∪ is_a graph (one representative path per cycle)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(tid: str, path: list[str]) -> None:
        state[tid] = 1
        for p in tax.terms[tid].parents:
            if p not in tax.terms:
                continue
            if state.get(p) == 1:
                found.append(path[path.index(p):] + [p] if p in path else [tid, p])
            elif state.get(p) is None:
                visit(p, path + [p])
        state[tid] = 2

    for tid in sorted(tax.terms):
        if tid not in state:
            visit(tid, [tid])
    return found


def check_hierarchy(tax: Taxonomy, where: str = "taxonomy.yaml") -> list[Issue]:
    issues: list[Issue] = []

    def bad(tid: str, kind: str, msg: str) -> None:
        issues.append(Issue(f"{where}:{tid}", kind, msg))

    for t in tax:
        for rel in RELATIONS:
            for p in getattr(t, rel):
                if p not in tax.terms:
                    bad(t.id, "unknown_term", f"{rel} names {p!r}, which is not a term id")
                elif t.laterality and tax.terms[p].laterality not in (None, t.laterality):
                    bad(t.id, "laterality", f"a {t.laterality} term cannot be {rel} the "
                        f"{tax.terms[p].laterality} term {p!r}")
        for side in ("left", "right"):
            if t.id.endswith(f"_{side}") and t.laterality != side:
                bad(t.id, "laterality", f"the id ends in _{side} but laterality is {t.laterality!r}")
        if t.laterality:  # "left renal stent" with laterality right resolved "renal stent L" to the right one
            other = "right" if t.laterality == "left" else "left"
            # single l/r letters too, as the resolver reads them: "Kidney_R" on the left kidney took
            # the exact key "kidney r" and filed right-kidney labels as left
            said = [n for n in t.names() if other in sides_said(n)]
            if said:
                bad(t.id, "laterality", f"laterality is {t.laterality!r} but the name {said[0]!r} says {other}")
        for i, part in enumerate(t.partitions):
            if len(set(part)) != len(part):
                bad(t.id, "partition", f"partition {i} lists a term twice")
            for m in part:
                if m not in tax.terms:
                    bad(t.id, "unknown_term", f"partition {i} names {m!r}, which is not a term id")
                elif t.id not in tax.terms[m].part_of:
                    bad(t.id, "partition", f"partition member {m!r} does not list {t.id!r} in its part_of: add "
                        f"{t.id!r} to the part_of of {m!r}")
        for m in t.may_include:  # a term inside this one is its part (part_of), not something its label may hold
            if m not in tax.terms:
                bad(t.id, "unknown_term", f"may_include names {m!r}, which is not a term id")
            elif m == t.id or m in tax.ancestors(t.id) or m in tax.descendants(t.id):
                bad(t.id, "may_include", f"may_include names {m!r}, which is {'the term itself' if m == t.id else 'in its part_of hierarchy'}: "
                    "it lists terms beside this one that a dataset's label of it may hold when the dataset does not "
                    "label them apart (kidney may include kidney_mass)")
    for cyc in _cycles(tax):
        bad(cyc[0], "cycle", "the hierarchy loops: " + " -> ".join(cyc))
    for key, ids in sorted(tax.ambiguous_names().items()):
        bad(ids[0], "ambiguous_name", f"the name {key!r} belongs to several terms: {ids}")
    bags: dict[str, set[str]] = {}
    for t in tax:
        for n in t.names():
            bags.setdefault(bag_key(n), set()).add(t.id)
    for key, bag in sorted(bags.items()):
        if len(bag) > 1:
            bad(min(bag), "ambiguous_bag", f"the words {key!r} (in any order) name several terms: "
                f"{sorted(bag)}; such queries stay unresolved")
    return issues
