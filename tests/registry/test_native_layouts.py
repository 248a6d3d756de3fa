"""One test per registry dataset: a tiny fake download in the dataset's native layout goes
through ingest + harmonize, and every case and every written label value is found and named.

The fake downloads come from ``curator.testing.registry_fixtures.FIXTURES`` (written by hand from the layout
facts), not from the registry's patterns, so a wrong YAML pattern fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.registry import load_registry
from curator.testing.native import write_tree
from curator.testing.registry_fixtures import FIXTURES
from curator.workspace import Workspace

BAD_KINDS = {"label_unmapped", "label_values_undeclared", "term_unknown", "duplicate_case", "layout_no_match"}


def run(tmp: Path, dataset: str, root: Path) -> Workspace:
    cfg = PipelineConfig.from_dict({
        "workspace": str(tmp / "ws"), "sources": [{"dataset": dataset, "root": str(root)}],
        "executor": {"kind": "local", "workers": 1, "progress": False}})
    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    return Workspace(tmp / "ws")


def rows(ws: Workspace, table: str) -> list[dict[str, Any]]:
    t = ws.read_table(table)
    return t.to_pylist() if t is not None else []


def test_every_registry_dataset_has_a_fixture() -> None:
    assert set(FIXTURES) == set(load_registry().names())


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_native_layout(name: str, tmp_path: Path) -> None:
    fx = FIXTURES[name]
    root = tmp_path / "download"
    write_tree(root, [(f.path, f.kind, f.values) for f in fx.files])
    ws = run(tmp_path, name, root)
    spec = load_registry().get(name)
    cases = rows(ws, "cases")
    problems = rows(ws, "problems__ingest") + rows(ws, "problems__harmonize")
    bad = [p for p in problems if p["severity"] == "error" or p["kind"] in BAD_KINDS]
    assert not bad, bad
    assert len(cases) == fx.cases, sorted(c["case_id"] for c in cases)

    # every label file (and every value in it) that belongs to the dataset is found, nothing else
    per_structure = spec.labels.encoding == "per_structure"
    written = {(f.path.rstrip("/"), 1 if per_structure else v) for f in fx.files
               if f.kind == "label" and f.expected for v in f.values}
    raw: dict[tuple[str, str], list[int]] = {}
    for r in rows(ws, "raw_labels"):
        raw.setdefault((r["case_id"], r["label_key"]), []).append(r["raw_value"])
    found = {(path, v) for c in cases for key, path in zip(c["label_keys"] or [], c["label_paths"] or [], strict=True)
             for v in raw.get((c["case_id"], key), [])}
    assert found == written
    label_files = {f.path.rstrip("/") for f in fx.files if f.kind == "label" and f.expected}
    assert {p for c in cases for p in c["label_paths"] or []} == label_files

    # harmonize names every raw value: a present term row covers each (key, value)
    labels = rows(ws, "labels")
    for (cid, key), values in raw.items():
        present = [r for r in labels if r["case_id"] == cid and r["present"]]
        for v in (x for x in values if x not in spec.labels.ignore):
            assert any((key in (r["label_keys"] or [])) if per_structure else (v in (r["raw_values"] or []))
                       for r in present), (cid, key, v)
    for c in cases:
        if c["has_label"]:
            assert any(r["case_id"] == c["case_id"] for r in labels), c["case_id"]
        else:
            assert not any(r["case_id"] == c["case_id"] for r in labels)
