"""A release says what its columns mean: ``SCHEMA.md`` and DuckDB column comments."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from curator.config import PipelineConfig
from curator.release.integrity import verify_release
from curator.release.query import Release
from curator.release.schema_doc import schema_markdown
from curator.runner.context import Context
from curator.schema import load_schemas
from curator.testing.releases import reseal


def _sections(text: str) -> dict[str, list[str]]:
    """Table name → the column names its section of SCHEMA.md lists."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"## (\w+) \(table version \d+\)$", line)
        if head:
            current = out.setdefault(head.group(1), [])
        elif current is not None and line.startswith("| ") and not line.startswith("| column |"):
            current.append(line.split("|")[1].strip())
    return out


def test_schema_md_lists_every_table_and_column_the_release_holds(demo_base: Path) -> None:
    rel = demo_base / "releases" / "demo" / "0.1.0"
    text = (rel / "SCHEMA.md").read_text(encoding="utf-8")
    sections = _sections(text)
    files = sorted(p.stem for p in rel.glob("*.parquet"))
    assert sorted(sections) == files
    for name in files:
        assert sections[name] == pq.read_schema(rel / f"{name}.parquet").names, name
    # a description with a pipe or a line break stays in its cell; the file is checksummed like the card
    assert "volume_ml" in sections["labels"]
    info = json.loads((rel / "release.json").read_text())
    assert "SCHEMA.md" in info["files"]
    assert verify_release(rel).ok


def test_query_views_carry_the_column_descriptions_of_their_table_version(demo: Path) -> None:
    rel_path = demo / "releases" / "demo" / "0.1.0"
    descriptions = load_schemas()["labels"].descriptions
    got = dict(Release(rel_path).sql("select column_name, comment from duckdb_columns() "
                                     "where table_name = 'labels'").fetchall())
    assert got["volume_ml"] == descriptions["volume_ml"] and got["term"] == descriptions["term"]
    views = dict(Release(rel_path).sql("select view_name, comment from duckdb_views() where not internal").fetchall())
    assert views["labels"] and set(views) == {p.stem for p in rel_path.glob("*.parquet")}
    # a table of another version: its columns may mean other things, so no description is claimed
    info = json.loads((rel_path / "release.json").read_text())
    info["table_versions"]["labels"] += 1
    (rel_path / "release.json").write_text(json.dumps(info))
    reseal(rel_path)
    rows = Release(rel_path).sql("select table_name, comment from duckdb_columns() "
                                 "where table_name in ('labels', 'cases')").fetchall()
    assert all(c is None for t, c in rows if t == "labels")
    assert any(c is not None for t, c in rows if t == "cases")


def test_every_column_of_every_table_says_what_it_means() -> None:
    """README says SCHEMA.md gives every column's meaning, yet 53 columns had none (case_id and
    dataset in eight tables, preprocessed's intensity statistics, qc's bounds, terms' codes)."""
    schemas = load_schemas()
    assert {"cases", "labels", "qc", "preprocessed", "terms", "store_terms"} <= set(schemas)
    missing = [f"{name}.{f.name}" for name, ts in sorted(schemas.items()) for f in ts.schema
               if not (ts.descriptions.get(f.name) or "").strip()]
    assert not missing, f"columns without a description in manifests/tables/*.yaml: {missing}"
    rows = [line for line in schema_markdown(list(schemas), "0.0.0").splitlines()
            if line.startswith("| ") and not line.startswith("| column |")]
    assert len(rows) == sum(len(ts.schema) for ts in schemas.values())
    assert not [r for r in rows if r.rstrip().endswith("|  |")], "an empty description cell in SCHEMA.md"


def _digest_per_schema(path: Path, description: str) -> str:
    """A file's SHA-256 hex, or a folder's checksum the way ``cases.image_sha256``'s description says."""
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    assert "key=lambda p: p.parts" in description and "raw 32-byte" in description
    rel_paths = [p.relative_to(path) for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    h = hashlib.sha256()
    for p in sorted(rel_paths, key=lambda p: p.parts):
        h.update(p.as_posix().encode())
        h.update(hashlib.sha256((path / p).read_bytes()).digest())
    return h.hexdigest()


def test_input_checksums_are_recomputed_from_the_raw_files_as_schema_md_says(demo_base: Path) -> None:
    """``cases.label_sha256`` is not a file's sha256sum, nor is a DICOM series' image_sha256:
    SCHEMA.md's descriptions must give a recipe hashlib alone follows (the label one as code)."""
    rel = demo_base / "releases" / "demo" / "0.1.0"
    desc = load_schemas()["cases"].descriptions
    m = re.search(r"`(hashlib\.sha256\(.+?\)\.hexdigest\(\))`", desc["label_sha256"])
    assert m, "label_sha256's description gives the Python expression"
    ctx = Context(PipelineConfig.load(demo_base / "pipeline.yaml"))
    roots = {name: s.root for name, s in ctx.sources.items()}
    cases = pq.read_table(rel / "cases.parquet").to_pylist()
    folders = 0
    for c in cases:
        root = roots[c["source"]]

        def digest(p: str, root: Path = root) -> str:
            return _digest_per_schema(root / p, desc["image_sha256"])

        if c["image_path"]:
            folders += (root / c["image_path"]).is_dir()
            assert digest(c["image_path"]) == c["image_sha256"], c["case_id"]
        if c["label_sha256"]:
            env = {"hashlib": hashlib, "digest": digest, "label_keys": c["label_keys"], "label_paths": c["label_paths"]}
            assert eval(m.group(1), env) == c["label_sha256"], c["case_id"]  # the description's own code
    assert folders >= 3  # the demo's DICOM series
    # release.json's inputs: the SHA-256 of the JSON list of the sorted checksums, as the description says
    info = json.loads((rel / "release.json").read_text())
    assert "JSON list" in desc["image_sha256"] and "`inputs`" in desc["label_sha256"]
    for ds, entry in info["inputs"].items():
        vals = sorted(v for c in cases if c["dataset"] == ds for v in (c["image_sha256"], c["label_sha256"]) if v)
        assert entry == {"sha256": hashlib.sha256(json.dumps(vals, separators=(",", ":")).encode()).hexdigest(),
                         "n_files": len(vals)}
