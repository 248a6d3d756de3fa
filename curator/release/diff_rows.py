"""Row by row: what ``curator diff`` compares in each table both releases hold (its rows added,
removed and changed on the table's key, and per changed column how many rows changed it, with a
few of them and both values). :mod:`curator.release.diff` builds on it.

>>> import polars as pl
>>> d = diff_table(pl.DataFrame({"k": [1, 2], "x": ["a", "b"]}), pl.DataFrame({"k": [1, 2], "x": ["a", "c"]}), ["k"])
>>> d.changed, d.changed_values
([((2,), ['x'])], [('x', 1, [((2,), 'b', 'c')])])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from curator.errors import ConfigError
from curator.schema import table_schema

# Columns that describe a row relative to its own release (not a change of the row itself).
RELATIVE_COLUMNS = {"splits": {"reason", "previous_split"}}
# Columns that say where a row comes from, not what it holds: a row whose only change is there is
# counted apart (a taxonomy passed by path names its file, `curator` the bundled one: a byte-identical
# copy changes every term's defined_in and nothing else)
PROVENANCE_COLUMNS = {"terms": {"defined_in"}}
# Columns that word a decision other columns hold: a row whose only change is there (the same labels
# flagged, the reason reworded — a cohort's size in the text, a newer curator's phrasing) is counted
# apart, ``wording_only``, not with the rows whose decision changed
WORDING_COLUMNS = {"labels": {"qc_reason"}, "qc": {"reason"}}
EXAMPLES = 3  # changed values shown per changed column (old → new), with the count of rows
# Keys other than a table's sort columns: a problem reworded by a newer curator is the same
# problem (its sort ends in the message, which keeps the written rows in one order)
DIFF_KEYS = {"problems": ("stage", "dataset", "path", "case_id", "kind")}
RANK = "rank_in_key"  # a row's place among the rows that share its key, when some do


@dataclass
class TableDiff:
    """Row-level differences of one table (keys as tuples in the table's key order)."""

    keys: list[str]
    added: list[tuple[Any, ...]] = field(default_factory=list)
    removed: list[tuple[Any, ...]] = field(default_factory=list)
    changed: list[tuple[tuple[Any, ...], list[str]]] = field(default_factory=list)  # (key, columns)
    # rows whose only change is in PROVENANCE_COLUMNS (key, columns), and those changes counted:
    # (column, value A, value B, rows)
    provenance_only: list[tuple[tuple[Any, ...], list[str]]] = field(default_factory=list)
    provenance_values: list[tuple[str, Any, Any, int]] = field(default_factory=list)
    # rows whose only change is in WORDING_COLUMNS (key, columns): the same decision, reworded
    wording_only: list[tuple[tuple[Any, ...], list[str]]] = field(default_factory=list)
    # per changed column, how many rows changed it and up to EXAMPLES of them with both values:
    # (column, rows, [(key, value A, value B)]), of the rows in ``changed`` and in ``wording_only``
    changed_values: list[tuple[str, int, list[tuple[tuple[Any, ...], Any, Any]]]] = field(default_factory=list)
    wording_values: list[tuple[str, int, list[tuple[tuple[Any, ...], Any, Any]]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.provenance_only or self.wording_only)

    def to_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "added": [list(k) for k in self.added],
                "removed": [list(k) for k in self.removed],
                "changed": [{"key": list(k), "columns": c} for k, c in self.changed],
                "provenance_only": [{"key": list(k), "columns": c} for k, c in self.provenance_only],
                "provenance_values": [{"column": c, "a": va, "b": vb, "rows": n}
                                      for c, va, vb, n in self.provenance_values],
                "wording_only": [{"key": list(k), "columns": c} for k, c in self.wording_only],
                "changed_values": _values_dict(self.changed_values),
                "wording_values": _values_dict(self.wording_values)}


def _values_dict(values: list[tuple[str, int, list[tuple[tuple[Any, ...], Any, Any]]]]) -> list[dict[str, Any]]:
    return [{"column": c, "rows": n, "examples": [{"key": list(k), "a": va, "b": vb} for k, va, vb in ex]}
            for c, n, ex in values]

def _keys_for(name: str, a_cols: list[str], b_cols: list[str]) -> list[str]:
    try:
        keys = list(DIFF_KEYS.get(name) or table_schema(name).sort)
    except ConfigError:
        keys = []
    common = [c for c in a_cols if c in b_cols]
    return keys if keys and all(k in common for k in keys) else common


def _ranked(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """When rows share a key (two problems of one kind for one file), number them within it
    (``rank_in_key``, a key column then): the rows the other table holds unchanged first, the rest in
    the order of their other columns, so an unchanged row pairs with itself and a reworded one
    with its rewording."""
    if not any(df.select(keys).is_duplicated().any() for df in (a, b)):
        return a, b, keys
    cols = [c for c in a.columns if c in b.columns and a[c].dtype == b[c].dtype and not a[c].dtype.is_nested()]

    def ranked(x: pl.DataFrame, other: pl.DataFrame) -> pl.DataFrame:
        x = x.join(other.select(cols).unique().with_columns(_same=pl.lit(True)), on=cols, how="left",
                   nulls_equal=True).with_columns(pl.col("_same").fill_null(False))
        rest = [c for c in cols if c not in keys]
        x = x.sort([*keys, "_same", *rest], descending=[False] * len(keys) + [True] + [False] * len(rest),
                   nulls_last=True)
        return x.with_columns(pl.int_range(pl.len()).over(keys).alias(RANK)).drop("_same")

    return ranked(a, b), ranked(b, a), [*keys, RANK]


def _rows(df: pl.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in df.unique(maintain_order=True).iter_rows()]


def diff_table(a: pl.DataFrame, b: pl.DataFrame, keys: list[str], ignore: set[str] | None = None,
               provenance: set[str] | None = None, wording: set[str] | None = None,
               examples: int = EXAMPLES) -> TableDiff:
    """Rows of ``b`` not in ``a`` (added), of ``a`` not in ``b`` (removed), and changed rows
    (columns in ``ignore`` are not compared; a row whose only changes are in ``provenance`` is in
    ``provenance_only``, and those changes counted by value in ``provenance_values``; one whose only
    changes are in ``wording`` in ``wording_only``). Per changed column: the rows that changed it and
    up to ``examples`` of them with both values (``changed_values``, ``wording_values``)."""
    out = TableDiff(keys)
    out.added = _rows(b.join(a.select(keys), on=keys, how="anti", nulls_equal=True).select(keys).sort(keys))
    out.removed = _rows(a.join(b.select(keys), on=keys, how="anti", nulls_equal=True).select(keys).sort(keys))
    compare = []
    for c in a.columns:
        if c not in b.columns or c in keys or c in (ignore or set()):
            continue
        if a[c].dtype != b[c].dtype:  # a retyped column (int32 -> int64, a list of another type): compare values
            try:
                a = a.with_columns(a[c].cast(b[c].dtype))
            except pl.exceptions.PolarsError:
                try:
                    a, b = a.with_columns(a[c].cast(pl.String)), b.with_columns(b[c].cast(pl.String))
                except pl.exceptions.PolarsError:
                    continue  # no common type: the schema change is reported, the values are not
        compare.append(c)
    if not compare:
        return out
    j = a.select(keys + compare).join(b.select(keys + compare), on=keys, suffix="__b", nulls_equal=True)
    flags = [pl.when(pl.col(c).ne_missing(pl.col(f"{c}__b"))).then(pl.lit(c)) for c in compare]
    j = j.with_columns(changed=pl.concat_list(flags).list.drop_nulls()).filter(pl.col("changed").list.len() > 0)
    j = j.sort(keys)
    aside, worded = set(provenance or ()) & set(compare), set(wording or ()) & set(compare) - set(provenance or ())

    def only(cols: set[str]) -> pl.Expr:
        return pl.col("changed").list.eval(pl.element().is_in(sorted(cols))).list.all() if cols else pl.lit(False)

    kind = pl.when(only(aside)).then(pl.lit("provenance")).when(only(worded)).then(pl.lit("wording")) \
        .otherwise(pl.lit("changed"))
    j = j.with_columns(_kind=kind)
    rows = {k: [(tuple(r[:-1]), list(r[-1])) for r in j.filter(pl.col("_kind") == k).select(*keys, "changed")
                .iter_rows()] for k in ("changed", "provenance", "wording")}
    out.changed, out.provenance_only, out.wording_only = rows["changed"], rows["provenance"], rows["wording"]
    out.changed_values = _column_values(j.filter(pl.col("_kind") == "changed"), keys, compare, examples)
    out.wording_values = _column_values(j.filter(pl.col("_kind") == "wording"), keys, sorted(worded), examples)
    if out.provenance_only:
        prov = j.filter(pl.col("_kind") == "provenance")
        for c in sorted(aside):
            counted = (prov.filter(pl.col(c).ne_missing(pl.col(f"{c}__b"))).group_by(c, f"{c}__b").len()
                       .sort("len", c, f"{c}__b", descending=[True, False, False], nulls_last=True))
            out.provenance_values += [(c, va, vb, n) for va, vb, n in counted.iter_rows()]
    return out


def _column_values(j: pl.DataFrame, keys: list[str], columns: list[str],
                   examples: int) -> list[tuple[str, int, list[tuple[tuple[Any, ...], Any, Any]]]]:
    """Per column of ``columns`` that differs in the joined rows ``j`` (``c`` and ``c__b``): how many
    rows, and the first ``examples`` of them (in key order) as (key, value A, value B)."""
    out = []
    for c in columns:
        diff = j.filter(pl.col(c).ne_missing(pl.col(f"{c}__b")))
        if diff.height:
            ex = [(tuple(r[:-2]), r[-2], r[-1]) for r in diff.head(examples).select(*keys, c, f"{c}__b").iter_rows()]
            out.append((c, diff.height, ex))
    return out

