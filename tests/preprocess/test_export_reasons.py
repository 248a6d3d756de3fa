"""Why an export skips a case: ingest's rows of the case are said to reject its label only when
they did."""

from __future__ import annotations

from typing import Any

import duckdb

from curator.export.reasons import _ingest_problem


class _Release:
    def __init__(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        self.con = duckdb.connect()
        self.con.execute("create table problems (case_id varchar, stage varchar, kind varchar, severity varchar, "
                         "message varchar)")
        if rows:
            self.con.executemany("insert into problems values (?, ?, ?, ?, ?)", rows)

    def table_names(self) -> list[str]:
        return ["problems"]

    def sql(self, query: str) -> Any:
        return self.con.execute(query)


def test_ingest_info_and_warnings_that_reject_nothing_are_not_a_rejected_label() -> None:
    rel = _Release([("B__1", "ingest", "geometry_guessed", "warning", "the header gives no orientation"),
                    ("B__1", "ingest", "label_reoriented", "info", "the label is stored in another axis order")])
    assert _ingest_problem(rel, "B__1") == ""


def test_a_rejected_label_names_ingest_s_reason() -> None:
    rel = _Release([("B__1", "ingest", "label_reoriented", "info", "another axis order"),
                    ("B__1", "ingest", "shape_mismatch", "warning", "the label's shape differs. What to do: fix"),
                    ("B__1", "harmonize", "label_rejected", "info", "ingest rejected this case's label")])
    assert _ingest_problem(rel, "B__1") == " (ingest rejected its label: shape_mismatch — the label's shape differs)"


def test_a_dropped_structure_is_said_to_be_dropped() -> None:
    rel = _Release([("B__1", "ingest", "shape_mismatch", "warning",
                     "structure 'liver' was dropped from this case (the shape differs); it counts as not annotated")])
    assert _ingest_problem(rel, "B__1").startswith(" (ingest dropped a structure file of its label: shape_mismatch")
