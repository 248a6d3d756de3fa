"""SIGKILL the pipeline 20 times at random points in every stage; the resumed release equals
an uninterrupted run's, and no partial Parquet file or Zarr store is ever visible."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from curator.demo.data import build_demo_data
from curator.testing.pipelines import make_pipeline, run

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))
KILLS = 20


def _pipeline(tmp: Path, raw: Path) -> Path:
    sources = [{"dataset": "MSD_Spleen", "root": str(raw / "Task09_Spleen")},
               {"dataset": "KiTS23", "root": str(raw / "kits23")},
               {"dataset": str(raw / "DemoTotalSeg.yaml"), "root": str(raw / "TotalSegmentator")},
               {"dataset": str(raw / "DemoPancreasDICOM.yaml"), "root": str(raw / "Pancreas-CT")}]
    return make_pipeline(tmp, sources, key=KEY, workers=2)


def _hidden_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def _visible(root: Path) -> Iterator[Path]:
    """Every path a reader can see; hidden temporaries (cleaned on the next run) are not
    entered, so one renamed away mid-walk cannot break the walk."""
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _hidden_temporary(d)]
        for name in dirs + [f for f in files if not _hidden_temporary(f)]:
            yield Path(top) / name


def _check_visible_state(tmp: Path) -> None:
    """Whatever a kill leaves, readers only ever see complete files and stores."""
    for p in _visible(tmp):
        if p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".json" and p.is_file():
            json.loads(p.read_text())
        elif p.suffix == ".zarr" and p.is_dir():
            from curator.store import CaseStore

            store = CaseStore(p)
            store.geometry  # noqa: B018 - metadata complete
            for layer in store.layers():
                for arr, _ in store.planes(layer):
                    arr[...]


def _results(ws: Path, stage: str) -> int:
    return len(list((ws / "stages" / stage / "cases").rglob("*.json")))


def test_twenty_kills_over_all_stages_then_identical_release(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    build_demo_data(raw)
    ref = run(_pipeline(tmp_path / "ref", raw), release=True)
    assert ref.release is not None
    plan = [(r.stage, r.planned) for r in ref.reports]
    pipe = _pipeline(tmp_path / "killed", raw)
    ws = tmp_path / "killed" / "workspace"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "curator", "run", str(pipe), "--no-progress"]
    rng = random.Random(1234)
    kills = 0
    attempts = 0
    while kills < KILLS and attempts < KILLS * 3:
        attempts += 1
        stage, planned = plan[kills % len(plan)]
        target = rng.randint(0, max(0, planned - 1))
        extra = rng.uniform(0.0, 0.4)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and _results(ws, stage) < target and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(extra)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:  # finished before the kill point: start over from scratch for the next kill
            _check_visible_state(tmp_path / "killed")
            import shutil

            shutil.rmtree(tmp_path / "killed" / "releases", ignore_errors=True)
            shutil.rmtree(ws / "stages" / stage, ignore_errors=True)
            continue
        _check_visible_state(tmp_path / "killed")
    assert kills == KILLS
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed = tmp_path / "killed" / "releases" / "test" / "0.1.0"
    _check_visible_state(tmp_path / "killed")
    got = {p.name: p.read_bytes() for p in sorted(resumed.glob("*.parquet"))}
    want = {p.name: p.read_bytes() for p in sorted(ref.release.glob("*.parquet"))}
    assert got.keys() == want.keys()
    for name, data in want.items():
        assert got[name] == data, name


def test_a_stage_whose_tables_fail_midway_leaves_the_old_set_whole(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stage's tables (and its problems table) are renamed into place together after all are
    written: dying while writing the second must not leave a new first table beside an old second."""
    import pyarrow as pa

    from curator import workspace as wsmod
    from curator.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.init()
    old = {"a": pa.table({"x": [1]}), "b": pa.table({"x": [2]})}
    ws.write_tables(old)
    written: list[str] = []
    real = wsmod.write_parquet

    def dies_on_second(table: pa.Table, path: Path) -> None:
        if written:
            raise OSError(5, "planted I/O error")
        written.append(str(path))
        real(table, path)

    monkeypatch.setattr(wsmod, "write_parquet", dies_on_second)
    try:
        ws.write_tables({"a": pa.table({"x": [10]}), "b": pa.table({"x": [20]})})
    except OSError:
        pass
    else:
        raise AssertionError("the planted error was swallowed")
    assert written and [ws.read_table(n).column("x").to_pylist() for n in "ab"] == [[1], [2]]  # type: ignore[union-attr]
    assert sorted(p.name for p in (tmp_path / "ws" / "tables").iterdir()) == ["a.parquet", "b.parquet"]
