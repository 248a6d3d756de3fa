"""``curator review revert``: withdraw an imported revision of a case — every reviewed label of it,
or those of some terms — so that the pseudo labels stand again.

An import never puts a pseudo label back over a revision (a structure left as exported keeps
its revision), so a wrong import (another case's file, a slip of the brush over a whole organ)
is undone here: the workspace's copy of the revision (``<workspace>/revised/<case>.npz``), the
store's ``revised`` layer and the case's rows of ``_labels_revised`` lose the terms reverted —
all three go when nothing is left — and the review log records who reverted what, when. Each
part is replaced atomically, the copy first (a store rebuilt by preprocess takes the layer from
it); a revert interrupted between them leaves the rest held, and running it again finishes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError
from curator.pseudolabel.review_provenance import layer_review, log_review, now_utc
from curator.pseudolabel.review_records import (
    load_revised_copy,
    revised_copy_path,
    write_revised_copy,
)
from curator.store import CaseStore


def _without(plane: NDArray[Any], values: dict[int, list[str]], drop: set[str]
             ) -> tuple[NDArray[Any], dict[int, list[str]]]:
    """``plane`` and its codes without the terms ``drop`` (a code left with no term is cleared)."""
    out, kept = np.array(plane, copy=True), {}
    for c, ts in values.items():
        rest = [t for t in ts if t not in drop]
        if rest:
            kept[c] = rest
        else:
            out[out == c] = 0
    return out, kept


def revert_case(workspace: Any, case_id: str, terms: Sequence[str] | None = None, reviewer: str | None = None,
                ) -> tuple[list[str], list[str]]:
    """Withdraw the imported revision of ``case_id``'s ``terms`` (None: every one); returns (the
    terms withdrawn, the reviewed terms the case keeps). A ``ConfigError`` for a case the workspace does not hold, one with no
    revision imported, or a term its revision does not hold (naming those it holds).

    ``workspace`` is a :class:`~curator.workspace.Workspace`, which the caller holds locked."""
    from curator.schema import to_arrow

    cases = workspace.read_table("cases", columns=["case_id"])
    if cases is None or case_id not in set(cases.column("case_id").to_pylist()):
        raise ConfigError("config_error", f"no case {case_id!r} in this workspace", path=str(workspace.root),
                          remedy="give a case id as the review export's folders and worklist.csv name it")
    path = workspace.stores_dir / f"{case_id}.zarr"
    store = CaseStore(path) if (path / "zarr.json").is_file() else None
    copy = load_revised_copy(path)
    table = workspace.read_table("_labels_revised")
    rows = table.to_pylist() if table is not None else []
    in_store = set(store.terms("revised")) if store is not None and "revised" in store.layers() else set()
    in_copy = {t for ts in copy[2].values() for t in ts} if copy is not None else set()
    held = in_store | in_copy | {r["term_id"] for r in rows if r["case_id"] == case_id}
    if not held:
        raise ConfigError("config_error", f"no revision of {case_id} was imported: nothing to revert",
                          path=str(workspace.root), remedy="check the case id (`curator review import` says which "
                          "cases it imported)")
    unknown = sorted(set(terms or []) - held)
    if unknown:
        raise ConfigError("config_error", f"--term {', '.join(unknown)}: the revision of {case_id} holds no such "
                          f"label (it holds {', '.join(sorted(held))})", path=str(workspace.root),
                          remedy="name term ids of the case's reviewed labels, or leave --term out to revert them all")
    drop = set(terms) if terms else held
    at = now_utc()
    kept_rows = [r for r in rows if not (r["case_id"] == case_id and r["term_id"] in drop)]
    if held - drop:
        review = layer_review([r for r in kept_rows if r["case_id"] == case_id],
                              {"action": "revert", "reviewed_by": reviewer, "at": at, "terms": sorted(drop)})
        if copy is not None:
            plane, values = _without(copy[0], copy[2], drop)
            write_revised_copy(path, plane, copy[1], values, review)
        if store is not None and in_store:
            planes = [_without(np.asarray(arr[...]), vals, drop) for arr, vals in store.planes("revised")]
            store.write_layer("revised", planes, {"origin": "revised", "source": "curator review revert",
                                                  "review": review})
    else:  # nothing of the revision is left: the case is unreviewed again (back on the worklist)
        revised_copy_path(path).unlink(missing_ok=True)
        if store is not None:
            store.remove_layer("revised")
    workspace.write_table("_labels_revised", to_arrow("labels", kept_rows))
    log_review(workspace.root, [{"action": "revert", "case_id": case_id, "terms": sorted(drop),
                                 "reviewed_by": reviewer, "at": at}])
    return sorted(drop), sorted(held - drop)
