"""Executors: run ``execute(...)`` for many tasks, yielding results as they finish.

* ``local`` — a process pool (``spawn`` start method, so CUDA/torch stay safe); with one
  worker, cases run in this process (fast start, easy debugging). A GPU stage on a machine
  with GPUs runs one worker per GPU, each pinned to its own (``CUDA_VISIBLE_DEVICES``), at
  most ``workers`` of them (see :meth:`LocalExecutor.run`).
* ``dask`` — a ``distributed`` scheduler at ``address``, or an in-process ``LocalCluster``
  with ``workers`` worker processes. GPU stages ask for the ``GPU`` resource
  (:mod:`curator.runner.dask_executor`).

A worker that dies (segfault, OOM kill) is named: the cases it was running are retried
one at a time, and the one that kills its worker again becomes a ``worker_crashed``
problem instead of taking the run down.

A run killed outright (SIGKILL, OOM killer) takes its workers with it: local pool workers
by the kernel's parent-death signal (Linux), an in-process ``LocalCluster``'s workers by
``distributed``'s own nanny (measured: gone at once). No orphan writes on beside the run
that resumes. An external cluster's workers outlive the run: a run stopped by Ctrl-C or
SIGTERM cancels its queued cases and waits for the running ones to end before it lets go
of the workspace (a SIGKILLed run cannot; its running cases end on their own).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from curator.config import ExecutorConfig
from curator.errors import CuratorError
from curator.runner.stage import CaseEnv, CaseResult, Task, execute, problem_row

log = logging.getLogger("curator")
Job = tuple[Task, str]  # task, key


def _crashed(stage_name: str, task: Task, key: str, why: str) -> CaseResult:
    err = CuratorError("worker_crashed", f"the worker process died while processing this case ({why})",
                       remedy="the file may crash the reader or exhaust memory; inspect it, or lower --workers")
    row = problem_row(stage_name, err, dataset=task.dataset, case_id=task.case_id, path=task.path)
    return CaseResult(task.case_id, key, {}, [row], failed=True, cacheable=False)


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: on Linux, ask the kernel to SIGKILL this worker when the run
    that started it dies, so a killed run leaves no orphan still writing to the workspace
    while the next run resumes. Elsewhere a no-op (orphans exit once their task ends)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _gpu_count() -> int:
    """CUDA devices this process sees. torch asks NVML first (no CUDA context in this process);
    where it initialises CUDA instead, the pool's ``spawn`` workers start clean all the same."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def visible_gpus() -> tuple[str, ...]:
    """The GPUs this process sees, each as the ``CUDA_VISIBLE_DEVICES`` value that shows a worker
    that one GPU alone: this process's own list where it has one (``2,3`` → ``2`` and ``3``; UUIDs
    as given), else ``0`` to ``count - 1``. Empty without a GPU."""
    count = _gpu_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return tuple(str(i) for i in range(count))
    return tuple(e.strip() for e in listed.split(",") if e.strip())[:count]


def _init_worker(parent: int, gpus: tuple[str, ...], started: Any) -> None:
    """Pool-worker initializer of a GPU stage: :func:`_die_with_parent`, then the next GPU of
    ``gpus`` (the ``started``-th worker of its pool takes ``gpus[started % len(gpus)]``) is the only
    one this worker's CUDA sees, as its ``cuda:0``. Runs before any case, so before torch
    initialises CUDA in this process."""
    _die_with_parent(parent)
    with started.get_lock():
        k = started.value
        started.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]


class Executor:
    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False, any_gpu: bool = False) -> Iterator[CaseResult]:
        """Run ``jobs``. ``gpu``: the stage runs on a GPU (a Dask GPU worker); ``any_gpu``: on
        whichever GPU its worker sees (a local pool may pin each worker to its own)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class InlineExecutor(Executor):
    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False, any_gpu: bool = False) -> Iterator[CaseResult]:
        for task, key in jobs:
            yield execute(ref, task, key, config, env)


class LocalExecutor(Executor):
    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def _pool(self, n: int, gpus: tuple[str, ...] = ()) -> ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        if not gpus:
            return ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_die_with_parent,
                                       initargs=(os.getpid(),))
        return ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                                   initargs=(os.getpid(), gpus, ctx.Value("i", 0)))

    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False, any_gpu: bool = False) -> Iterator[CaseResult]:
        """With ``any_gpu`` and GPUs on this machine, each worker sees one GPU of its own and the
        stage runs at most one worker per GPU: every worker holds its own copy of the models and a
        case's activations, so two on one GPU were what ran it out of memory (``-w`` is sized for
        the CPU stages of the same run). Without a GPU, nothing changes."""
        gpus = visible_gpus() if gpu and any_gpu and jobs else ()
        n = min(self.workers, len(gpus)) if gpus else self.workers
        if gpus:  # a cap changes what the user asked for: said at the default log level
            log.log(logging.WARNING if n < self.workers else logging.INFO,
                    "%s: %d worker(s) of --workers %d, one per GPU of the %d this run sees, each pinned to its "
                    "own (CUDA_VISIBLE_DEVICES=%s); workers sharing a GPU would each hold the models in its "
                    "memory", stage_name, n, self.workers, len(gpus), ", ".join(gpus[:n]))
        suspects: list[Job] = []
        yield from self._run_pool(ref, jobs, config, env, n, suspects, gpus)
        # Cases caught in a crashed pool: retry alone, so the culprit is named.
        for job in suspects:
            again: list[Job] = []
            results = list(self._run_pool(ref, [job], config, env, 1, again, gpus))
            if again:
                yield _crashed(stage_name, job[0], job[1], "it crashed again when run alone")
            else:
                yield from results

    def _run_pool(self, ref: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv, n: int,
                  suspects: list[Job], gpus: tuple[str, ...] = ()) -> Iterator[CaseResult]:
        """Run ``jobs``; when the pool breaks, every job in flight becomes a suspect and a fresh
        pool takes the rest of the queue."""
        if not jobs:
            return
        queue = list(reversed(jobs))
        pool = self._pool(min(n, len(jobs)), gpus)
        running: dict[Future[CaseResult], Job] = {}
        try:
            while queue or running:
                broken = False
                while queue and len(running) < 2 * n:
                    job = queue.pop()
                    try:
                        running[pool.submit(execute, ref, job[0], job[1], config, env)] = job
                    except BrokenProcessPool:
                        queue.append(job)
                        broken = True
                        break
                if not broken:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = running.pop(fut)
                        try:
                            yield fut.result()
                        except BrokenProcessPool:
                            suspects.append(job)
                            broken = True
                if broken:
                    suspects.extend(running.values())
                    running.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._pool(min(n, max(1, len(queue))), gpus)
        finally:
            for f in running:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def make_executor(cfg: ExecutorConfig) -> Executor:
    if cfg.kind == "dask":
        from curator.runner.dask_executor import DaskExecutor

        return DaskExecutor(cfg.workers, cfg.address)
    if cfg.workers <= 1:
        return InlineExecutor()
    return LocalExecutor(cfg.workers)


ExecutorFactory = Callable[[ExecutorConfig], Executor]
