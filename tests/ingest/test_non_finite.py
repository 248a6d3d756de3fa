"""NaN/±Inf image voxels: rejected by default (`non_finite_values`, whose remedy names the fix for
that file); a dataset's `fixes: {non_finite: {value: ...}}` sets them to a value in every reader
(ingest, dedup, preprocess) and ingest counts them in a `non_finite_replaced` info row (tester 23:
8 NaN voxels outside the body rejected a registered CT)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curator.dedup import report as dedup_report
from curator.errors import InputError
from curator.io.formats import check_finite, read_volume
from curator.registry.fixes import validate_fixes
from curator.store import CaseStore
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import grid
from curator.testing.pipelines import make_pipeline, run, table

G = grid((16, 16, 8), (2.0, 2.0, 3.0), "RAS")
BAD = (slice(0, 2), slice(0, 2), slice(0, 2))  # 8 NaN voxels in a corner, outside the body


def ct(body: tuple[slice, ...] = (slice(3, 13), slice(3, 13), slice(None))) -> np.ndarray:
    a = np.full(G.shape, -1000.0, np.float32)
    a[body] = 40 + np.random.default_rng(0).normal(0, 15, a[body].shape)
    return a


def with_nan() -> np.ndarray:
    a = ct()
    a[BAD] = np.nan
    a[15, 15, 7], a[15, 0, 7] = np.inf, -np.inf
    return a


def _yaml(tmp: Path, name: str, **kw: Any) -> str:
    d = {"name": name, "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{x, title={x}}", "layout": [{"image": "{case}.nii.gz"}], "labels": {"encoding": "none"},
         **kw}
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return str(tmp / f"{name}.yaml")


def test_nan_rejects_the_case_unless_the_dataset_declares_the_fix(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "raw"
    save_nifti(raw / "a" / "nan.nii.gz", with_nan(), G, np.float32)
    save_nifti(raw / "a" / "other.nii.gz", ct((slice(4, 10), slice(2, 14), slice(1, 7))), G, np.float32)
    save_nifti(raw / "b" / "nan.nii.gz", with_nan(), G, np.float32)
    save_nifti(raw / "b" / "kept.nii.gz", with_nan(), G, np.float32)  # the fix's `when` does not match it
    fixes = {"non_finite": {"value": -1024, "when": "^nan", "reason": "NaN outside the registered field of view"}}
    pipe = make_pipeline(tmp_path, [{"dataset": _yaml(tmp_path, "A"), "root": str(raw / "a")},
                                    {"dataset": _yaml(tmp_path, "B", fixes=fixes), "root": str(raw / "b")}],
                         stages={"preprocess": {"target_spacing_mm": [2.0, 2.0, 3.0], "crop": "none"},
                                 "harmonize": {"enabled": False}, "qc": {"enabled": False},
                                 "pseudolabel": {"enabled": False}})
    run(pipe, stages=["ingest", "dedup", "preprocess"])
    assert {c["case_id"] for c in table(pipe, "cases").to_pylist()} == {"A__other", "B__nan"}
    rows = {(p["case_id"], p["kind"]): p for p in table(pipe, "problems__ingest").to_pylist()}
    assert {k: p["severity"] for k, p in rows.items()} == {
        ("A__nan", "non_finite_values"): "error", ("B__kept", "non_finite_values"): "error",
        ("B__nan", "non_finite_replaced"): "info"}
    # the default stays a refusal, and says which fix to declare for that very file
    refused = rows[("A__nan", "non_finite_values")]["message"]
    assert "10 of 2048 voxels are NaN or infinite" in refused
    assert "fixes: {non_finite: {value: -1024, when: '^nan\\.nii\\.gz$'" in refused and "docs/registry.md" in refused
    # the fix: counted, and applied wherever the image is read
    info = rows[("B__nan", "non_finite_replaced")]
    assert info["path"] == "B:nan.nii.gz" and "10 of 2048 voxels" in info["message"] and "set to -1024" in info["message"]
    assert "B__nan" in {h["case_id"] for h in table(pipe, "hashes").to_pylist()}  # dedup read it too
    assert {r["case_id"] for r in table(pipe, "preprocessed").to_pylist()} == {"A__other", "B__nan"}
    store = CaseStore(tmp_path / "workspace" / "stores" / "B__nan.zarr").physical_image().astype(np.float32)
    want = with_nan()
    want[~np.isfinite(want)] = -1024
    assert np.isfinite(store).all() and np.array_equal(store[BAD], want[BAD])
    assert np.allclose(store, want.astype(np.float16).astype(np.float32))
    # `curator dedup report` draws a group's members from their source files, with the fix too
    shown: list[Any] = []
    monkeypatch.setattr(dedup_report, "figure", lambda gid, members, png: shown.extend(members))
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    group = [{"group_id": "g", "case_id": "B__nan", "dataset": "B", "kept": True, "reason": "kept"}]
    dedup_report.build_report(group, cases, {"B": raw / "b"}, tmp_path / "report", fixes={"B": fixes})
    assert shown[0].error is None and np.isfinite(shown[0].array).all()


def test_min_fills_with_the_smallest_finite_value_and_never_writes_the_source(tmp_path: Path) -> None:
    a = with_nan() + 1000  # MR-like: 0 outside, ~1040 inside
    save_nifti(tmp_path / "mr.nii", a, G, np.float32)  # uncompressed: nibabel memory-maps it (copy on write)
    for fill, value in (("min", 0.0), (0.0, 0.0), (-5.0, -5.0)):
        vol = read_volume(tmp_path / "mr.nii", role="image", non_finite=fill)
        assert vol.meta["non_finite_filled"] == [10, value]
        assert np.isfinite(vol.array).all() and (vol.array[BAD] == value).all()
    frozen = with_nan()
    frozen.flags.writeable = False
    out, filled = check_finite(frozen, "x.nii", -1024.0)
    assert filled == (10, -1024.0) and np.isnan(frozen[BAD]).all() and (out[BAD] == -1024).all()
    clean = tmp_path / "clean.nii.gz"
    save_nifti(clean, ct(), G, np.float32)
    assert "non_finite_filled" not in read_volume(clean, role="image", non_finite=0.0).meta
    allnan = tmp_path / "allnan.nii.gz"
    save_nifti(allnan, np.full(G.shape, np.nan, np.float32), G, np.float32)
    with pytest.raises(InputError, match="no value to keep"):
        read_volume(allnan, role="image", non_finite="min")
    with pytest.raises(InputError, match=re.escape("fixes: {non_finite:")):  # the reader's own remedy names the fix
        read_volume(tmp_path / "mr.nii", role="image")


@pytest.mark.parametrize(("params", "wrong"), [
    ({"value": 0}, []), ({"value": -1024.0}, []), ({"value": "min"}, []),
    ({"value": "max"}, ["value"]), ({"value": float("nan")}, ["value"]), ({"value": float("inf")}, ["value"]),
    ({"value": True}, ["value"]), ({}, ["value"]), ({"value": 0, "fill": 1}, ["fill"]),
])
def test_the_fix_s_value_is_validated(params: dict[str, Any], wrong: list[str]) -> None:
    problems = validate_fixes({"non_finite": params})
    assert [loc for loc, _, _ in problems] == [f"fixes.non_finite.{k}" for k in wrong], problems


@pytest.mark.parametrize(("modality", "value"), [("CT", -1024), ("PT", 0)])
def test_the_refusal_s_fix_is_yaml_that_can_be_pasted(modality: str, value: int) -> None:
    """The snippet the `non_finite_values` remedy offers parses and declares a valid fix for that very
    file (it had two extra `}` and did not parse: tester 27)."""
    from curator.ingest.stage import _non_finite_hint
    rel = "PETCT_0af7/03-25-2006-NA-PET-CT 1/SUV.nii.gz"
    err = _non_finite_hint(InputError("non_finite_values", "8 of 64 voxels are NaN", path="x"), rel, modality)
    (snippet,) = re.findall(r"`(fixes: .*?)`", str(err))
    fixes = yaml.safe_load(snippet)["fixes"]
    assert fixes == {"non_finite": {"value": value, "when": "^" + re.escape(rel) + "$",
                                    "reason": "NaN outside the field of view"}}
    assert validate_fixes(fixes) == [] and re.search(fixes["non_finite"]["when"], rel)
