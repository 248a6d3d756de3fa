"""Executors: run ``execute(...)`` for many tasks, yielding results as they finish.

* ``local`` — a process pool (``spawn`` start method, so CUDA/torch stay safe); with one
  worker, cases run in this process (fast start, easy debugging).
* ``dask`` — a ``distributed`` scheduler at ``address``, or an in-process ``LocalCluster``
  with ``workers`` worker processes. GPU stages ask for the ``GPU`` resource.

A worker that dies (segfault, OOM kill) is named: the cases it was running are retried
one at a time, and the one that kills its worker again becomes a ``worker_crashed``
problem instead of taking the run down.

A run killed outright (SIGKILL, OOM killer) takes its workers with it: local pool workers
by the kernel's parent-death signal (Linux), an in-process ``LocalCluster``'s workers by
``distributed``'s own nanny (measured: gone at once). No orphan writes on beside the run
that resumes.
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
from curator.errors import ConfigError, CuratorError
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


class Executor:
    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False) -> Iterator[CaseResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InlineExecutor(Executor):
    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False) -> Iterator[CaseResult]:
        for task, key in jobs:
            yield execute(ref, task, key, config, env)


class LocalExecutor(Executor):
    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def _pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"),
                                   initializer=_die_with_parent, initargs=(os.getpid(),))

    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False) -> Iterator[CaseResult]:
        suspects: list[Job] = []
        yield from self._run_pool(ref, jobs, config, env, self.workers, suspects)
        # Cases caught in a crashed pool: retry alone, so the culprit is named.
        for job in suspects:
            again: list[Job] = []
            results = list(self._run_pool(ref, [job], config, env, 1, again))
            if again:
                yield _crashed(stage_name, job[0], job[1], "it crashed again when run alone")
            else:
                yield from results

    def _run_pool(self, ref: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv, n: int,
                  suspects: list[Job]) -> Iterator[CaseResult]:
        """Run ``jobs``; when the pool breaks, every job in flight becomes a suspect and a fresh
        pool takes the rest of the queue."""
        if not jobs:
            return
        queue = list(reversed(jobs))
        pool = self._pool(min(n, len(jobs)))
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
                    pool = self._pool(min(n, max(1, len(queue))))
        finally:
            for f in running:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    def __init__(self, workers: int, address: str | None) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if address:
            try:
                self.client = Client(address)
            except (OSError, ValueError, TypeError) as e:  # no port, nothing listening, a timeout
                raise ConfigError("config_error", f"cannot reach the Dask scheduler at {address!r}: {e}",
                                  remedy="give the scheduler's address as tcp://HOST:PORT (printed by "
                                  "`dask scheduler`), check that it runs and is reachable, or drop --address "
                                  "to start a local cluster") from e
        else:
            self.cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.WARNING)
            self.client = Client(self.cluster)

    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False) -> Iterator[CaseResult]:
        from distributed import as_completed

        resources = {"GPU": 1} if gpu and self._has_gpu_resource() else None
        submitted = {}
        for task, key in jobs:
            fut = self.client.submit(execute, ref, task, key, config, env, key=f"{stage_name}-{key}",
                                     pure=False, resources=resources, retries=0)
            submitted[fut.key] = (fut, task, key)
        try:
            for fut in as_completed([f for f, _, _ in submitted.values()]):
                _, task, key = submitted.pop(fut.key)
                try:
                    yield fut.result()
                except Exception as e:  # noqa: BLE001 - KilledWorker, CancelledError, ...
                    yield _crashed(stage_name, task, key, type(e).__name__)
                finally:
                    fut.release()
        finally:
            for fut, _, _ in submitted.values():
                fut.cancel()

    def _has_gpu_resource(self) -> bool:
        info = self.client.scheduler_info()
        return any("GPU" in (w.get("resources") or {}) for w in info.get("workers", {}).values())

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(cfg: ExecutorConfig) -> Executor:
    if cfg.kind == "dask":
        return DaskExecutor(cfg.workers, cfg.address)
    if cfg.workers <= 1:
        return InlineExecutor()
    return LocalExecutor(cfg.workers)


ExecutorFactory = Callable[[ExecutorConfig], Executor]
