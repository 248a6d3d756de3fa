"""End-to-end pipeline guarantees: executors agree, killed runs resume, locks, no PHI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curator.demo.data import build_demo_data
from curator.errors import WorkspaceError
from curator.testing.layouts import PLANTED_PHI
from curator.testing.phi import scan
from curator.testing.pipelines import make_pipeline, run
from curator.workspace import Workspace

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "raw"
    build_demo_data(root)
    return root


def _pipeline(tmp: Path, raw: Path, **kw) -> Path:  # type: ignore[no-untyped-def]
    from curator.demo.data import DemoData  # noqa: F401 - documents where the layout comes from

    sources = [{"dataset": "MSD_Spleen", "root": str(raw / "Task09_Spleen")},
               {"dataset": "KiTS23", "root": str(raw / "kits23")},
               {"dataset": str(raw / "DemoTotalSeg.yaml"), "root": str(raw / "TotalSegmentator")},
               {"dataset": str(raw / "DemoPancreasDICOM.yaml"), "root": str(raw / "Pancreas-CT")}]
    return make_pipeline(tmp, sources, key=KEY, **kw)


def _release_tables(release: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(release.glob("*.parquet"))}


def test_dask_executor_gives_the_same_manifests_as_local(tmp_path: Path, demo_raw: Path) -> None:
    a = run(_pipeline(tmp_path / "local", demo_raw, workers=2), release=True).release
    b = run(_pipeline(tmp_path / "dask", demo_raw, workers=2, executor="dask"), release=True).release
    assert a is not None and b is not None
    ta, tb = _release_tables(a), _release_tables(b)
    assert ta.keys() == tb.keys() and "cases.parquet" in ta
    for name in ta:
        assert ta[name] == tb[name], name


def _ingest_results(ws: Path) -> int:
    return len(list((ws / "stages" / "ingest" / "cases").rglob("*.json")))


def test_sigkill_during_ingest_resumes_without_redoing_cases(tmp_path: Path, demo_raw: Path) -> None:
    ref = run(_pipeline(tmp_path / "ref", demo_raw), release=True).release
    assert ref is not None
    pipe = _pipeline(tmp_path / "killed", demo_raw, workers=1)
    ws = tmp_path / "killed" / "workspace"
    cmd = [sys.executable, "-m", "curator", "run", str(pipe), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _ingest_results(ws) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _ingest_results(ws)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 5 <= done_before < 25
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    m = re.search(r"ingest: (\d+) cases \((\d+) cached, (\d+) run\)", out.stderr)
    assert m, out.stderr
    total, cached, ran = map(int, m.groups())
    assert cached >= done_before and cached + ran == total
    resumed = tmp_path / "killed" / "releases" / "test" / "0.1.0"
    assert not [p for p in (tmp_path / "killed").rglob("*") if ".tmp-" in p.name]
    ta, tb = _release_tables(ref), _release_tables(resumed)
    assert ta == tb


def test_sigterm_during_ingest_says_so_and_the_next_run_resumes(tmp_path: Path, demo_raw: Path) -> None:
    """A batch scheduler's SIGTERM stops the run as Ctrl-C does: a message, exit code 143, its pool
    shut down, the workspace unlocked, finished cases kept."""
    pipe = _pipeline(tmp_path, demo_raw, workers=1)
    ws = tmp_path / "workspace"
    cmd = [sys.executable, "-m", "curator", "run", str(pipe), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _ingest_results(ws) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    done_before = _ingest_results(ws)
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated (SIGTERM): finished cases are kept" in stderr
    assert 5 <= done_before < 25
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    m = re.search(r"ingest: (\d+) cases \((\d+) cached, (\d+) run\)", out.stderr)
    assert m, out.stderr
    assert int(m.group(2)) >= done_before


def test_second_run_on_a_locked_workspace_is_refused(tmp_path: Path, demo_raw: Path) -> None:
    pipe = _pipeline(tmp_path, demo_raw)
    ws = Workspace(tmp_path / "workspace")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from curator.workspace import Workspace\n"
        "with Workspace(sys.argv[1]).locked('test'):\n print('locked', flush=True); time.sleep(60)"),
        str(ws.root), str(Path(__file__).resolve().parents[1])], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkspaceError) as e:
            run(pipe, stages=["ingest"])
        assert e.value.kind == "workspace_locked" and "pid" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    run(pipe, stages=["ingest"])  # the lock dies with its holder


def test_no_planted_identifier_reaches_workspace_or_release(tmp_path: Path, demo_raw: Path) -> None:
    res = run(_pipeline(tmp_path, demo_raw, workers=2), release=True)
    assert res.release is not None
    tokens = list(PLANTED_PHI.values()) + PLANTED_PHI["PatientName"].split("^")
    # the DICOM files themselves do hold them (the scan works)
    assert scan([demo_raw / "Pancreas-CT"], tokens)
    assert scan([tmp_path / "workspace", res.release], tokens) == []
    # DICOM cases were ingested (the test is not vacuous)
    from curator.release.query import Release

    ((n,),) = Release(res.release).sql("select count(*) from cases where format = 'dicom'").fetchall()
    assert n >= 4


def test_release_versions_are_immutable(tmp_path: Path, demo_raw: Path) -> None:
    pipe = _pipeline(tmp_path, demo_raw)
    first = run(pipe, release=True).release
    assert first is not None
    before = _release_tables(first)
    manifest = (first / "release.json").read_bytes()
    from curator.errors import ReleaseError

    # the same inputs and settings again: the same content, so the published folder is kept as it is
    assert run(pipe, release=True).release == first
    assert _release_tables(first) == before and (first / "release.json").read_bytes() == manifest
    # other content under the same version: refused, the published release untouched
    cfg = yaml.safe_load(pipe.read_text())
    cfg["release"]["creators"] = ["Jane Doe"]
    pipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ReleaseError, match="already exists with other content") as e:
        run(pipe, release=True)
    assert e.value.kind == "release_exists"
    assert _release_tables(first) == before and (first / "release.json").read_bytes() == manifest


@pytest.mark.parametrize(("stages", "chosen", "what"), [
    ({"ingset": {}}, None, "'ingset' (did you mean 'ingest'?)"),
    ({}, ["ingest", "dedpu"], "'dedpu' (did you mean 'dedup'?)"),
    ({"qc": {"min_cohrt": 3}}, None, "min_cohrt"),
    ({"splits": {"fractions": {"train": 2.0}}}, None, "splits"),
])
def test_config_mistakes_are_refused_before_any_stage_runs(tmp_path: Path, demo_raw: Path, stages: dict,
                                                           chosen: list[str] | None, what: str) -> None:
    from curator.errors import ConfigError

    pipe = _pipeline(tmp_path, demo_raw, stages=stages)
    with pytest.raises(ConfigError) as e:
        run(pipe, stages=chosen, release=True)
    assert what in str(e.value)
    assert not list((tmp_path / "workspace" / "stages").glob("*/stage.json"))  # nothing ran
