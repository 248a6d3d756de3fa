"""Which cases a review export takes: by attention rank, or named (``--case``); never a duplicate
dedup dropped (it is not released); a case reviewed in part again, for its terms not reviewed yet.

>>> rows = [{"case_id": "c", "term_id": t, "attention_size": a} for t, a in (("liver", 2.0), ("aorta", 0.0))]
>>> flagged_terms(rows)
['liver']
>>> to_review("c", rows, {("c", "liver"): ("revised", 1)})
[]
>>> to_review("c", rows, {})
['liver']
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curator.errors import ConfigError
from curator.pseudolabel.review_state import PSEUDO, State, state_of


def select_cases(attention: list[dict[str, Any]], fraction: float | None, top: int | None) -> list[str]:
    """Case ids by review rank: the ``review`` flag, or the top ``fraction`` / ``top`` cases."""
    if top is not None and fraction is not None:
        raise ConfigError("config_error", "give --fraction or --top, not both")
    if top is not None and top < 1:
        raise ConfigError("config_error", f"--top {top}: give a number of cases, at least 1")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError("config_error", f"--fraction {fraction}: give a share in (0, 1], e.g. 0.05 for 5 %")
    ranks = sorted({(r["review_rank"], r["case_id"], r["case_attention_size"], r["review"]) for r in attention})
    if top is not None:
        return [c for _, c, _, _ in ranks[:top]]
    if fraction is not None:
        k = math.ceil(fraction * len(ranks))
        return [c for _, c, size, _ in ranks[:k] if size > 0]
    return [c for _, c, _, flagged in ranks if flagged]


def dropped_duplicates(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{dropped case: the kept member of its group}`` of ``duplicates`` table rows."""
    return {r["case_id"]: r["kept_case_id"] for r in rows if not r["kept"]}


def workspace_duplicates(workspace: Path) -> dict[str, str]:
    """:func:`dropped_duplicates` of the workspace's ``duplicates`` table (none without one)."""
    from curator.workspace import Workspace

    table = Workspace(workspace).read_table("duplicates")
    return dropped_duplicates(table.select(["case_id", "kept", "kept_case_id"]).to_pylist()) if table is not None \
        else {}


def named_cases(attention: list[dict[str, Any]], names: Sequence[str], dropped: dict[str, str]) -> list[str]:
    """The case ids ``names`` (``--case``), in the order given, each once; a ``ConfigError`` naming
    every one that has no pseudo labels to review (with close matches) or that dedup dropped."""
    known = sorted({r["case_id"] for r in attention})
    wanted = list(dict.fromkeys(n.strip() for n in names))
    said = []
    for n in wanted:
        if n in dropped:
            said.append(f"{n!r} is a duplicate dedup dropped (it is not released; its group keeps {dropped[n]!r})")
        elif n not in known:
            close = difflib.get_close_matches(n, known, n=3, cutoff=0.6)
            said.append(f"{n!r} is no case with pseudo labels in the attention table"
                        + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    if said:
        raise ConfigError("config_error", "--case: " + "; ".join(said),
                          remedy="give case ids as the attention table and worklist.csv spell them (`curator query` "
                                 "on a release: select distinct case_id from attention); a dropped duplicate's kept "
                                 "member is reviewed instead")
    return wanted


def flagged_terms(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A case's terms to review, by attention (most first): those with attention, every term of a
    case with none (a case exported by name or by --top)."""
    ordered = sorted(rows, key=lambda r: (-r["attention_size"], r["term_id"]))
    return [r["term_id"] for r in ordered if r["attention_size"] > 0] or [r["term_id"] for r in ordered]


def to_review(case: str, rows: Sequence[dict[str, Any]], states: dict[tuple[str, str], State]) -> list[str]:
    """The :func:`flagged_terms` of a case no reviewer revised or accepted yet (still pseudo)."""
    return [t for t in flagged_terms(rows) if state_of(case, t, states)[0] == PSEUDO]
