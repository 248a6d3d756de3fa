"""`curator gc`: workspace files no current case uses are listed, removed only when asked, and a
missing source's or an unfinished run's cases keep theirs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from curator.dedup.stage import thumbnail_relpath
from curator.errors import WorkspaceError
from curator.runner.gc import count_unused_stores, find_leftovers, kept_sources, remove_leftovers
from curator.workspace import Workspace


def _case_files(ws: Workspace, cid: str, digest: str = "a" * 64) -> None:
    (ws.stores_dir / f"{cid}.zarr" / "image").mkdir(parents=True, exist_ok=True)
    (ws.stores_dir / f"{cid}.zarr" / "image" / "c").write_bytes(b"x" * 100)
    (ws.stage_dir("pseudolabel") / "attention" / f"{cid}.zarr").mkdir(parents=True, exist_ok=True)
    for stage in ("ingest", "dedup"):
        p = ws.case_result_path(stage, cid)
        p.parent.mkdir(parents=True, exist_ok=True)
        rows = {"hashes": [{"case_id": cid, "thumbnail": thumbnail_relpath(cid, digest)}]} if stage == "dedup" else {}
        p.write_text(json.dumps({"case_id": cid, "rows": rows}))
    thumb = ws.root / thumbnail_relpath(cid, digest)
    thumb.parent.mkdir(parents=True, exist_ok=True)
    thumb.write_bytes(b"t" * 10)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path / "ws").init(bytes(range(32)))
    for cid in ("A__1", "A__2", "A__gone", "B__1", "C__failed", "A__new"):
        _case_files(w, cid)
    _case_files(w, "A__1", "b" * 64)  # A__1's image changed: a newer thumbnail, the old one superseded
    # the cases table names A__1, A__2; ingest refused C__failed (a problems row)
    w.write_table("cases", pa.table({"case_id": ["A__1", "A__2"]}))
    w.write_table("problems__ingest", pa.table({"case_id": ["C__failed", None]}))
    w.write_table("hashes", pa.table({"thumbnail": [thumbnail_relpath("A__1", "b" * 64),
                                                    thumbnail_relpath("A__2", "a" * 64)]}))
    old = w.table_path("cases").stat().st_mtime - 60  # every ingest result older than the table ...
    for p in (w.root / "stages" / "ingest" / "cases").rglob("*.json"):
        os.utime(p, (old, old))
    new = w.table_path("cases").stat().st_mtime + 60  # ... but A__new's: a run that did not finish
    os.utime(w.case_result_path("ingest", "A__new"), (new, new))
    return w


def test_leftovers_are_the_files_of_cases_no_table_names_and_superseded_thumbnails(ws: Workspace) -> None:
    found = find_leftovers(ws, kept_prefixes=["B__"])  # source B's root is missing: its cases are kept
    got = sorted((lo.kind, lo.path.relative_to(ws.root).as_posix()) for lo in found)
    assert got == sorted([
        ("store", "stores/A__gone.zarr"),
        ("attention", "stages/pseudolabel/attention/A__gone.zarr"),
        ("stage_result", ws.case_result_path("ingest", "A__gone").relative_to(ws.root).as_posix()),
        ("stage_result", ws.case_result_path("dedup", "A__gone").relative_to(ws.root).as_posix()),
        ("thumbnail", thumbnail_relpath("A__gone", "a" * 64)),
        ("thumbnail_superseded", thumbnail_relpath("A__1", "a" * 64)),
    ])
    store = next(lo for lo in found if lo.kind == "store")
    assert store.size == 100 and store.shared == 0
    assert {lo.case_id for lo in find_leftovers(ws)} == {"A__gone", "A__1", "B__1"}  # B's root is back


def test_only_remove_leftovers_changes_anything_and_a_hard_link_elsewhere_survives(ws: Workspace,
                                                                                   tmp_path: Path) -> None:
    chunk = ws.stores_dir / "A__gone.zarr" / "image" / "c"
    os.link(chunk, tmp_path / "release_chunk")  # as a release's store holds it
    found = find_leftovers(ws)
    assert next(lo for lo in found if lo.kind == "store").shared == 100
    assert chunk.exists()  # listing changed nothing
    assert remove_leftovers(ws, found) == len(found)
    assert all(not lo.path.exists() for lo in found)
    assert (tmp_path / "release_chunk").read_bytes() == b"x" * 100
    assert (ws.stores_dir / "A__1.zarr").is_dir() and (ws.root / thumbnail_relpath("A__1", "b" * 64)).is_file()
    assert ws.case_result_path("ingest", "C__failed").is_file() and ws.case_result_path("dedup", "A__new").is_file()
    assert find_leftovers(ws) == []


def test_gc_is_refused_while_a_run_holds_the_workspace(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.pipelines import make_pipeline

    pipe = make_pipeline(tmp_path, [], key=bytes(range(32)))
    ws = Workspace(tmp_path / "workspace")
    _case_files(ws.init(bytes(range(32))), "A__gone")
    old = os.stat(ws.case_result_path("ingest", "A__gone")).st_mtime - 60
    os.utime(ws.case_result_path("ingest", "A__gone"), (old, old))
    ws.write_table("cases", pa.table({"case_id": ["A__1"]}))
    with ws.locked("run"):
        res = CliRunner().invoke(app, ["gc", str(pipe), "--delete"])
        assert res.exit_code != 0 and "in use by curator run" in res.output
        with pytest.raises(WorkspaceError):
            ws.locked("gc").__enter__()
    assert (ws.stores_dir / "A__gone.zarr").is_dir()
    res = CliRunner().invoke(app, ["gc", str(pipe)], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "stores/A__gone.zarr" in res.output and "nothing was changed" in res.output
    assert (ws.stores_dir / "A__gone.zarr").is_dir()
    res = CliRunner().invoke(app, ["status", str(pipe)], env={"COLUMNS": "300"})
    assert "2 store(s) belong to no current case" in res.output
    res = CliRunner().invoke(app, ["gc", str(pipe), "--delete"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "removed 5 leftover(s)" in res.output
    assert not (ws.stores_dir / "A__gone.zarr").exists()


def test_a_source_whose_root_is_empty_or_gives_no_case_keeps_its_files(ws: Workspace, tmp_path: Path) -> None:
    full, empty = tmp_path / "full", tmp_path / "empty"  # empty: an unmounted share's mount point
    (full / "img.nii.gz").parent.mkdir()
    (full / "img.nii.gz").write_bytes(b"x")
    empty.mkdir()
    # A has cases in the table; B's root is empty; C's is full but no case of C is in the table
    got = kept_sources(ws, {"A": full, "B": empty, "C": full, "D": tmp_path / "missing"})
    assert got == {"B": "root_empty", "C": "no_case", "D": "root_missing"}
    from collections import Counter
    spared: Counter[str] = Counter()
    found = find_leftovers(ws, [f"{n}__" for n in got], spared=spared)
    assert {lo.case_id for lo in found} == {"A__gone", "A__1"}
    assert spared == {"B__": 5}  # B__1: its store, attention store, two results, thumbnail (C__failed: a table names it)
    assert {lo.case_id for lo in find_leftovers(ws)} == {"A__gone", "A__1", "B__1"}


def test_gc_delete_keeps_a_source_whose_share_is_unmounted(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.pipelines import make_pipeline

    root = tmp_path / "raw"
    root.mkdir()  # the mount point, the share not mounted
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(root)}], key=bytes(range(32)))
    ws = Workspace(tmp_path / "workspace")
    for cid in ("KiTS23__case_00000", "Old__1"):
        _case_files(ws, cid)
        p = ws.case_result_path("ingest", cid)
        os.utime(p, (p.stat().st_mtime - 60,) * 2)
    ws.write_table("cases", pa.table({"case_id": pa.array([], pa.string())}))  # the run found no case
    res = CliRunner().invoke(app, ["gc", str(pipe), "--delete"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "source KiTS23: root empty" in res.output and "its 5 file(s) kept" in res.output
    assert (ws.stores_dir / "KiTS23__case_00000.zarr").is_dir()
    assert ws.case_result_path("ingest", "KiTS23__case_00000").is_file()
    assert not (ws.stores_dir / "Old__1.zarr").exists()  # a source no longer in pipeline.yaml goes
    res = CliRunner().invoke(app, ["gc", str(pipe), "-f", "json"])
    assert json.loads(res.output)["kept_sources"] == [{"source": "KiTS23", "why": "root_empty", "files_kept": 5}]


def test_an_ingest_result_as_new_as_the_cases_table_is_kept(ws: Workspace) -> None:
    t = ws.table_path("cases").stat().st_mtime  # written in the same tick (2 s mtimes on SMB/FAT)
    os.utime(ws.case_result_path("ingest", "A__gone"), (t, t))
    assert "A__gone" not in {lo.case_id for lo in find_leftovers(ws, ["B__"])}


def test_status_counts_only_stores_and_never_fails_for_gc(ws: Workspace, tmp_path: Path) -> None:
    """status counts stores and attention stores against the tables (gc's full scan walks and
    reads every stage result); a table it cannot read leaves the count out, not status."""
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.pipelines import make_pipeline

    stores = [lo for lo in find_leftovers(ws, ["B__"]) if lo.kind in ("store", "attention")]
    assert count_unused_stores(ws, ["B__"]) == len(stores) == 2  # A__gone's; A__new's ingest result is newer
    assert count_unused_stores(ws) == 4
    pipe = make_pipeline(tmp_path, [])
    cfg = pipe.read_text().replace(str(tmp_path / "workspace"), str(ws.root))
    pipe.write_text(cfg)
    ws.table_path("problems__ingest").write_bytes(b"not parquet")
    res = CliRunner().invoke(app, ["status", str(pipe)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "gc count unavailable" in res.output and "problems__ingest" in res.output


def test_gc_never_follows_a_linked_folder_nor_counts_a_linked_store(ws: Workspace, tmp_path: Path) -> None:
    """A stage's shard folder linked to a folder outside the workspace: gc deleted the files there
    (tester 26); a linked store was measured through its link though removing it frees nothing."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "A__gone.json").write_text("{}")  # named like a case no table names
    shard = ws.case_result_path("qc", "A__x").parent
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.symlink_to(outside, target_is_directory=True)
    other = tmp_path / "other.zarr"
    (other / "image").mkdir(parents=True)
    (other / "image" / "c").write_bytes(b"y" * 500)
    (ws.stores_dir / "A__linked.zarr").symlink_to(other, target_is_directory=True)
    found = find_leftovers(ws, kept_prefixes=["B__"])
    assert not [lo for lo in found if outside in lo.path.parents]
    linked = next(lo for lo in found if lo.case_id == "A__linked")
    assert linked.size == 0
    remove_leftovers(ws, found)
    assert (outside / "A__gone.json").is_file() and (other / "image" / "c").is_file()
    assert not (ws.stores_dir / "A__linked.zarr").exists()  # only the link went
    # a linked stores/ (moved to a bigger disk): gc lists none of it, and status counts none (review 27 #4)
    _case_files(ws, "A__gone2")
    past = ws.table_path("cases").stat().st_mtime - 60  # gone before the last run
    os.utime(ws.case_result_path("ingest", "A__gone2"), (past, past))
    moved = tmp_path / "big-disk-stores"
    ws.stores_dir.rename(moved)
    ws.stores_dir.symlink_to(moved, target_is_directory=True)
    assert not [lo for lo in find_leftovers(ws, ["B__"]) if lo.kind == "store"]
    assert count_unused_stores(ws, ["B__"]) == len([lo for lo in find_leftovers(ws, ["B__"]) if lo.kind == "attention"]) == 1


def test_gc_refuses_a_missing_workspace_and_delete_with_a_skipped_source(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.pipelines import make_pipeline

    (tmp_path / "raw").mkdir()
    (tmp_path / "bad.yaml").write_text("name: Bad\nlayout: 3\n")
    import yaml

    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "raw")}], key=bytes(range(32)))
    cfg = yaml.safe_load(pipe.read_text())
    ws = Workspace(Path(cfg["workspace"]) if Path(cfg["workspace"]).is_absolute() else pipe.parent / cfg["workspace"])
    cfg["workspace"] = str(tmp_path / "no-such-workspace")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["gc", str(tmp_path / "typo.yaml")], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "no workspace at" in res.output  # it said "every file belongs to a case"
    if not ws.root.is_dir():
        ws.init(bytes(range(32)))
    _case_files(ws, "Bad__1")
    ws.write_table("cases", pa.table({"case_id": ["KiTS23__case_00000"]}))
    cfg = yaml.safe_load(pipe.read_text())
    cfg["sources"].append({"dataset": str(tmp_path / "bad.yaml"), "root": str(tmp_path / "raw")})
    pipe.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["gc", str(pipe), "--delete"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "gc --delete is refused while a source of pipeline.yaml is skipped" in res.output
    assert (ws.stores_dir / "Bad__1.zarr").is_dir()
    # status does not call the skipped source's stores "deleted cases or sources" (review 27 #4)
    res = CliRunner().invoke(app, ["status", str(pipe)], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "belong to no current case" not in res.output, res.output
    assert "gc count unavailable" in res.output and "skipped (bad.yaml), so its stores cannot be told" in res.output


def test_linked_stage_folders_still_show_what_is_current(ws: Workspace, tmp_path: Path) -> None:
    """Not looking into linked folders is for what gc deletes: the ingest results that show a run
    stopped early, and the dedup results naming kept thumbnails, are read through links (review 27)."""
    import shutil

    for stage in ("ingest", "dedup"):
        real = tmp_path / f"{stage}-elsewhere"
        shutil.move(str(ws.stage_dir(stage) / "cases"), real)
        (ws.stage_dir(stage) / "cases").symlink_to(real, target_is_directory=True)
    found = find_leftovers(ws, kept_prefixes=["B__"])
    assert "A__new" not in {lo.case_id for lo in found}  # its ingest result is newer than the cases table
    assert not [lo for lo in found if lo.kind == "thumbnail_superseded" and lo.case_id == "B__1"]
    assert {lo.case_id for lo in found if lo.kind == "store"} == {"A__gone"}


def test_a_case_back_in_its_source_keeps_its_store_while_the_run_is_unfinished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A case removed from its source (a run wrote ``cases`` without it) and put back is a cache
    hit for ingest: its result was not rewritten, so its mtime stayed older than ``cases`` and a
    run killed before writing ``cases`` left its store to gc (tester 26 #4). Ingest now marks a
    reused result, so gc sees the run found the case."""
    from curator.ingest.stage import IngestStage
    from curator.testing.pipelines import make_pipeline, run, write_kits_cases

    raw = write_kits_cases(tmp_path / "raw", 2)
    stages = {"harmonize": {"enabled": False}, "qc": {"enabled": False}, "pseudolabel": {"enabled": False}}
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(raw)}], stages=stages)
    run(pipe, stages=["ingest", "dedup", "preprocess"])
    ws = Workspace(tmp_path / "workspace")
    back = "KiTS23__case_00001"
    assert (ws.stores_dir / f"{back}.zarr").is_dir()
    (raw / "dataset" / "case_00001").rename(tmp_path / "away")
    run(pipe, stages=["ingest"])
    assert back in {lo.case_id for lo in find_leftovers(ws, measure=False)}  # gone: gc may collect it
    (tmp_path / "away").rename(raw / "dataset" / "case_00001")
    past = ws.table_path("cases").stat().st_mtime - 60  # the result's mtime from the first run
    os.utime(ws.case_result_path("ingest", back), (past, past))

    def killed(self: IngestStage, results: list) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(IngestStage, "finalize", killed)
    with pytest.raises(KeyboardInterrupt):
        run(pipe, stages=["ingest"])
    assert back not in {lo.case_id for lo in find_leftovers(ws, measure=False)}
