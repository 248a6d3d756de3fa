"""Label assembly by priority — original > revised > pseudo — for releases and loaders.

AbdomenAtlas-8K §3.2 ⑥: a case's final label of a term comes from the dataset's own
annotation when it has one, else from a human-revised label, else from the pseudo label.
Nothing here writes to a store: the ``original`` layer is never touched (``CaseStore``
refuses to replace it anyway), assembly only chooses which layer to read.

* :func:`assemble_rows` — one ``labels`` row per (case, term), the highest-priority origin;
  :func:`assembled_derived` adds the derived terms the pseudo and revised labels complete
  (:mod:`curator.pseudolabel.derived`: a pseudo ``kidney`` of pseudo left and right kidneys);
* :func:`release_step` — the release's ``labels`` table = harmonize's rows + revised rows
  (``curator review import``) + pseudo rows (pseudolabel stage), assembled; ``attention``'s
  ``label_state`` (pseudo | revised | accepted) and ``review_round`` from them; the revised
  labels counted by state and reviewer (``release.json["review"]["reviewed_labels"]``); and the review
  worklist of the cases the stage flagged, reviewed or not (``review/worklist.csv`` + PNG
  previews of the labels released, written into the release staging folder so ``release.json``
  checksums them);
* :func:`assembled_mask` / :func:`assembled_label_map` — the same choice on voxels, for
  loaders: a term's mask from its best layer; a single label map where an original label
  always wins a voxel over a revised or pseudo one.

>>> rows = [{"case_id": "c", "term_id": "liver", "origin": o} for o in ("pseudo", "revised")]
>>> [r["origin"] for r in assemble_rows(rows)]
['revised']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.schema import to_arrow
from curator.store import CaseStore

log = logging.getLogger("curator")
PRIORITY = ("original", "revised", "pseudo")
PRIVATE_TABLES = {"revised": "_labels_revised", "pseudo": "_labels_pseudo"}


def assemble_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, per (case, term), the row of the highest-priority origin (original > revised > pseudo)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["case_id"], r["term_id"])
        cur = best.get(key)
        if cur is None or PRIORITY.index(r["origin"]) < PRIORITY.index(cur["origin"]):
            best[key] = dict(r)
    return [best[k] for k in sorted(best)]


def release_step(builder: Any) -> None:
    """Release step: assemble ``labels`` from original, revised and pseudo rows; say each
    attention row's label state (``attention.label_state``); write ``review/``."""
    revised = _assemble(builder)
    if "attention" in builder.tables:
        from curator.pseudolabel.review_state import label_states, with_states

        states = label_states(revised)
        builder.tables["attention"] = with_states(builder.tables["attention"], states)
        write_review(builder, states)
    if revised:
        builder.extra.setdefault("review", {})["reviewed_labels"] = reviewed_labels(revised)


def reviewed_labels(revised: list[dict[str, Any]]) -> dict[str, Any]:
    """``release.json["review"]["reviewed_labels"]``: the released revised labels counted by state
    (revised, accepted; ``unrecorded`` for those imported before curator recorded it), by reviewer
    (``unrecorded``: an import that named none, or before curator recorded it) and the review
    exports they came from.

    >>> reviewed_labels([{"review_state": "revised", "reviewed_by": "Dr A", "review_export_id": "e1"},
    ...                  {"review_state": "accepted", "reviewed_by": None, "review_export_id": "e1"}])
    {'labels': 2, 'states': {'accepted': 1, 'revised': 1}, 'reviewers': {'Dr A': 1, 'unrecorded': 1}, 'exports': 1}
    """
    from collections import Counter

    states = Counter(r.get("review_state") or "unrecorded" for r in revised)
    reviewers = Counter(r.get("reviewed_by") or "unrecorded" for r in revised)
    return {"labels": len(revised), "states": dict(sorted(states.items())), "reviewers": dict(sorted(reviewers.items())),
            "exports": len({r["review_export_id"] for r in revised if r.get("review_export_id")})}


def _assemble(builder: Any) -> list[dict[str, Any]]:
    """Assemble ``labels`` (see :func:`release_step`); returns the revised rows released."""
    ws = builder.ctx.workspace
    enabled = builder.ctx.stage_enabled("pseudolabel")
    if enabled and ws.read_table(PRIVATE_TABLES["pseudo"]) is not None:
        record_models(builder)
        record_inference(builder)
    extras: dict[str, list[dict[str, Any]]] = {}
    for origin, name in PRIVATE_TABLES.items():
        if origin == "pseudo" and not enabled:  # an earlier run's pseudo labels: not this configuration's
            continue
        t = ws.read_table(name)
        extra = t.to_pylist() if t is not None and t.num_rows else []
        extras[origin] = check_revised(builder, extra) if origin == "revised" and extra else extra
    revised = extras.get("revised", [])
    if not any(extras.values()):
        # nothing to assemble: harmonize's table is left as it is, not even loaded (a table no step
        # touches is copied file-for-file: a release with millions of label rows holds none in memory),
        # unless it lacks a column added since it was written (read from the file's schema)
        if "labels" in builder.tables and not has_all_columns(builder.tables, "labels"):
            builder.tables["labels"] = with_null_columns(builder.tables["labels"], "labels")
        return revised
    base = builder.tables["labels"].to_pylist() if "labels" in builder.tables else []
    counts = {"original": len(base), **{o: len(e) for o, e in extras.items()}}
    rows = base + [r for e in extras.values() for r in e]
    assembled = assemble_rows(rows)
    derived = assembled_derived(builder, assembled)
    assembled += derived
    builder.tables["labels"] = to_arrow("labels", assembled)
    chosen = {o: sum(r["origin"] == o for r in assembled) for o in PRIORITY}
    builder.extra["label_assembly"] = {"priority": list(PRIORITY), "rows_in": counts, "rows_out": chosen,
                                       "derived": {o: sum(r["origin"] == o for r in derived) for o in PRIORITY[1:]}}
    log.info("labels assembled by priority %s: %s (%d derived from pseudo or revised labels)",
             " > ".join(PRIORITY), chosen, len(derived))
    return revised


def has_all_columns(tables: Any, name: str) -> bool:
    """Whether the release's table ``name`` has every column its declared schema has, read from
    its file's schema when it was not loaded or changed (no rows read)."""
    import pyarrow.parquet as pq

    from curator.schema import table_schema

    path = tables.file(name)
    names = pq.read_schema(path).names if path is not None else tables[name].column_names
    return set(table_schema(name).schema.names) <= set(names)


def with_null_columns(table: Any, name: str) -> Any:
    """``table`` with the nullable columns its declared schema added since it was written, null
    (a workspace's ``labels`` from before ``review_state``), without reading its rows into Python."""
    import pyarrow as pa

    from curator.schema import table_schema

    schema = table_schema(name).schema
    if set(schema.names) <= set(table.column_names):
        return table
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def assembled_derived(builder: Any, assembled: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The derived terms the cases' pseudo and revised labels complete (``kidney`` of a pseudo left
    and right kidney), measured on the workspace's stores: :mod:`curator.pseudolabel.derived`."""
    from curator.harmonize.stage import harmonize_taxonomy
    from curator.pseudolabel.derived import by_case, derived_plans, derived_rows

    tax = harmonize_taxonomy(builder.ctx)
    out: list[dict[str, Any]] = []
    for cid, mine in sorted(by_case(assembled).items()):
        if not derived_plans(mine, tax):  # most cases: no store opened
            continue
        path = builder.ctx.workspace.stores_dir / f"{cid}.zarr"
        out += derived_rows(CaseStore(path) if path.exists() else None, mine, tax)
    return out


def check_revised(builder: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Revised rows as the stores hold them now: voxels and volume counted on the store's grid
    (a rebuilt store resampled them); a row whose store lacks the reviewed term is dropped with a
    ``revised_label_lost`` problem rather than released as if it were used."""
    from curator.errors import CuratorError
    from curator.pseudolabel.review_state import revised_held
    from curator.runner.stage import problem_row

    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    out, lost = [], []
    for cid, mine in sorted(by_case.items()):
        store, held = revised_held(builder.ctx.workspace.stores_dir / f"{cid}.zarr")
        for r in mine:
            if store is None or r["term_id"] not in held:
                lost.append(problem_row("release", CuratorError(
                    "revised_label_lost", f"the reviewed {r['term_id']} is not in the case's store"),
                    dataset=r.get("dataset"), case_id=cid, path=f"stores/{cid}.zarr", severity="warning"))
                continue
            n = int(store.mask(r["term_id"], "revised").sum())
            out.append({**r, "voxels": n, "volume_ml": n * store.geometry.voxel_volume_mm3 / 1000.0,
                        "present": n > 0})
    if lost:
        log.warning("release: %d reviewed label(s) are missing from their stores (see problems)", len(lost))
        builder.add_problems(lost)
    return out


def record_models(builder: Any) -> None:
    """The ensemble behind the pseudo labels in ``release.json`` (``models``: file, SHA-256, kind,
    terms, fingerprint per member), so the card, ``curator lineage`` and ``curator diff`` see a
    retrained or swapped model."""
    from curator.pseudolabel.config import PseudolabelConfig
    from curator.release.lineage import record_model

    cfg = builder.ctx.stage_config(PseudolabelConfig, "pseudolabel")
    for spec in cfg.specs(builder.ctx.config.folder):
        facts = {"kind": spec.kind, "terms": list(spec.terms), "fingerprint": spec.fingerprint()}
        files = spec.files()
        if len(files) == 1:
            record_model(builder, spec.name, files[-1], **facts)
        else:  # a weights file next to a factory, or a MONAI bundle: the fingerprint covers every file
            builder.extra.setdefault("models", {})[spec.name] = {"files": [f.name for f in files], **facts}


def record_inference(builder: Any) -> None:
    """``release.json["inference"]``: how the released pseudo layers were computed — torch version,
    device and CPU thread count, with the number of cases each — read from the pseudo layer of each
    store the release holds (its ``preprocessed`` cases: not the workspace's other stores, of cases
    removed from a source, failed since or of a dropped source), cases labelled before curator
    recorded it counting as ``unrecorded``. Rebuilding with another torch or thread count moves the
    attention table's floats in the 7th digit; this says so."""
    if "preprocessed" not in builder.tables:
        return
    root = builder.ctx.workspace.root
    seen: dict[str, dict[str, Any]] = {}
    for rel in sorted(builder.tables.read("preprocessed", ["store"]).column("store").to_pylist()):
        path = root / rel
        attrs = CaseStore(path).layer_attrs("pseudo") if path.is_dir() else None
        if attrs is None:
            continue
        facts = attrs.get("torch") or {"unrecorded": True}
        entry = seen.setdefault(json.dumps(facts, sort_keys=True), {**facts, "cases": 0})
        entry["cases"] += 1
    if seen:
        builder.extra["inference"] = [seen[k] for k in sorted(seen)]


def write_review(builder: Any, states: dict[tuple[str, str], Any]) -> None:
    """``<release>/review/``: worklist.csv and previews of the cases flagged for review (no
    editable files: ``curator review export`` writes those from the workspace) — every flagged
    case, those reviewed already too, each term with its label ``states`` (the release's), so a
    worklist of a later round says what earlier rounds did rather than leaving cases out."""
    from curator.pseudolabel.review import export_review
    from curator.pseudolabel.review_select import dropped_duplicates

    att = builder.tables["attention"].to_pylist()
    if not any(r["review"] for r in att):
        return
    dups = builder.tables.read("duplicates", ["case_id", "kept", "kept_case_id"]).to_pylist() \
        if "duplicates" in builder.tables else []
    res = export_review(builder.ctx.workspace.root, att, builder.staging / "review", editable=False,
                        include_reviewed=True, states=states, dropped=dropped_duplicates(dups))
    builder.extra["review"] = {"worklist": "review/worklist.csv", "cases": len(res.cases),
                               "reviewed": len(res.reviewed_included), "previews": res.previews}
    log.info("release: review worklist of %d case(s) (%d reviewed already), %d preview(s)%s", len(res.cases),
             len(res.reviewed_included), res.previews,
             f"; {len(res.duplicates)} flagged duplicate(s) dedup dropped left out" if res.duplicates else "")


def best_layer(store: CaseStore, term: str) -> str | None:
    """The layer a term's label comes from (None when no layer has it)."""
    layers = store.layers()
    for layer in PRIORITY:
        if layer in layers and term in store.terms(layer):
            return layer
    return None


def assembled_mask(store: CaseStore, term: str, box: tuple[slice, ...] | None = None
                   ) -> tuple[NDArray[np.bool_], str | None]:
    """A term's mask from its highest-priority layer, and that layer's name."""
    layer = best_layer(store, term)
    if layer is None:
        shape = store.geometry.shape if box is None else store.mask(term, "original", box).shape
        return np.zeros(shape, dtype=bool), None
    return store.mask(term, layer, box), layer


def assembled_label_map(store: CaseStore, terms: Sequence[str]) -> NDArray[np.uint16]:
    """Code k+1 for ``terms[k]``; voxels claimed by several layers go to the higher priority.

    Pseudo masks are painted first, then revised, then original, so an original label is
    never overwritten; within a layer, later terms win.
    """
    out = np.zeros(store.geometry.shape, dtype=np.uint16)
    chosen = {t: best_layer(store, t) for t in terms}
    for layer in reversed(PRIORITY):
        for k, t in enumerate(terms, start=1):
            if chosen[t] == layer:
                out[store.mask(t, layer)] = k
    return out
