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


def describe_leaks(leaks: pl.DataFrame, limit: int = 5) -> str:
    """A short human-readable list of leaking link keys."""
    lines = []
    for row in leaks.head(limit).iter_rows(named=True):
        members = ", ".join(row["case_ids"][:6]) + (" ..." if len(row["case_ids"]) > 6 else "")
        lines.append(f"{row['kind']} {row['key']}: {'/'.join(row['splits'])} ({members})")
    more = f"; and {leaks.height - limit} more" if leaks.height > limit else ""
    return "; ".join(lines) + more
