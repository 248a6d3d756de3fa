"""The Dask executor against an external cluster (``--address``): what an operator sees when the
scheduler dies, when no worker is able to run a stage's cases, or when a worker cannot run
curator's code. Each test starts its own in-process ``distributed.LocalCluster``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curator.errors import ConfigError, StageError
from curator.runner import dask_executor
from curator.runner.dask_executor import DaskExecutor
from curator.runner.run import run_stage
from curator.testing.stages import ProbeStage
from tests.runner.test_runner import _ctx

distributed = pytest.importorskip("distributed")


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    import dask

    kw = getattr(request, "param", {})
    # a cluster whose scheduler a test closed otherwise takes distributed's 30 s reconnect attempts to close
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        c = distributed.LocalCluster(n_workers=kw.get("n_workers", 1), threads_per_worker=1,
                                     processes=kw.get("processes", False),
                                     dashboard_address="127.0.0.1:0", resources=kw.get("resources"))
        try:
            yield c
        finally:
            c.close()


class GpuProbe(ProbeStage):
    gpu = True


def test_a_lost_scheduler_stops_the_stage_with_what_to_do(tmp_path: Path, cluster: Any) -> None:
    """Killing the scheduler mid-stage made every unfinished case a `worker_crashed` problem
    ('the file may crash the reader') and the stage wrote its tables as if done."""
    ctx = _ctx(tmp_path, n_cases=4, behaviour={f"c00{i}": "sleep:1" for i in range(1, 4)})
    ex = DaskExecutor(1, cluster.scheduler_address)
    stage = ProbeStage(ctx, ctx.stage_config(ProbeStage.config_class, "probe"))
    jobs = [(t, stage.task_key(t)) for t in stage.plan()]
    try:
        results = ex.run(ProbeStage.ref(), "probe", jobs, stage.config.to_dict(), ctx.case_env())
        first = next(results)
        assert not first.failed
        cluster.sync(cluster.scheduler.close)  # the scheduler dies
        with pytest.raises(StageError, match="lost the connection to the Dask scheduler") as e:
            list(results)
        assert "run the same command again" in str(e.value)
    finally:
        ex.close()


@pytest.mark.parametrize("cluster", [{"n_workers": 0}], indirect=True)
def test_no_worker_able_to_run_the_cases_stops_the_stage(tmp_path: Path, cluster: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With no worker left (or none left with the GPU resource a GPU stage asked for), the run
    waited forever without a word."""
    monkeypatch.setattr(dask_executor, "POLL_S", 0.2)
    monkeypatch.setattr(dask_executor, "NO_WORKER_WAIT_S", 0.0)
    ctx = _ctx(tmp_path, n_cases=2)
    ex = DaskExecutor(1, cluster.scheduler_address)
    monkeypatch.setattr(ex, "_has_gpu_resource", lambda: True)  # the GPU worker was there when the stage began
    try:
        with pytest.raises(StageError, match="no Dask worker with the GPU resource") as e:
            run_stage(ctx, GpuProbe, ex)
        assert "--resources GPU=1" in str(e.value)
    finally:
        ex.close()


@pytest.mark.parametrize("cluster", [{"resources": {"GPU": 1}}], indirect=True)
def test_gpu_stage_runs_on_the_gpu_worker(tmp_path: Path, cluster: Any) -> None:
    rep = _run_on(cluster, _ctx(tmp_path, n_cases=3), GpuProbe)
    assert rep.ran == 3 and rep.failed == 0


def _run_on(cluster: Any, ctx: Any, stage: Any) -> Any:
    """One stage on the cluster through a fresh executor (closed after)."""
    ex = DaskExecutor(1, cluster.scheduler_address)
    try:
        return run_stage(ctx, stage, ex)
    finally:
        ex.close()


def test_a_worker_that_cannot_run_curator_is_not_called_a_crash(tmp_path: Path, cluster: Any) -> None:
    """A worker missing a module (another venv) failed the case as 'the worker process died'
    (here the stage's module is missing on the worker)."""
    ctx = _ctx(tmp_path, n_cases=1)
    ex = DaskExecutor(1, cluster.scheduler_address)
    try:
        stage = ProbeStage(ctx, ctx.stage_config(ProbeStage.config_class, "probe"))
        jobs = [(t, stage.task_key(t)) for t in stage.plan()]
        (res,) = ex.run("no_such_module:Stage", "probe", jobs, stage.config.to_dict(), ctx.case_env())
    finally:
        ex.close()
    (p,) = res.problems
    assert res.failed and not res.cacheable and p["kind"] == "internal_error"
    assert "ModuleNotFoundError" in p["message"] and "same Python environment" in p["message"]


def test_a_stopped_run_leaves_no_case_running_on_the_cluster(tmp_path: Path, cluster: Any) -> None:
    """Ctrl-C / SIGTERM of `curator run` on an external cluster cancelled the queued cases but
    returned while the running ones went on writing into the workspace, lock released, beside
    the next run. Closing now waits for them."""
    ctx = _ctx(tmp_path, n_cases=3, behaviour={"c001": "sleep:2", "c002": "sleep:2"})
    ex = DaskExecutor(1, cluster.scheduler_address)
    stage = ProbeStage(ctx, ctx.stage_config(ProbeStage.config_class, "probe"))
    jobs = [(t, stage.task_key(t)) for t in stage.plan()]
    (worker,) = cluster.workers.values()
    try:
        results = ex.run(ProbeStage.ref(), "probe", jobs, stage.config.to_dict(), ctx.case_env())
        next(results)
        while not worker.state.executing:  # a sleeping case runs on the worker
            time.sleep(0.05)
        results.close()  # the interrupted stage
    finally:
        ex.close()
    assert not worker.state.executing


def test_workers_running_other_curator_code_are_refused(tmp_path: Path, cluster: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started from another checkout or venv ran its own curator's code under this run's
    release, without a word."""
    def fn() -> Any:
        return lambda dask_worker=None: "curator 0.0.9 (abc) from /elsewhere" if dask_worker else "curator ours"
    monkeypatch.setattr(dask_executor, "_code_identity_fn", fn, raising=False)
    ex = DaskExecutor(1, cluster.scheduler_address)
    try:
        with pytest.raises(ConfigError, match=r"1 of the 1 Dask worker\(s\).*curator 0.0.9 \(abc\) from /elsewhere"):
            run_stage(_ctx(tmp_path, n_cases=2), ProbeStage, ex)
    finally:
        ex.close()


def test_workers_with_the_same_code_in_another_folder_are_accepted(tmp_path: Path, cluster: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node's checkout or venv of the same version and commit lies elsewhere: not refused."""
    def fn() -> Any:
        return lambda dask_worker=None: ("curator 0.1.0 (abc) from /nodes/b/curator" if dask_worker
                                         else "curator 0.1.0 (abc) from /home/me/curator")
    monkeypatch.setattr(dask_executor, "_code_identity_fn", fn, raising=False)
    report = _run_on(cluster, _ctx(tmp_path, n_cases=2), ProbeStage)
    assert report.ran == 2 and report.failed == 0


@pytest.mark.parametrize("cluster", [{"n_workers": 0}], indirect=True)
def test_a_worker_joining_during_the_stage_with_other_code_is_refused(tmp_path: Path, cluster: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the stage-start check asked the workers which curator they run: a worker that joined
    during the stage (or that its nanny restarted after an OOM kill, importing the code pulled
    since) had its cases cached and released under this run's code. Each result now says which
    code computed it; here the only worker joins right after the stage-start check."""
    def fn() -> Any:
        return lambda dask_worker=None: ("curator 0.1.0 (abc+dirty.0123456789ab) from /clone"
                                         if getattr(dask_worker, "name", None) == "wOTHER"
                                         else "curator 0.1.0 (abc) from /home/me/curator")
    monkeypatch.setattr(dask_executor, "_code_identity_fn", fn, raising=False)
    ctx = _ctx(tmp_path, n_cases=2)
    ex = DaskExecutor(1, cluster.scheduler_address)
    joined: list[Any] = []
    check = ex._check_code

    def check_then_join(stage_name: str) -> None:
        check(stage_name)  # no worker yet: nothing to refuse

        async def start() -> Any:
            return await distributed.Worker(cluster.scheduler_address, name="wOTHER", nthreads=1)
        joined.append(cluster.sync(start))
    monkeypatch.setattr(ex, "_check_code", check_then_join)
    try:
        with pytest.raises(ConfigError, match=r"Dask worker wOTHER \(\S+\) at .* computed case c00\d with "
                           r"other curator code: curator 0.1.0 \(abc\+dirty.0123456789ab\) from /clone, not this "
                           r"curator 0.1.0 \(abc\) from /home/me/curator; its result was not kept") as e:
            run_stage(ctx, ProbeStage, ex)
        assert "same commit and edits" in str(e.value)
    finally:
        ex.close()
        for w in joined:
            cluster.sync(w.close)
    assert joined
    assert all(ctx.workspace.read_case_result("probe", f"c00{i}") is None for i in range(5))  # nothing cached


def test_a_scheduler_lost_between_stages_stops_the_next_one_at_once(tmp_path: Path, cluster: Any) -> None:
    """The next stage waited for distributed's reconnect attempt (30 s), then failed with an
    unexplained `CommClosedError: ConnectionPool closing` (exit 3, 'a bug in curator')."""
    ex = DaskExecutor(1, cluster.scheduler_address)
    try:
        cluster.sync(cluster.scheduler.close)
        while ex.client.status == "running":  # the client notices
            time.sleep(0.05)
        with pytest.raises(StageError, match="lost the connection to the Dask scheduler"):
            run_stage(_ctx(tmp_path, n_cases=2), ProbeStage, ex)
    finally:
        ex.close()


def _fake_numpy(dask_worker: Any = None) -> None:
    """Run on a worker process (``Client.run``): its :func:`curator.envinfo.versions` — what a worker
    says of its libraries and a stage run records as its environment — says another numpy, as a
    worker started from another venv would."""
    import curator.envinfo

    real = dict(curator.envinfo.versions())
    curator.envinfo.versions = lambda: {**real, "numpy": "0.0.fake"}  # type: ignore[assignment]


def _refused(ctx: Any, ex: DaskExecutor, pattern: str) -> str:
    """The refusal of a probe stage run on ``ex`` (closed after), which cached none of its cases."""
    try:
        with pytest.raises(ConfigError, match=pattern) as e:
            run_stage(ctx, ProbeStage, ex)
    finally:
        ex.close()
    assert all(ctx.workspace.read_case_result("probe", f"c00{i}") is None for i in range(2))  # nothing cached
    return str(e.value)


@pytest.mark.parametrize("cluster", [{"processes": True}], indirect=True)
def test_workers_running_other_library_versions_are_refused(tmp_path: Path, cluster: Any) -> None:
    """Only the curator code of Dask workers was checked: a worker of another venv (another numpy,
    SimpleITK, pydicom, zarr) computed cases recorded under the environment of the process running
    `curator run`. Its worker process here first runs a stage (same venv: accepted), then says
    another numpy."""
    import numpy as np

    assert _run_on(cluster, _ctx(tmp_path / "a", n_cases=2), ProbeStage).ran == 2
    ex = DaskExecutor(1, cluster.scheduler_address)
    (address,) = ex.client.run(_fake_numpy)
    said = _refused(_ctx(tmp_path / "b", n_cases=2), ex,
                    rf"stage probe: 1 of the 1 Dask worker\(s\) at \S+ run other libraries than this run records as "
                    rf"its environment: {address}: numpy 0.0.fake \(this run: {np.__version__}\)\. What to do")
    assert "same versions of the libraries named" in said


@pytest.mark.parametrize("cluster", [{"processes": True}], indirect=True)
def test_a_worker_whose_libraries_change_during_the_stage_is_refused(tmp_path: Path, cluster: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker restarted during a stage (its nanny, after an out-of-memory kill) imports the packages
    on disk then: each case's result says which libraries computed it. Here the worker says another
    numpy right after the stage-start check."""
    import numpy as np

    ex = DaskExecutor(1, cluster.scheduler_address)
    check = ex._check_code

    def check_then_change(stage_name: str) -> None:
        check(stage_name)  # the worker's libraries are this run's
        ex.client.run(_fake_numpy)
    monkeypatch.setattr(ex, "_check_code", check_then_change)
    _refused(_ctx(tmp_path, n_cases=2), ex, rf"Dask worker \S+ \(\S+\) at \S+ computed case c00\d with other libraries "
             rf"than this run records as its environment: numpy 0.0.fake \(this run: {np.__version__}\); its "
             "result was not kept")


def _fake_versions(said: dict[str, str], dask_worker: Any = None) -> None:
    """Run on a worker process (``Client.run``): its :func:`curator.envinfo.versions` says the
    versions ``said`` of some packages."""
    import curator.envinfo

    real = dict(curator.envinfo.versions())
    curator.envinfo.versions = lambda: {**real, **said}  # type: ignore[assignment]


@pytest.mark.parametrize("cluster", [{"processes": True}], indirect=True)
def test_workers_differing_only_in_libraries_that_write_no_values_are_accepted(
        tmp_path: Path, cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every package `curator env` lists was compared by its exact version: `curator run` on a CPU
    login node (torch 2.13.0+cpu) with GPU workers (2.13.0+cu121), or another rich, was refused at
    every stage. Only the libraries that change the values written are compared now, torch by
    its public version; another numpy is still refused."""
    import curator.envinfo

    real = dict(curator.envinfo.versions())
    monkeypatch.setattr(curator.envinfo, "versions", lambda: {**real, "torch": "2.13.0+cpu", "rich": "13.9.4"})
    ex = DaskExecutor(1, cluster.scheduler_address)
    ex.client.run(_fake_versions, {"torch": "2.13.0+cu121", "rich": "14.0.0.fake", "typer": "0.0.fake"})
    try:
        assert run_stage(_ctx(tmp_path / "a", n_cases=2), ProbeStage, ex).ran == 2
    finally:
        ex.close()
    ex = DaskExecutor(1, cluster.scheduler_address)
    (address,) = ex.client.run(_fake_versions, {"numpy": "0.0.fake"})  # torch and rich still differ as above
    _refused(_ctx(tmp_path / "b", n_cases=2), ex, rf"run other libraries than this run records as its environment: "
             rf"{address}: numpy 0.0.fake \(this run: {real['numpy']}\)\. What to do")
