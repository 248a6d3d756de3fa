"""The cache of files and stores found intact (``curator.release.verify_cache``): appended to, one
file per release, read on incrementally — a loader worker notes thousands of stores."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from curator.release import verify_cache


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})
    monkeypatch.setattr(verify_cache, "_DISK", {})
    return tmp_path / "cache"


def _new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})
    monkeypatch.setattr(verify_cache, "_DISK", {})


def test_noting_a_store_appends_a_line(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each store noted rewrote the whole cache (a JSON object of up to 20,000 entries): 10,000
    stores noted one by one took 277 s, in every loader worker; beyond 20,000 files the oldest
    were dropped, so a release of more cases was hashed again by every new process."""
    rel = tmp_path / "rel"
    rel.mkdir()
    n = 25_000
    for i in range(n):
        verify_cache.remember(rel, {f"{rel}/stores/c{i}.zarr": ([i], f"{i:064x}")})
        if i == 0:
            path = verify_cache.cache_file(rel)
            inode = path.stat().st_ino
    assert path.stat().st_ino == inode  # never rewritten
    assert len(path.read_text().splitlines()) == n
    _new_process(monkeypatch)
    assert all(verify_cache.already_checked(rel, f"{rel}/stores/c{i}.zarr", [i], f"{i:064x}") for i in range(n))
    assert not verify_cache.already_checked(rel, f"{rel}/stores/c0.zarr", [1], f"{0:064x}")  # its files changed


def test_each_release_has_its_own_cache(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    verify_cache.remember(a, {f"{a}/x.parquet": ([1], "h1")})
    verify_cache.remember(b, {f"{b}/x.parquet": ([2], "h2")})
    assert verify_cache.cache_file(a) != verify_cache.cache_file(b)
    _new_process(monkeypatch)
    assert verify_cache.already_checked(a, f"{a}/x.parquet", [1], "h1")
    assert not verify_cache.disk_cache(a).entries.get(f"{b}/x.parquet")  # b's entries are not read with a's


def test_another_process_notes_are_read_on(cache_dir: Path, tmp_path: Path) -> None:
    """A process sees what others appended since it last looked (only the new lines are parsed)."""
    rel = tmp_path / "rel"
    verify_cache.remember(rel, {f"{rel}/a": ([1], "ha")})
    assert verify_cache.disk_cache(rel).entries == {f"{rel}/a": [[1], "ha"]}
    with verify_cache.cache_file(rel).open("a") as f:  # another process
        f.write(json.dumps([f"{rel}/b", [2], "hb"]) + "\n" + '["half a line')
    cache = verify_cache.disk_cache(rel)
    assert cache.entries == {f"{rel}/a": [[1], "ha"], f"{rel}/b": [[2], "hb"]}
    with verify_cache.cache_file(rel).open("a") as f:
        f.write('", [3], "hc"]\n')
    assert verify_cache.disk_cache(rel).entries["half a line"] == [[3], "hc"]  # once whole


def _note_many(args: tuple[str, str, int]) -> None:
    cache, rel, k = args
    import os

    os.environ["CURATOR_CACHE_DIR"] = cache
    for i in range(300):
        verify_cache.remember(Path(rel), {f"{rel}/w{k}/{i}": ([i], "h" * 64)})


def test_processes_noting_at_once_lose_nothing(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = tmp_path / "rel"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        pool.map(_note_many, [(str(cache_dir), str(rel), k) for k in range(3)])
    _new_process(monkeypatch)
    entries = verify_cache.disk_cache(rel).entries
    assert len(entries) == 900 and all(v == [[int(p.rsplit("/", 1)[1])], "h" * 64] for p, v in entries.items())


def test_a_cache_of_mostly_superseded_lines_is_compacted(cache_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rel = tmp_path / "rel"
    verify_cache.remember(rel, {f"{rel}/kept": ([0], "k")})
    for i in range(verify_cache.COMPACT_LINES + 5):  # one file, changed and checked again and again
        verify_cache.remember(rel, {f"{rel}/t": ([i], "h")})
    lines = verify_cache.cache_file(rel).read_text().splitlines()
    assert len(lines) < verify_cache.COMPACT_LINES
    _new_process(monkeypatch)
    assert verify_cache.disk_cache(rel).entries == {f"{rel}/kept": [[0], "k"], f"{rel}/t": [[i], "h"]}


def test_an_unwritable_cache_folder_is_skipped(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = tmp_path / "rel"
    cache_dir.mkdir()
    (cache_dir / "verified").write_text("not a folder")  # the cache file cannot be made
    verify_cache.remember(rel, {f"{rel}/a": ([1], "ha")})
    assert verify_cache.already_checked(rel, f"{rel}/a", [1], "ha")  # this process remembers
