"""Split units and the leakage check (pure: Polars frames in, frames out).

A *unit* is the set of cases that must land in one split: cases of one patient
(``patient_id``), sequences of one study (``study_key``) and members of one duplicate group
(``duplicates.group_id``), closed transitively (a patient's scan duplicated in another
dataset pulls that dataset's case — and that patient's other cases — into the unit).
Units are the connected components of the graph whose edges are these links
(``scipy.sparse.csgraph.connected_components``).

The leakage check does not trust the unit computation: it groups the final assignment by
every link key again and reports any key whose cases sit in more than one split.

>>> import polars as pl
>>> cases = pl.DataFrame({"case_id": ["a", "b", "c"], "patient_id": ["p1", "p1", "p2"],
...                       "study_key": ["s1", "s2", "s3"]})
>>> dups = pl.DataFrame({"group_id": ["g"], "case_id": ["c"]})
>>> links = link_table(cases, dups)
>>> unit_labels(cases["case_id"], links).to_list()
[0, 0, 1]
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

LINK_KINDS = ("patient", "study", "duplicate")
Link = tuple[str, str]  # (kind, key)


def link_table(cases: pl.DataFrame, duplicates: pl.DataFrame | None) -> pl.DataFrame:
    """Long table (i, case_id, kind, key) of the links that tie two or more cases together;
    ``i`` is the case's row number in ``cases``. Keys held by a single case are left out."""
    idx = cases.select("case_id").with_row_index("i")
    parts = [
        cases.with_row_index("i").select("i", "case_id", pl.lit("patient").alias("kind"),
                                         pl.col("patient_id").alias("key")),
        cases.with_row_index("i").select("i", "case_id", pl.lit("study").alias("kind"),
                                         pl.col("study_key").alias("key")),
    ]
    if duplicates is not None and duplicates.height:
        # a duplicate row of a case not in `cases` is ignored
        parts.append(duplicates.join(idx, on="case_id").select("i", "case_id", pl.lit("duplicate").alias("kind"),
                                                               pl.col("group_id").alias("key")))
    links = pl.concat(parts).drop_nulls("key")
    return links.filter(pl.len().over("kind", "key") > 1)


def unit_labels(case_ids: pl.Series, links: pl.DataFrame) -> pl.Series:
    """Component number (0..n_units-1, numbered by first appearance) of every case in ``case_ids``
    (``links`` from :func:`link_table` over the same cases, in the same order)."""
    n = len(case_ids)
    li = links.select("i", root=pl.col("i").min().over("kind", "key")).filter(pl.col("i") != pl.col("root"))
    rows = li["root"].to_numpy().astype(np.int64)
    cols = li["i"].to_numpy().astype(np.int64)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so the numbering does not depend on scipy's internals
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return pl.Series("unit", order[labels].astype(np.int64))


def find_leaks(assignment: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    """Link keys whose cases are in more than one split: (kind, key, splits, case_ids).

    ``assignment`` has (case_id, split). Empty result = no leakage.
    """
    joined = links.join(assignment.select("case_id", "split"), on="case_id", how="inner")
    bad = (joined.group_by("kind", "key").agg(pl.col("split").n_unique().alias("n"))
           .filter(pl.col("n") > 1).select("kind", "key"))
    return (joined.join(bad, on=["kind", "key"], how="semi").group_by("kind", "key")
            .agg(pl.col("split").unique().sort().alias("splits"), pl.col("case_id").sort().alias("case_ids"))
            .sort("kind", "key"))


def describe_leaks(leaks: pl.DataFrame, assignment: pl.DataFrame, links: pl.DataFrame, parent: str | None = None,
                   limit: int = 5) -> str:
    """Each unit of linked cases that ``leaks`` (:func:`find_leaks`) shows spanning two splits: its
    cases on each side, each with its split in the parent release (``assignment.previous_split``,
    ``parent`` naming that release) or *new*, and the links that join the sides — the shortest
    chain of patient/study/duplicate links from a case of one side to a case of the other. The
    sides are the parent release's splits when the unit's released cases were in two (a new link
    joined units released apart), else the splits of the assignment.

    >>> cases = pl.DataFrame({"case_id": ["a", "b", "n1", "n2"], "patient_id": ["pa", "pb", "pn", "pn"],
    ...                       "study_key": ["sa", "sb", "s1", "s2"]})
    >>> links = link_table(cases, pl.DataFrame({"group_id": ["g", "g", "h", "h"], "case_id": ["a", "n1", "b", "n2"]}))
    >>> split = pl.DataFrame({"case_id": ["a", "b", "n1", "n2"], "split": ["val", "train", "val", "val"],
    ...                       "previous_split": ["val", "train", None, None]})
    >>> print(describe_leaks(find_leaks(split, links), split, links, "0.1.0"))  # doctest: +NORMALIZE_WHITESPACE
    4 linked cases, in train: b (train in 0.1.0); in val: a (val in 0.1.0), n1, n2 (new) — joined by
    duplicate h (b, n2), patient pn (n2, n1), duplicate g (n1, a)
    """
    where = f"in {parent}" if parent else "in the parent release"
    split = dict(assignment.select("case_id", "split").iter_rows())
    prev = dict(assignment.select("case_id", "previous_split").iter_rows()) \
        if "previous_split" in assignment.columns else {}
    members: dict[Link, list[str]] = {}
    for kind, key, cid in links.select("kind", "key", "case_id").sort("kind", "key", "case_id").iter_rows():
        members.setdefault((kind, key), []).append(cid)
    of_case: dict[str, list[Link]] = {}
    for link, cids in members.items():
        for c in cids:
            of_case.setdefault(c, []).append(link)
    units: list[list[str]] = []
    seen: set[str] = set()
    for cids in leaks["case_ids"].to_list():
        if cids[0] not in seen:
            unit = _reach([cids[0]], members, of_case)[0]
            seen |= set(unit)
            units.append(unit)
    text = "; ".join(_describe_unit(u, split, prev, members, of_case, where) for u in units[:limit])
    return text + (f"; and {len(units) - limit} more" if len(units) > limit else "")


def _reach(starts: list[str], members: dict[Link, list[str]], of_case: dict[str, list[Link]],
           goal: set[str] | None = None) -> tuple[list[str], list[tuple[str, Link, str]]]:
    """Breadth first from ``starts`` over the links (in sorted order): the cases reached (sorted),
    and with ``goal`` the shortest chain of links to one of its cases, as (case, link, case) steps."""
    came: dict[str, tuple[str, Link] | None] = dict.fromkeys(starts)
    queue = list(starts)
    for c in queue:
        if goal is not None and c in goal:
            steps: list[tuple[str, Link, str]] = []
            while (back := came[c]) is not None:
                steps.insert(0, (back[0], back[1], c))
                c = back[0]
            return sorted(came), steps
        for link in of_case.get(c, []):
            for m in members[link]:
                if m not in came:
                    came[m] = (c, link)
                    queue.append(m)
    return sorted(came), []


def _describe_unit(unit: list[str], split: dict[str, str], prev: dict[str, str | None],
                   members: dict[Link, list[str]], of_case: dict[str, list[Link]], where: str) -> str:
    released = {c: p for c in unit if (p := prev.get(c))}
    side = released if len(set(released.values())) > 1 else {c: split[c] for c in unit if c in split}
    names = sorted(set(side.values()), key=_split_order)
    chains: list[str] = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            starts = sorted(c for c in side if side[c] == a)
            for one, (kind, key), other in _reach(starts, members, of_case, {c for c in side if side[c] == b})[1]:
                said = f"{kind} {key} ({one}, {other})"
                if said not in chains:
                    chains.append(said)
    now = []
    for s in sorted({split[c] for c in unit if c in split}, key=_split_order):
        groups: dict[str, list[str]] = {}
        for c in unit:
            if split.get(c) == s:
                groups.setdefault(f"{prev[c]} {where}" if prev.get(c) else "new", []).append(c)
        now.append(f"in {s}: " + ", ".join(_some(cs) + f" ({label})" for label, cs in groups.items()))
    return f"{len(unit)} linked cases, " + "; ".join(now) + " — joined by " + ", ".join(chains)


def _split_order(split: str) -> tuple[int, str]:
    return {"train": 0, "val": 1, "test": 2}.get(split, 3), split


def _some(cases: list[str], n: int = 6) -> str:
    return ", ".join(cases[:n]) + (f" and {len(cases) - n} more" if len(cases) > n else "")
