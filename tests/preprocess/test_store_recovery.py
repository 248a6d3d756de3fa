"""A workspace store damaged by hand or by an interrupted run: preprocess rebuilds it from the
inputs, no failure about a store is cached, and no release ships a case without its store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curator.config import PipelineConfig
from curator.errors import ReleaseError, WorkspaceError
from curator.pipeline import run_pipeline
from curator.store import CaseStore
from tests.preprocess.conftest import Tiny
from tests.preprocess.test_stage import _copy_workspace

CID = "TinyKits__case_00001"


def _preprocess(config: PipelineConfig) -> tuple[int, int, int]:
    res = run_pipeline(config, stages=["ingest", "preprocess"], release=False)
    rep = next(r for r in res.reports if r.stage == "preprocess")
    return rep.ran, rep.cached, rep.failed


def _setup(tiny: Tiny, tmp_path: Path) -> tuple[Path, PipelineConfig, Path, np.ndarray]:
    root = _copy_workspace(tiny, tmp_path)
    store = root / "ws" / "stores" / f"{CID}.zarr"
    return root, PipelineConfig.load(root / "pipeline.yaml"), store, CaseStore(store).read("image")


def _empty_root_attrs(store: Path) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"] = {}
    (store / "zarr.json").write_text(json.dumps(meta))


def test_a_store_folder_without_its_root_zarr_json_is_rebuilt_not_failed(tiny: Tiny, tmp_path: Path) -> None:
    """Tester 36 #1: the rebuild failed the case (store_missing, from reading the old store for a
    revised layer), the failure was cached, and the release shipped without the case's store."""
    _, config, store, before = _setup(tiny, tmp_path)
    (store / "zarr.json").unlink()
    assert _preprocess(config) == (1, 4, 0)
    assert np.array_equal(CaseStore(store).read("image"), before)


def test_a_store_whose_root_attributes_are_lost_is_rebuilt_and_named(tiny: Tiny, tmp_path: Path) -> None:
    """Tester 36 #2: a root zarr.json without its curator attributes passed the cache check and
    crashed the release (KeyError: 'curator' at store.py) on every later run."""
    from curator.release.build import build_release
    from curator.runner.context import Context

    root, config, store, before = _setup(tiny, tmp_path)
    _empty_root_attrs(store)
    with pytest.raises(WorkspaceError) as e:
        _ = CaseStore(store).geometry
    assert e.value.kind == "store_damaged" and str(store) in str(e.value) and "curator attributes" in str(e.value)
    with pytest.raises(ReleaseError) as r:  # released before preprocess ran again: refused, naming the store
        build_release(Context(config))
    assert r.value.kind == "store_damaged" and CID in str(r.value) and "zarr.json" in str(r.value)
    assert not (root / "releases" / "t" / "0.2.0").exists()
    assert _preprocess(config) == (1, 4, 0)  # the cache check sees it: rebuilt
    assert np.array_equal(CaseStore(store).read("image"), before)
    build_release(Context(config))


def test_a_damaged_store_holding_an_unreadable_revised_layer_is_rebuilt_with_a_warning(tiny: Tiny,
                                                                                       tmp_path: Path) -> None:
    """The revised layer of a store being rebuilt is kept when it reads whole; in a store that lost
    its geometry it cannot be placed, so the rebuild goes on and a warning names it."""
    root, config, store, _ = _setup(tiny, tmp_path)
    s = CaseStore(store)
    s.write_layer("revised", [(np.ones(s.geometry.shape, np.uint8), {1: ["liver"]})], {"origin": "revised"})
    _empty_root_attrs(store)
    assert _preprocess(config) == (1, 4, 0)
    rows = pq.read_table(root / "ws" / "tables" / "problems__preprocess.parquet").to_pylist()
    lost = [r for r in rows if r["kind"] == "revised_label_lost"]
    assert [r["case_id"] for r in lost] == [CID] and lost[0]["severity"] == "warning"
    assert "review import" in lost[0]["message"] and CaseStore(store).layers() == ["original"]


def _cache_a_store_failure(root: Path, config: PipelineConfig) -> None:
    """What an earlier curator left: preprocess's cached result of the case a failure about its store."""
    from curator.workspace import Workspace

    path = Workspace(root / "ws").case_result_path("preprocess", CID)
    res = json.loads(path.read_text())
    row = {"stage": "preprocess", "dataset": "TinyKits", "case_id": CID, "path": "x", "kind": "store_missing",
           "severity": "error", "message": "no Zarr store here. What to do: run the preprocess stage first"}
    res.pop("sha256", None)  # an earlier curator wrote no checksum
    path.write_text(json.dumps({**res, "rows": {}, "problems": [row], "failed": True}))


def test_a_cached_failure_about_the_store_is_run_again(tiny: Tiny, tmp_path: Path) -> None:
    """The failure was cached under the same code, so deleting the store changed nothing."""
    root, config, store, before = _setup(tiny, tmp_path)
    _cache_a_store_failure(root, config)
    assert _preprocess(config) == (1, 4, 0)
    assert np.array_equal(CaseStore(store).read("image"), before)


def test_a_release_of_cases_lacking_stores_is_refused_and_verify_names_one(tiny: Tiny, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A case whose preprocess failed on its store (not its input) has no store: the release shipped
    without its store and labels while `curator verify` said OK."""
    from curator.preprocess import release as pre_release
    from curator.release.build import build_release
    from curator.release.integrity import verify_release
    from curator.runner import run as runner
    from curator.runner.context import Context

    root, config, _, _ = _setup(tiny, tmp_path)
    _cache_a_store_failure(root, config)
    monkeypatch.setattr(runner, "_not_cached", lambda res: False)  # an earlier curator: the failure is reused
    assert _preprocess(config) == (0, 5, 1)
    with pytest.raises(ReleaseError) as e:
        build_release(Context(config))
    assert e.value.kind == "store_missing" and f"{CID} (store_missing)" in str(e.value)
    assert "curator run" in str(e.value)
    monkeypatch.setattr(pre_release, "_refuse_store_failures", lambda b, p: None)  # the release an earlier one wrote
    rep = verify_release(build_release(Context(config)))
    assert not rep.ok and rep.stores_lacking == [f"{CID} (store_missing)"] and not rep.modified
