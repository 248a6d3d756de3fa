"""Which code and libraries computed a stage's cases and tables.

A stage run records its process's :func:`curator.envinfo.computed_with` (curator's version and
git revision, whether that code had uncommitted edits, the Python and library versions) once,
as ``<workspace>/environments/<id>.json`` (``id``: 16 hex digits of its SHA-256), and stamps
that id on every case result it computes (``computed_with``). Its ``stage.json`` then holds
``run_environment``, the id of the run that wrote the stage's tables (``finalize``'s cross-case
work), and ``case_environments``, ``{id: cases}`` over the cases those tables hold: a case taken
from the cache keeps the id of the run that computed it, so a stage whose cases were computed
by uncommitted edits, or before an upgrade, says so after the code is reverted or upgraded
(``unrecorded``: results of a curator before this record). The release copies both into
``release.json``'s ``stages`` and each id's record into ``environments``.

The libraries recorded are those of the process running ``curator run``: its local workers are
started from the same Python; a Dask worker is refused when it imports other curator code (the
revision) or other versions than that process of Python and the libraries that change the values
written (:data:`curator.envinfo.RESULT_PACKAGES`, torch by its public version:
:mod:`curator.runner.dask_executor`, at the stage's start and for each case's result), so no case
is recorded under an environment whose values it was not computed with (the other packages
recorded, and torch's build tag such as ``+cu121``, may differ on a worker).

>>> case_environments([])
{}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from curator.envinfo import computed_with
from curator.io.fsutil import atomic_write_json, sha256_json
from curator.runner.stage import CaseResult
from curator.workspace import Workspace

FOLDER = "environments"
UNRECORDED = "unrecorded"  # a case result written before curator recorded what computed it


def record_environment(ws: Workspace) -> str:
    """The id of this process's code and libraries, recorded under ``<workspace>/environments/``
    (written once; a run started again under the same code finds it there)."""
    made = computed_with()
    ident = sha256_json(made)[:16]
    path = ws.root / FOLDER / f"{ident}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, made)
    return ident


def read_environment(ws: Workspace, ident: str) -> dict[str, Any] | None:
    """The record behind ``ident`` (None when there is none, or it cannot be read)."""
    if not ident.isalnum():  # an id, never a path
        return None
    try:
        d = json.loads((ws.root / FOLDER / f"{ident}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def case_environments(results: Iterable[CaseResult]) -> dict[str, int]:
    """``{id: number of cases}`` of the results (``unrecorded`` for those that hold no id)."""
    out: dict[str, int] = {}
    for r in results:
        k = r.computed_with or UNRECORDED
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def environments_of(ws: Workspace, stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each id the stage records ``stages`` (release.json's) name, with its record; an id whose
    record is gone says so (``{"record": "missing"}``)."""
    ids = {i for s in stages.values() for i in [s.get("run_environment"), *(s.get("case_environments") or {})]
           if isinstance(i, str) and i != UNRECORDED}
    return {i: read_environment(ws, i) or {"record": "missing"} for i in sorted(ids)}
