"""Which labels of a case a reviewer has seen: per (case, term), ``pseudo`` (the model's, not
reviewed), ``revised`` (a reviewer changed it) or ``accepted`` (a reviewer accepted it as the
export showed it), with the case's review round that gave it.

``curator review import`` records the state and round on each revised row (``labels.review_state``,
``labels.review_round``, in the workspace's ``_labels_revised``); the release's ``attention`` table
(``label_state``, ``review_round``), its ``review/worklist.csv`` and the export's worklist
(``label_states``) say it per term, so a second round shows what the first did.

>>> states = label_states([{"case_id": "c", "term_id": "liver", "origin": "revised",
...                         "review_state": "revised", "review_round": 1}])
>>> case_states("c", ["liver", "spleen"], states)
'liver: revised (round 1); spleen: pseudo'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from curator.store import CaseStore

PSEUDO = "pseudo"
State = tuple[str, int | None]  # (pseudo | revised | accepted, the case's review round or None)


def label_states(revised_rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], State]:
    """``{(case, term): (state, round)}`` of the revised rows (origin ``revised``); a row imported
    before curator recorded the state is ``revised`` of no known round."""
    return {(r["case_id"], r["term_id"]): (r.get("review_state") or "revised", r.get("review_round"))
            for r in revised_rows if r.get("origin", "revised") == "revised"}


def state_of(case: str, term: str, states: dict[tuple[str, str], State]) -> State:
    return states.get((case, term), (PSEUDO, None))


def state_text(state: State) -> str:
    """``revised (round 1)``, ``accepted``, ``pseudo``."""
    name, rnd = state
    return f"{name} (round {rnd})" if rnd is not None and name != PSEUDO else name


def case_states(case: str, terms: Sequence[str], states: dict[tuple[str, str], State]) -> str:
    """worklist.csv's ``label_states`` cell of a case: ``liver: revised (round 1); spleen: pseudo``."""
    return "; ".join(f"{t}: {state_text(state_of(case, t, states))}" for t in terms)


def next_round(earlier: Iterable[dict[str, Any]]) -> int:
    """The review round of a case's next import: one more than its revised rows' highest (an
    earlier import that recorded none counts as round 1)."""
    rounds = [int(r.get("review_round") or 1) for r in earlier]
    return max(rounds, default=0) + 1


def workspace_states(workspace: Path, cases: Iterable[str]) -> dict[tuple[str, str], State]:
    """The states of ``cases`` in a workspace: its ``_labels_revised`` rows whose term the case's
    store holds in its revised layer (as a release counts them: a term the store lost is the
    pseudo label again)."""
    from curator.workspace import Workspace

    ws = Workspace(workspace)
    table = ws.read_table("_labels_revised")
    wanted = set(cases)
    rows = [r for r in (table.to_pylist() if table is not None else []) if r["case_id"] in wanted]
    return label_states(held_revised(ws.stores_dir, rows))


def held_revised(stores_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``_labels_revised`` ``rows`` whose term the case's store holds in its revised layer, as
    the release keeps them (a store rebuilt without its revised layer, ``revised_label_lost``,
    gives the pseudo label back): what QC judges and the release assembles must agree."""
    held = {cid: revised_held(stores_dir / f"{cid}.zarr")[1] for cid in sorted({r["case_id"] for r in rows})}
    return [r for r in rows if r["term_id"] in held[r["case_id"]]]


def revised_held(path: Path) -> tuple[CaseStore | None, set[str]]:
    """The case store at ``path`` (None when there is none) and the terms its revised layer holds."""
    from curator.store import CaseStore

    store = CaseStore(path) if path.exists() else None
    return store, set(store.terms("revised")) if store is not None and "revised" in store.layers() else set()


def with_states(attention: pa.Table, states: dict[tuple[str, str], State]) -> pa.Table:
    """``attention`` with ``label_state`` and ``review_round`` set from ``states`` (a release's)."""
    from curator.schema import to_arrow

    rows = attention.to_pylist()
    for r in rows:
        r["label_state"], r["review_round"] = state_of(r["case_id"], r["term_id"], states)
    return to_arrow("attention", rows)
