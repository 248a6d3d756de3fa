"""A full disk ends the stage with a clear error and leaves nothing half-written."""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curator.demo.data import build_demo_data
from curator.errors import WorkspaceError
from curator.testing.pipelines import make_pipeline, run


def _sources(raw: Path) -> list[dict[str, str]]:
    return [{"dataset": "MSD_Spleen", "root": str(raw / "Task09_Spleen")},
            {"dataset": "KiTS23", "root": str(raw / "kits23")},
            {"dataset": str(raw / "DemoTotalSeg.yaml"), "root": str(raw / "TotalSegmentator")}]


def _assert_nothing_half_written(ws: Path) -> None:
    for p in ws.rglob("*"):
        assert ".tmp-" not in p.name, p
        if p.suffix == ".parquet":
            pq.read_table(p)  # complete
        elif p.suffix == ".json":
            json.loads(p.read_text())


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "raw"
    build_demo_data(root)
    return root


def test_simulated_enospc_on_table_write(tmp_path: Path, raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = make_pipeline(tmp_path, _sources(raw))
    import curator.workspace as wsmod

    real = wsmod.write_parquet

    def full(table, path):  # type: ignore[no-untyped-def]
        real(table.slice(0, 1), path)  # something lands on disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wsmod, "write_parquet", full)
    with pytest.raises(WorkspaceError) as e:
        run(pipe, stages=["ingest"])
    assert e.value.kind == "disk_full" and "free disk space" in str(e.value)
    ws = tmp_path / "workspace"
    assert not (ws / "tables" / "cases.parquet").exists()
    _assert_nothing_half_written(ws)
    monkeypatch.setattr(wsmod, "write_parquet", real)  # space freed: the same command finishes
    rep = run(pipe, stages=["ingest"]).reports[0]
    assert rep.cached == rep.planned  # per-case work written before the failure was kept
    assert pq.read_table(ws / "tables" / "cases.parquet").num_rows > 0


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, check=False)
    return res.returncode == 0


def test_real_full_disk(tmp_path: Path, raw: Path) -> None:
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root); the simulated test covers the logic")
    try:
        pipe = make_pipeline(tmp_path, _sources(raw))
        text = pipe.read_text().replace(str(tmp_path / "workspace"), str(mnt / "workspace"))
        pipe.write_text(text)
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * (free - 40 * 1024))  # leave room for a few results only
        with pytest.raises(WorkspaceError) as e:
            run(pipe, stages=["ingest"])
        assert e.value.kind == "disk_full"
        _assert_nothing_half_written(mnt / "workspace")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_while_writing_a_release_is_disk_full_and_keeps_nothing(tmp_path: Path, raw: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from curator.config import PipelineConfig
    from curator.errors import ReleaseError
    from curator.release import build as buildmod
    from curator.runner.context import Context

    off = {"enabled": False}
    pipe = make_pipeline(tmp_path, _sources(raw)[:1], stages={"dedup": off, "harmonize": off, "preprocess": off,
                                                              "pseudolabel": off, "qc": off})
    run(pipe)
    real = buildmod.copy_table

    def full(src: Path, dest: Path, name: str) -> None:
        dest.write_bytes(src.read_bytes()[:100])  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dest))

    monkeypatch.setattr(buildmod, "copy_table", full)
    ctx = Context(PipelineConfig.load(pipe))
    with pytest.raises(ReleaseError) as e:  # an internal OSError ("this is a bug in curator") before
        buildmod.build_release(ctx)
    releases = tmp_path / "releases" / "test"
    # was "no space left while writing the release 0.1.0 (0)": a chunk's name in a staging folder that is gone
    assert e.value.kind == "disk_full" and e.value.path == str(releases / "0.1.0")
    said = str(e.value)
    assert f"no space left on the device while writing the release 0.1.0 into {releases} (at " in said
    assert re.search(r"\(at \w+\.parquet\); nothing of it was kept", said), said
    assert f"free space on the disk holding {releases}" in said and "release.root" in said
    assert not list(releases.iterdir())  # neither the release nor its staging folder is left
    monkeypatch.setattr(buildmod, "copy_table", real)  # space freed: the same command writes it
    assert (buildmod.build_release(ctx) / "release.json").is_file()


def test_a_workspace_file_unreadable_while_releasing_is_named_as_read_not_written(
        tmp_path: Path, raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any OSError while building became "cannot write the release … check that releases/ is
    writable", also for a workspace file that could not be read; the read file is named as read."""
    from curator.config import PipelineConfig
    from curator.errors import ReleaseError
    from curator.release import build as buildmod
    from curator.runner.context import Context

    off = {"enabled": False}
    pipe = make_pipeline(tmp_path, _sources(raw)[:1], stages={"dedup": off, "harmonize": off, "preprocess": off,
                                                              "pseudolabel": off, "qc": off})
    run(pipe)
    ctx = Context(PipelineConfig.load(pipe))

    def unreadable(src: Path, dest: Path, name: str) -> None:
        raise OSError(errno.EIO, "Input/output error", str(src))

    monkeypatch.setattr(buildmod, "copy_table", unreadable)
    with pytest.raises(ReleaseError) as e:
        buildmod.build_release(ctx)
    assert e.value.kind == "release_error" and "cannot read" in str(e.value) and "writable" not in str(e.value)
    assert e.value.path is not None and e.value.path.startswith(str(ctx.workspace.root))

    def unwritable(src: Path, dest: Path, name: str) -> None:
        raise OSError(errno.EIO, "Input/output error", str(dest))

    monkeypatch.setattr(buildmod, "copy_table", unwritable)
    with pytest.raises(ReleaseError) as e:
        buildmod.build_release(ctx)
    assert "cannot write the release" in str(e.value) and "writable" in str(e.value)

    def on_a_descriptor(src: Path, dest: Path, name: str) -> None:  # an OSError's filename may be a descriptor number
        raise OSError(errno.EIO, "Input/output error", 7)

    monkeypatch.setattr(buildmod, "copy_table", on_a_descriptor)
    with pytest.raises(ReleaseError) as e:
        buildmod.build_release(ctx)
    assert "cannot write the release" in str(e.value)
