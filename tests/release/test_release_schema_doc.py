"""A release says what its columns mean: ``SCHEMA.md`` and DuckDB column comments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from curator.release.integrity import verify_release
from curator.release.query import Release
from curator.release.schema_doc import schema_markdown
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
