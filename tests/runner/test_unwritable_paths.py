"""Paths that cannot be used are clear errors naming the setting, never "internal error"."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from curator.errors import ReleaseError, WorkspaceError
from curator.testing.pipelines import make_pipeline, run


def test_a_workspace_that_is_a_file_is_a_workspace_error(tmp_path: Path) -> None:
    pipe = make_pipeline(tmp_path, [])
    (tmp_path / "workspace").write_text("not a folder")
    with pytest.raises(WorkspaceError) as e:
        run(pipe)
    assert "workspace:" in str(e.value)


def test_an_unwritable_release_root_is_refused_before_any_stage(tmp_path: Path) -> None:
    pipe = make_pipeline(tmp_path, [])
    (tmp_path / "releases").write_text("a file where the release root should be")
    with pytest.raises(ReleaseError) as e:
        run(pipe, release=True)
    assert "release.root" in str(e.value) and "a file is in the way" in str(e.value)
    assert not list((tmp_path / "workspace" / "stages").glob("*/stage.json"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_release_root_nothing_can_be_created_in_is_refused_before_any_stage(tmp_path: Path) -> None:
    """/proc takes no new files, even for root (whom permission checks let through)."""
    import yaml

    pipe = make_pipeline(tmp_path, [])
    cfg = yaml.safe_load(pipe.read_text())
    cfg["release"]["root"] = "/proc/curator-releases"
    pipe.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ReleaseError) as e:
        run(pipe, release=True)
    assert "the release folder cannot be written" in str(e.value) and "release.root" in str(e.value)
    assert not list((tmp_path / "workspace" / "stages").glob("*/stage.json"))


def test_a_missing_registry_file_is_a_problem_row_naming_it(tmp_path: Path) -> None:
    from curator.testing.pipelines import table

    pipe = make_pipeline(tmp_path, [{"dataset": "MSD_Spleen", "root": str(tmp_path / "spleen")}],
                         registry=[tmp_path / "nope.yaml"])
    run(pipe, stages=["ingest"])  # the run goes on: an unreadable extra file is a problem, not a crash
    rows = table(pipe, "problems__ingest").to_pylist()
    assert any("nope.yaml" in (r["path"] or "") + r["message"] and r["kind"] == "invalid_dataset_spec"
               for r in rows), rows


def test_a_workspace_folder_refusing_writes_stops_the_stage_and_the_case_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stores folder made read-only (chattr +i, another owner) was an internal error ('this is a bug
    in curator'); a case must not be cached as failed for it, so the same command retries it."""
    import errno

    from curator.config import PipelineConfig
    from curator.io.fsutil import atomic_path
    from curator.runner.context import Context
    from curator.runner.executors import InlineExecutor
    from curator.runner.run import run_stage
    from curator.runner.stage import CaseOutput
    from curator.testing.stages import ProbeStage

    denied = {"c001"}

    def process(cls, task, config, env):  # type: ignore[no-untyped-def]
        with atomic_path(Path(env.workspace) / "out" / f"{task.case_id}.txt") as tmp:
            if task.case_id in denied:
                raise PermissionError(errno.EPERM, "Operation not permitted", str(tmp))
            tmp.write_text("x")
        return CaseOutput()

    monkeypatch.setattr(ProbeStage, "process", classmethod(process))
    cfg = PipelineConfig.from_dict({"workspace": str(tmp_path / "ws"), "stages": {"probe": {"n_cases": 3}},
                                    "executor": {"progress": False}})
    ctx = Context(cfg)
    ctx.workspace.init()
    with pytest.raises(WorkspaceError) as e:
        run_stage(ctx, ProbeStage, InlineExecutor())
    assert e.value.kind == "folder_unwritable"
    assert "out/" in str(e.value) and "c001" in str(e.value) and "writable" in str(e.value)
    assert not list((tmp_path / "ws" / "out").glob(".*tmp-*"))
    denied.clear()  # the folder made writable again: the same command finishes, c001 included
    rep = run_stage(ctx, ProbeStage, InlineExecutor())
    assert (rep.cached, rep.ran, rep.failed) == (1, 2, 0)


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC])
def test_a_cache_that_cannot_be_written_is_skipped_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                err: int) -> None:
    """Atomic writes say a read-only or full folder as WorkspaceError (folder_unwritable,
    disk_full); verify's file cache in the home folder and dedup's comparison cache caught
    only OSError, so `curator verify` with a read-only home crashed. Both are caches: skipped."""
    from curator.dedup.detect import MatchCache
    from curator.io import fsutil
    from curator.release import verify_cache

    def refuse(a: object, b: object) -> None:
        raise OSError(err, os.strerror(err), str(b))

    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fsutil.os, "replace", refuse)
    verify_cache.remember(tmp_path, {str(tmp_path / "x"): ([1], "abc")})  # raised WorkspaceError
    assert str(tmp_path / "x") in verify_cache._VERIFIED
    cache = MatchCache(tmp_path / "m.json", 0.1)
    cache.entries["k"] = {"x": 1}
    cache.used.add("k")
    cache.save()
    assert not (tmp_path / "m.json").exists()
