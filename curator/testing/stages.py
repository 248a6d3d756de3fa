"""A probe stage for testing runners and executors: each case does what the config says
(succeed, raise a bad-input error, raise a bug, crash its worker, sleep, or wait for k workers)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from curator.config import StageConfig, finalize_only
from curator.errors import InputError
from curator.runner import stage as contract
from curator.runner.stage import CaseEnv, CaseOutput, CaseResult, Stage, Task


@dataclass(frozen=True)
class ProbeConfig(StageConfig):
    n_cases: int = 4
    # case id -> ok | bad | warn_then_bad | bug | missing_module | crash | sleep:<s> | meet:<k>
    behaviour: dict[str, Any] = field(default_factory=dict)
    salt: str = ""
    label: str = finalize_only("")  # read by finalize only: changing it must not re-run cases


def _meet(folder: Path, k: int, timeout: float = 60.0) -> None:
    """Hold the case until ``k`` distinct worker processes hold one (or ``timeout`` s), so every
    worker of a pool runs a case however fast the first one to start is."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < k and time.monotonic() < deadline:
        time.sleep(0.02)


class ProbeStage(Stage):
    name = "probe"
    config_class = ProbeConfig

    def plan(self) -> list[Task]:
        cfg = cast(ProbeConfig, self.config)
        return [Task(case_id=f"c{i:03d}", payload={"i": i}, fingerprint=cfg.salt, dataset="probe",
                     path=f"probe:c{i:03d}") for i in range(cfg.n_cases)]

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        cfg = cast(ProbeConfig, config)
        what = str(cfg.behaviour.get(task.case_id, "ok"))
        if what == "bad":
            raise InputError("corrupt_file", "planted bad input", path=f"/x/{task.case_id}.nii.gz")
        if what == "warn_then_bad":  # a warning collected before the case fails
            note = contract.problem_row(cls.name, InputError("label_reoriented", "planted warning", remedy="nothing"),
                                        dataset="probe", case_id=task.case_id, path=task.path, severity="info")
            bad = InputError("corrupt_file", "planted bad input", path=f"/x/{task.case_id}.nii.gz")
            raise contract.with_warnings(bad, [note])
        if what == "bug":
            raise ZeroDivisionError("planted bug")
        if what == "missing_module":  # a worker whose environment lacks a package
            import curator_no_such_package  # noqa: F401
        if what == "crash":
            os._exit(13)
        if what.startswith("meet:"):
            _meet(Path(env.workspace) / "meet", int(what.split(":", 1)[1]))
        if what.startswith("sleep:"):
            time.sleep(float(what.split(":", 1)[1]))
        return CaseOutput(rows={"probe": [{"case_id": task.case_id, "pid": os.getpid(), "label": cfg.label,
                                           "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}]})

    def finalize(self, results: list[CaseResult]) -> dict[str, pa.Table]:
        self.finalized = [r.case_id for r in results]
        label = cast(ProbeConfig, self.config).label
        return {"probe_final": pa.table({"case_id": self.finalized, "label": [label] * len(self.finalized)})}


@dataclass(frozen=True)
class GpuProbeConfig(ProbeConfig):
    device: str = "auto"  # auto | cuda | cuda:N | cpu, as stages.pseudolabel.device


class GpuProbeStage(ProbeStage):
    """A GPU stage that touches no GPU; like every probe case, each records its worker's pid and
    ``CUDA_VISIBLE_DEVICES`` (``None``: unset)."""

    name = "gpuprobe"
    config_class = GpuProbeConfig
    gpu = True

    @classmethod
    def any_gpu(cls, config: StageConfig) -> bool:
        return cast(GpuProbeConfig, config).device in ("auto", "cuda")
