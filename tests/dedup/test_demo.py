"""The demo's planted cross-dataset duplicates are grouped in its release, with reasons."""

from __future__ import annotations

from pathlib import Path

from curator.demo import run_demo
from curator.release.query import Release


def test_demo_release_groups_exactly_the_planted_duplicates(tmp_path: Path) -> None:
    demo = run_demo(tmp_path / "demo", workers=2, progress=False)
    rel = Release(demo.result.release)
    rows = rel.sql("select group_id, case_id, kept, kept_case_id, reason from duplicates").fetchall()
    groups: dict[str, set[str]] = {}
    for gid, cid, *_ in rows:
        groups.setdefault(gid, set()).add(cid)
    assert sorted(map(sorted, groups.values())) == sorted(sorted(p[:2]) for p in demo.data.duplicates)
    for _, cid, kept, kept_id, reason in rows:
        assert reason.startswith("kept:" if kept else f"same scan as {kept_id}")
    n, paths, thumbs = rel.sql("select count(*), count(thumbnail), count(thumbnail_sha256) from hashes").fetchall()[0]
    assert n > 15 and thumbs == n
    assert paths == 0, "workspace paths of thumbnails do not belong in a release"
