"""A GPU stage under the local pool on a machine with several GPUs: each worker sees one GPU of its
own (CUDA_VISIBLE_DEVICES set in the spawned worker), at most one worker per GPU. Every local
pool worker used cuda:0 before: the other GPUs sat idle and the first ran out of memory.

No GPU here: the parent's GPU count is faked; what each spawned worker was given is read back
from the cases it ran (:class:`~curator.testing.stages.GpuProbeStage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curator.config import PipelineConfig
from curator.runner import executors
from curator.runner.context import Context
from curator.runner.executors import LocalExecutor, visible_gpus
from curator.runner.run import run_stage
from curator.runner.stage import Stage
from curator.testing.stages import GpuProbeStage, ProbeStage


def _run(tmp: Path, workers: int, stage: type[Stage] = GpuProbeStage, n_cases: int = 8, meet: int = 0,
         **cfg: Any) -> dict[int, set[str | None]]:
    """Run ``stage`` on a local pool of ``workers``: each worker's pid → the CUDA_VISIBLE_DEVICES
    values its cases saw. ``meet``: the cases wait for that many workers, so each runs one."""
    if meet:
        cfg["behaviour"] = {f"c{i:03d}": f"meet:{meet}" for i in range(n_cases)}
    conf = PipelineConfig.from_dict({"workspace": str(tmp / "ws"), "stages": {stage.name: {"n_cases": n_cases, **cfg}},
                                     "executor": {"progress": False, "workers": workers}})
    ctx = Context(conf)
    ctx.workspace.init()
    rep = run_stage(ctx, stage, LocalExecutor(workers))
    assert (rep.ran, rep.failed) == (n_cases, 0)
    seen: dict[int, set[str | None]] = {}
    for i in range(n_cases):
        res = ctx.workspace.read_case_result(stage.name, f"c{i:03d}")
        assert res is not None
        row = res["rows"]["probe"][0]
        seen.setdefault(row["pid"], set()).add(row["cuda"])
    return seen


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, listed: str | None) -> None:
    monkeypatch.setattr(executors, "_gpu_count", lambda: count)
    if listed is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)


def test_each_local_worker_gets_a_gpu_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 GPUs, -w 4: every worker pinned to one GPU, no two workers on the same one."""
    _fake_gpus(monkeypatch, 4, None)
    seen = _run(tmp_path, 4, meet=4)
    assert all(len(v) == 1 for v in seen.values()), seen  # a worker keeps its GPU
    assert sorted(v for vs in seen.values() for v in vs) == ["0", "1", "2", "3"], seen  # one each


@pytest.mark.parametrize(("listed", "count", "allowed"), [
    (None, 2, ["0", "1"]),  # more workers than GPUs: one worker per GPU
    ("2,3", 2, ["2", "3"]),  # the parent's own list is respected
])
def test_more_workers_than_gpus_runs_one_worker_per_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         listed: str | None, count: int, allowed: list[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    _fake_gpus(monkeypatch, count, listed)
    pools: list[int] = []
    make = LocalExecutor._pool
    monkeypatch.setattr(LocalExecutor, "_pool", lambda self, n, gpus=(): pools.append(n) or make(self, n, gpus))
    with caplog.at_level("WARNING", logger="curator"):
        seen = _run(tmp_path, 4, meet=count)
    assert pools == [count], pools  # capped: no GPU holds two workers' models
    assert f"{count} worker(s) of --workers 4, one per GPU" in caplog.text  # the user hears why
    assert sorted(v for vs in seen.values() for v in vs) == sorted(allowed), seen  # one worker each


def test_visible_gpus_reads_the_parents_list(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 2, "GPU-aa, GPU-bb,GPU-cc")  # CUDA stops at a bad entry: 2 usable
    assert visible_gpus() == ("GPU-aa", "GPU-bb")
    _fake_gpus(monkeypatch, 3, None)
    assert visible_gpus() == ("0", "1", "2")
    _fake_gpus(monkeypatch, 0, "")
    assert visible_gpus() == ()


@pytest.mark.parametrize("device", ["cpu", "cuda:1"])
def test_a_named_device_or_the_cpu_leaves_workers_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        device: str) -> None:
    """`cuda:1` is the user's choice for every worker (no pinning: a pinned worker has no cuda:1),
    `cpu` needs no GPU: both keep every worker and the parent's environment."""
    _fake_gpus(monkeypatch, 4, None)
    seen = _run(tmp_path, 2, n_cases=4, device=device)
    assert {v for vs in seen.values() for v in vs} == {None}, seen


def test_no_gpu_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU path: no GPU seen (the real count here), or a stage that is no GPU stage."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # inherited as it was
    seen = _run(tmp_path / "a", 2, n_cases=4)
    assert {v for vs in seen.values() for v in vs} == {"5"}, seen
    _fake_gpus(monkeypatch, 4, None)
    seen = _run(tmp_path / "b", 2, stage=ProbeStage, n_cases=4)
    assert seen and all(v == {None} for v in seen.values()), seen


def test_pseudolabel_pins_only_auto_and_cuda() -> None:
    from curator.pseudolabel.config import PseudolabelConfig
    from curator.pseudolabel.stage import PseudolabelStage

    got = {d: PseudolabelStage.any_gpu(PseudolabelConfig(device=d)) for d in ("auto", "cuda", "cuda:1", "cpu")}
    assert got == {"auto": True, "cuda": True, "cuda:1": False, "cpu": False}
