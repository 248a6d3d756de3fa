"""Every SQL example in README.md and docs/*.md runs on the demo release; the README's answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import curator

ROOT = Path(__file__).resolve().parents[2]


def _examples() -> list[tuple[str, str]]:
    out = [("README.md", m.group(1)) for m in
           re.finditer(r'curator query releases/demo(?:/0\.1\.0)? "([^"]+)"', (ROOT / "README.md").read_text())]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```sql\n(.*?)```", doc.read_text(), re.DOTALL):
            body = "\n".join(line.split("--")[0] for line in block.splitlines())
            out += [(doc.name, q.strip()) for q in body.split(";") if q.strip()]
    return out


EXAMPLES = _examples()


def test_the_docs_hold_sql_examples() -> None:
    """The extraction itself (an edit to the docs' layout would otherwise test nothing)."""
    where = {w for w, _ in EXAMPLES}
    assert {"README.md", "qc.md", "releases.md", "dedup.md"} <= where and len(EXAMPLES) >= 10


@pytest.mark.parametrize("where,query", EXAMPLES, ids=[f"{w}:{i}" for i, (w, _) in enumerate(EXAMPLES)])
def test_a_documented_query_runs_on_the_demo_release(demo_base: Path, where: str, query: str) -> None:
    rows = curator.open_release(demo_base / "releases" / "demo" / "0.1.0").sql(query).fetchall()
    if where == "README.md":  # the first thing a new user runs after `curator demo`: an empty answer looks broken
        assert rows, query
