"""Derived terms of pseudo and revised labels: a pseudo kidney of pseudo left and right kidneys,
as the dataset's own left and right kidneys give a derived kidney — in the release's ``labels``
(store-grid volume, origin of the least reviewed part) and in the ``qc`` table (measured, judged)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.config import PipelineConfig
from curator.pseudolabel.derived import derived_plans
from curator.qc.release import exclude_unstored, exclude_with_parts
from curator.qc.stage import QCStage
from curator.release.build import build_release
from curator.runner.context import Context
from curator.runner.run import run_stage
from curator.schema import to_arrow
from curator.store import CaseStore
from curator.taxonomy import load_taxonomy
from curator.testing.stores import phantom_workspace, record_runs

KIDNEYS = ("kidney_left", "kidney_right")


def _row(term: str, origin: str, annotated: bool = False, derived: bool = False) -> dict[str, Any]:
    return {"case_id": "c", "term_id": term, "origin": origin, "layer": origin, "annotated": annotated,
            "derived": derived}


def test_derived_plans_follow_the_datasets_rule() -> None:
    tax = load_taxonomy()

    def terms(*rows: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
        return {p["term_id"]: (p["origin"], p["members"]) for p in derived_plans(list(rows), tax)}

    pseudo = terms(_row("kidney_left", "pseudo"), _row("kidney_right", "pseudo"))
    assert pseudo == {"kidney": ("pseudo", {"kidney_left": "pseudo", "kidney_right": "pseudo"})}
    revised = terms(_row("kidney_left", "revised"), _row("kidney_right", "revised"))
    assert revised == {"kidney": ("revised", {"kidney_left": "revised", "kidney_right": "revised"})}
    # a mix is as reviewed as its least reviewed part: the pseudo right kidney no person checked
    mixed = terms(_row("kidney_left", "revised"), _row("kidney_right", "pseudo"))
    assert mixed["kidney"][0] == "pseudo"
    assert terms(_row("kidney_left", "original", annotated=True), _row("kidney_right", "pseudo"))["kidney"][0] == \
        "pseudo"
    # a part missing derives nothing, nor does a dataset term it does not annotate completely
    assert terms(_row("kidney_right", "pseudo")) == {}
    assert terms(_row("kidney_left", "original"), _row("kidney_right", "pseudo")) == {}
    # the dataset's own derived kidney is not derived again; nor is a term of originals only
    assert terms(_row("kidney_left", "original", True), _row("kidney_right", "original", True),
                 _row("kidney", "original", True, derived=True), _row("liver", "pseudo")) == {}
    assert terms(_row("kidney_left", "original", True), _row("kidney_right", "original", True),
                 _row("liver", "pseudo")) == {}


def _context(tmp: Path) -> Context:
    cfg = PipelineConfig.from_dict({
        "workspace": str(tmp / "ws"),
        "stages": {"qc": {"min_cohort": 2}, "dedup": {"enabled": False}},
        "executor": {"kind": "local", "workers": 1, "progress": False},
        "release": {"root": str(tmp / "releases"), "collection": "t", "version": "0.1.0"},
    })
    return Context(cfg)


@pytest.fixture(scope="module")
def kidney_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, dict[str, dict[str, Any]]]:
    """Six phantom cases whose dataset draws no kidneys: c000-c002 have pseudo left and right
    kidneys, c003 a revised left and a pseudo right kidney, c004 a pseudo right kidney only, and
    c005 its kidneys drawn by the dataset. Returns the context
    and, per case, the store-grid voxels of the union of its kidneys."""
    return _kidney_ws(tmp_path_factory.mktemp("derived"))


def _kidney_ws(tmp: Path, revised_lost: bool = False) -> tuple[Context, dict[str, dict[str, Any]]]:
    """:func:`kidney_ws`'s workspace; ``revised_lost``: c003's store rebuilt without its revised
    layer (``revised_label_lost``) while ``_labels_revised`` still lists its left kidney."""
    ws = phantom_workspace(tmp / "ws", n_cases=6)
    labels = ws.read_table("labels")
    assert labels is not None
    own, pseudo, revised = [], [], []
    union: dict[str, dict[str, Any]] = {}
    for r in labels.to_pylist():
        keep = r["case_id"].endswith("c005") or r["term_id"] not in KIDNEYS
        own.append(r) if keep else None
    for i in range(5):
        cid = f"Phantom__c{i:03d}"
        path = ws.stores_dir / f"{cid}.zarr"
        old = CaseStore(path)
        (plane, values), = [(np.asarray(a[...]), v) for a, v in old.planes("original")]
        geometry, attrs, image, body = old.geometry, old.attrs, np.asarray(old.image[...]), old.body()
        code = {ts[0]: c for c, ts in values.items()}
        kid = np.where(np.isin(plane, [code[k] for k in KIDNEYS]), plane, 0)
        rest = np.where(np.isin(plane, [code[k] for k in KIDNEYS]), 0, plane)
        shutil.rmtree(path)
        store = CaseStore.create(path, geometry=geometry, attrs=attrs, image=image, body=body,
                                 labels=[(rest, {c: ts for c, ts in values.items() if ts[0] not in KIDNEYS})])
        sides = KIDNEYS if i != 4 else ("kidney_right",)
        store.write_layer("pseudo", [(kid, {code[k]: [k] for k in sides})], {"origin": "pseudo"})
        ml = geometry.voxel_volume_mm3 / 1000.0
        left = plane == code["kidney_left"]
        if i == 3:  # a reviewer grew the left kidney by two slices of voxels next to it
            left = left | np.roll(left, 2, axis=0)
            store.write_layer("revised", [(left.astype(np.uint8), {1: ["kidney_left"]})], {"origin": "revised"})
            n = int(left.sum())
            revised.append({"case_id": cid, "dataset": "Phantom", "term_id": "kidney_left", "term": "left kidney",
                            "origin": "revised", "layer": "revised", "derived": False, "annotated": False,
                            "present": True, "voxels": n, "volume_ml": n * ml, "modality": "CT"})
        for k in sides:
            n = int((plane == code[k]).sum())
            pseudo.append({"case_id": cid, "dataset": "Phantom", "term_id": k, "term": k, "origin": "pseudo",
                           "layer": "pseudo", "derived": False, "annotated": False, "present": True, "voxels": n,
                           "volume_ml": n * ml, "modality": "CT"})
        both = left | (plane == code["kidney_right"])
        union[cid] = {"voxels": int(both.sum()), "volume_ml": int(both.sum()) * ml}
    if revised_lost:
        assert CaseStore(ws.stores_dir / "Phantom__c003.zarr").remove_layer("revised")
    ws.write_table("labels", to_arrow("labels", own))
    ws.write_table("_labels_pseudo", to_arrow("labels", pseudo))
    ws.write_table("_labels_revised", to_arrow("labels", revised))
    ctx = _context(tmp)
    record_runs(ctx, "ingest", "harmonize", "preprocess", "pseudolabel")
    run_stage(ctx, QCStage)
    return ctx, union


def test_pseudo_and_revised_labels_get_the_derived_terms_the_datasets_labels_get(
        kidney_ws: tuple[Context, dict[str, dict[str, Any]]]) -> None:
    ctx, union = kidney_ws
    dest = build_release(ctx, steps=["curator.preprocess.release:release_step", "curator.pseudolabel.release:release_step",
                                     "curator.qc.release:release_step"])
    rows = {(r["case_id"], r["term_id"]): r for r in pq.read_table(dest / "labels.parquet").to_pylist()}
    kidney = {cid: r for (cid, t), r in rows.items() if t == "kidney"}
    # c004 lacks its left kidney; c005's kidneys are the dataset's: its kidney is harmonize's (this
    # hand-made labels table has none), never derived at release
    assert sorted(kidney) == [f"Phantom__c{i:03d}" for i in range(4)]
    for cid, r in kidney.items():
        want = "pseudo"  # c003's revised left and pseudo right kidney: the least reviewed part's origin
        assert (r["origin"], r["layer"], r["derived"], r["annotated"], r["present"]) == (want, want, True, False, True)
        assert r["voxels"] == union[cid]["voxels"] and r["volume_ml"] == pytest.approx(union[cid]["volume_ml"])
        # measured and judged as the dataset's own derived terms are (not left unjudged, nor 'not stored')
        assert r["mean_intensity"] is not None and r["extent_mm"] is not None and r["components"] >= 1
        assert r["qc_decision"] in ("include", "truncated", "unchecked"), r["qc_reason"]
    # c003's union holds the revised left kidney, not the pseudo one it replaced
    assert rows[("Phantom__c003", "kidney_left")]["origin"] == "revised"
    assert kidney["Phantom__c003"]["voxels"] == union["Phantom__c003"]["voxels"] == \
        rows[("Phantom__c003", "kidney_left")]["voxels"] + rows[("Phantom__c003", "kidney_right")]["voxels"]
    qc = pq.read_table(dest / "qc.parquet").to_pylist()
    assert {(r["case_id"], r["origin"]) for r in qc if r["term_id"] == "kidney"} >= {
        (f"Phantom__c{i:03d}", "pseudo") for i in range(4)}


def test_a_derived_term_of_mixed_layers_is_excluded_with_a_part_from_any_layer() -> None:
    """A pseudo kidney of a revised left kidney QC excluded holds that excluded part: excluded too,
    as the loader leaves it out (the dataset's derived kidney looks at its own layer only)."""
    rows = [{"case_id": "c", "dataset": "D", "term_id": t, "term": t, "origin": o, "layer": o, "derived": d,
             "annotated": False, "present": True, "voxels": 5, "volume_ml": 1.0, "qc_decision": q, "qc_reason": w}
            for t, o, d, q, w in [("kidney_left", "revised", False, "exclude", "leaks"),
                                  ("kidney_right", "pseudo", False, "include", None),
                                  ("kidney", "pseudo", True, "include", None)]]
    out, n = exclude_with_parts(to_arrow("labels", rows), load_taxonomy())
    got = {r["term_id"]: r for r in out.to_pylist()}
    assert n == 1 and got["kidney"]["qc_decision"] == "exclude" and "kidney_left (leaks)" in got["kidney"]["qc_reason"]
    # not stored as a term of the pseudo layer, yet held: its parts are
    stored = pa.Table.from_pylist([{"case_id": "c", "term_id": t, "layer": o} for t, o in
                                   [("kidney_left", "revised"), ("kidney_right", "pseudo")]])
    fresh = [{**r, "qc_decision": None, "qc_reason": None} for r in rows]
    _, n = exclude_unstored(to_arrow("labels", fresh), stored, {"c"}, load_taxonomy())
    assert n == 0
    _, n = exclude_unstored(to_arrow("labels", fresh), stored.slice(0, 1), {"c"}, load_taxonomy())
    assert n == 2  # the right kidney lost in resampling: it and the kidney holding it


def test_the_reports_gallery_draws_a_derived_pseudo_term_as_the_union_of_its_parts(tmp_path: Path) -> None:
    """QC may exclude a pseudo kidney (oversized): the report's gallery draws the union of its
    parts, which the pseudo layer holds, not an empty mask of a term it does not hold itself."""
    from curator.io.volume import Geometry
    from curator.pseudolabel.derived import assembled_parts_mask
    from curator.report.gallery import label_figure

    g = Geometry.from_affine((24, 20, 12), np.diag([2.0, 2.0, 3.0, 1.0]))
    plane = np.zeros(g.shape, np.uint8)
    plane[3:8, 5:12, 3:8], plane[15:21, 5:12, 3:8], plane[10:13, 2:5, 2:4] = 1, 2, 3
    image = np.where(plane > 0, 150, 0).astype(np.int16)
    figures = []
    for name, values in [("parts", {1: ["kidney_left"], 2: ["kidney_right"], 3: ["liver"]}),
                         ("whole", {1: ["kidney_left", "kidney"], 2: ["kidney_right", "kidney"], 3: ["liver"]})]:
        store = CaseStore.create(tmp_path / f"{name}.zarr", geometry=g, attrs={"modality": "CT"}, image=image)
        store.write_layer("pseudo", [(plane, values)], {"origin": "pseudo"})
        figures.append(label_figure(store.path, "kidney", "pseudo", "c · kidney"))
    assert np.array_equal(assembled_parts_mask(CaseStore(tmp_path / "parts.zarr"), "kidney", load_taxonomy()),
                          np.isin(plane, [1, 2]))
    assert figures[0] is not None and figures[0] == figures[1]


def test_qc_judges_the_derived_term_the_release_assembles_when_a_revised_layer_was_lost(tmp_path: Path) -> None:
    """A store rebuilt without its revised layer gives the pseudo left kidney back at release; QC
    planned c003's kidney from the revised row the store no longer holds, wrote no row for it, and
    the release's pseudo kidney went to training with no decision (review 31 #2)."""
    ctx, _ = _kidney_ws(tmp_path, revised_lost=True)
    dest = build_release(ctx, steps=["curator.preprocess.release:release_step", "curator.pseudolabel.release:release_step",
                                     "curator.qc.release:release_step"])
    rows = {(r["case_id"], r["term_id"]): r for r in pq.read_table(dest / "labels.parquet").to_pylist()}
    assert rows[("Phantom__c003", "kidney_left")]["origin"] == "pseudo"  # the revision is gone from the store
    kidney = rows[("Phantom__c003", "kidney")]
    assert kidney["origin"] == "pseudo" and kidney["derived"]
    assert kidney["qc_decision"] in ("include", "truncated", "unchecked"), kidney["qc_reason"]
    assert kidney["mean_intensity"] is not None
