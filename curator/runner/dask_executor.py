"""The Dask executor (see :mod:`curator.runner.executors`): cases as ``distributed`` futures on an
external scheduler at ``address`` or an in-process ``LocalCluster``. On an external cluster each
stage first checks that every worker runs this curator with this process's Python and versions
of the libraries that change the values written (:func:`_libraries_differ`; of the ``versions`` the
stage records as its environment: :mod:`curator.runner.provenance`), and every case's result says
which curator and libraries computed it (a worker that joined or was
restarted during the stage is refused too); a lost scheduler, or no worker able to
run the cases (every one gone, none left with the ``GPU`` resource), stops the stage with a
clear error instead of hanging; Ctrl-C or SIGTERM cancels the queued cases and waits for the
running ones, which could not be interrupted and would write on beside the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

from curator.errors import ConfigError, CuratorError, StageError
from curator.runner.executors import Executor, Job, _crashed
from curator.runner.stage import CaseEnv, CaseResult, Task, problem_row

log = logging.getLogger("curator")
POLL_S = 5.0  # how often a Dask run checks its scheduler and workers while no case finishes
NO_WORKER_WAIT_S = 120.0  # how long cases may wait for a worker able to run them before the stage stops


def _no_cancelled_tracebacks(record: logging.LogRecord) -> bool:
    """Drop distributed's log of a coroutine cancelled at shutdown: a client that lost its scheduler
    is still trying to reconnect when the run stops, and closing it logged a 40-line traceback of
    that attempt above the error that says what happened."""
    return not (record.exc_info and record.exc_info[0] is not None
                and issubclass(record.exc_info[0], asyncio.CancelledError))


def _running_keys(keys: set[str], dask_worker: Any = None) -> list[str]:
    """Run on each Dask worker (``Client.run``): which of ``keys`` it is still executing, cancelled
    or not."""
    tasks = dask_worker.state.tasks
    return [k for k in keys if k in tasks and tasks[k].state in ("executing", "long-running", "cancelled", "resumed")]


def _code_identity_fn() -> Callable[..., str]:
    """A function run on each Dask worker (``Client.run``) saying which curator it imports. Made
    here, so it travels by value: a worker with other curator code (lacking this module's
    functions) or none at all still answers."""
    def identity(dask_worker: Any = None) -> str:
        try:
            import curator
        except ImportError as e:
            return f"no curator ({type(e).__name__}: {e})"
        try:
            from curator.envinfo import code_revision
            revision = code_revision() or "not a git checkout"
        except Exception:  # noqa: BLE001 - an older curator: no revision to say
            revision = "revision unknown"
        return f"curator {curator.__version__} ({revision}) from {curator.__file__.rsplit('/', 1)[0]}"
    return identity


def _libraries_fn() -> Callable[..., Any]:
    """A function run on each Dask worker (``Client.run``) giving the Python and library versions
    its process imports (:func:`curator.envinfo.versions`: numpy, SimpleITK, pydicom, zarr, ...,
    the ``versions`` a stage run records as its environment), or why it cannot say. Made here, so
    it travels by value like :func:`_code_identity_fn`."""
    def libraries(dask_worker: Any = None) -> dict[str, str] | str:
        try:
            from curator.envinfo import versions
            return dict(versions())
        except Exception as e:  # noqa: BLE001 - an older curator, or none: it cannot say
            return f"cannot say which libraries it runs ({type(e).__name__}: {e})"
    return libraries


def _libraries_differ(theirs: object, ours: dict[str, str]) -> str | None:
    """How a worker's library versions (:func:`_libraries_fn`'s answer) differ from ours in what
    can change the values curator writes — ``numpy 2.0.1 (this run: 2.2.1), pydicom not installed
    (this run: 3.0.1)`` — or None when they agree there. Only Python and
    :data:`curator.envinfo.RESULT_PACKAGES` are compared (numpy, scipy, SimpleITK, nibabel, pydicom,
    highdicom, zarr, numcodecs, fastremap, connected-components-3d, scikit-image, pyarrow), and torch
    by its public version: a GPU worker's ``torch 2.3.1+cu121`` is a CPU login node's
    ``2.3.1+cpu``, and another rich, typer, dask or distributed is fine.

    >>> _libraries_differ({"python": "3.12.3", "numpy": "2.0.1"}, {"python": "3.12.3", "numpy": "2.2.1"})
    'numpy 2.0.1 (this run: 2.2.1)'
    >>> _libraries_differ({"torch": "2.3.1+cu121", "rich": "14.0.0"}, {"torch": "2.3.1+cpu", "rich": "13.9.4"})
    """
    from curator.envinfo import result_versions

    if not isinstance(theirs, dict):
        return str(theirs) if isinstance(theirs, str) else f"{type(theirs).__name__}: {theirs}"
    mine, their = result_versions(ours), result_versions(theirs)
    differ = [f"{n} {their[n]} (this run: {mine[n]})" for n in mine if their[n] != mine[n]]
    return ", ".join(differ) or None


def _case_fn() -> Callable[..., dict[str, Any]]:
    """The function each case runs as on a Dask worker: :func:`~curator.runner.stage.execute`, its
    result in an envelope saying which worker, which curator code (:func:`_code_identity_fn`) and
    which libraries (:func:`_libraries_fn`), asked in the worker's process, computed it. Made
    here, so it travels by value like the identity: a worker started or restarted during a stage,
    which the stage-start check never saw, still says what it runs."""
    identity = _code_identity_fn()
    libraries = _libraries_fn()

    def run_case(*args: Any) -> dict[str, Any]:
        from curator.runner.stage import execute

        try:
            from distributed import get_worker
            worker = get_worker()
        except (ImportError, ValueError):  # pragma: no cover - always on a worker
            worker = None
        return {"result": execute(*args), "code": identity(worker), "libraries": libraries(worker),
                "worker": f"{worker.name} ({worker.address})" if worker is not None else "unknown"}
    return run_case


def _same_code(theirs: object, ours: str) -> bool:
    """Whether a worker's answer names the same curator version and commit as ours — wherever its
    checkout or environment lies (another node's path to the same code is fine)."""
    return isinstance(theirs, str) and theirs.split(" from ", 1)[0] == ours.split(" from ", 1)[0]


def _our_libraries() -> dict[str, str]:
    """This process's Python and library versions (:func:`curator.envinfo.versions`)."""
    from curator.envinfo import versions

    return dict(versions())


_SAME_ENVIRONMENT = ("start every worker from the same Python environment as `curator run` (the same venv or "
                     "image, with the same versions of the libraries named: compare `curator env` on both; a GPU "
                     "build of the same torch release, e.g. +cu121, is fine; restart workers after "
                     "upgrading a package: a running worker keeps the libraries it loaded), then run the same "
                     "command again; finished cases are kept")


class DaskExecutor(Executor):
    def __init__(self, workers: int, address: str | None) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        self.address = address
        self._pending: dict[Any, Any] = {}  # the current stage's unfinished futures, by key
        self._checked: set[str] = set()  # workers known to run this curator
        self._ours = _code_identity_fn()()  # this process's code, as it was when the run began
        self._libs = _our_libraries()  # and its libraries: those the stage records as its environment
        for name in ("distributed.client", "distributed.utils"):  # distributed logs under the failing module's name
            logging.getLogger(name).addFilter(_no_cancelled_tracebacks)
        # importing distributed set its loggers to INFO again: ~35 lines of nannies and workers
        # registering buried curator's own warnings (shown with --debug)
        if not logging.getLogger("curator").isEnabledFor(logging.DEBUG):
            logging.getLogger("distributed").setLevel(logging.WARNING)  # a worker restarted for memory is still said
        if address:
            try:
                self.client = Client(address)
            except (OSError, ValueError, TypeError) as e:  # no port, nothing listening, a timeout
                raise ConfigError("config_error", f"cannot reach the Dask scheduler at {address!r}: {e}",
                                  remedy="give the scheduler's address as tcp://HOST:PORT (printed by "
                                  "`dask scheduler`), check that it runs and is reachable, or drop --address "
                                  "to start a local cluster") from e
        else:
            # no dashboard (dashboard=False: an address alone turns it on where bokeh is installed);
            # the scheduler's HTTP server (health, metrics) still starts, so on a free port of the
            # loopback interface — not on every interface at 8787, a port concurrent runs compete for
            self.cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                        dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                                        silence_logs=logging.WARNING)
            self.client = Client(self.cluster)

    def run(self, ref: str, stage_name: str, jobs: list[Job], config: dict[str, Any], env: CaseEnv,
            gpu: bool = False, any_gpu: bool = False) -> Iterator[CaseResult]:
        from distributed import TimeoutError as DaskTimeout
        from distributed import wait as dask_wait

        if not jobs:
            return
        # a scheduler lost between stages: say so now, not after distributed's 30 s reconnect attempt
        # ends in an unexplained CommClosedError
        self._check_scheduler(stage_name, len(jobs))
        self._pending = submitted = {}
        try:
            if self.cluster is None:
                self._check_code(stage_name)
            resources = {"GPU": 1} if gpu and self._has_gpu_resource() else None
            run_case = _case_fn()
            for task, key in jobs:
                fut = self.client.submit(run_case, ref, task, key, config, env, key=f"{stage_name}-{key}",
                                         pure=False, resources=resources, retries=0)
                submitted[fut.key] = (fut, task, key)
        except OSError:  # CommClosedError included
            raise self._lost(stage_name, len(jobs)) from None
        stalled_since: float | None = None
        try:
            while submitted:
                try:
                    done = dask_wait([f for f, _, _ in submitted.values()], timeout=POLL_S,
                                     return_when="FIRST_COMPLETED").done
                except DaskTimeout:
                    done = set()
                except CancelledError as e:  # some were cancelled: the scheduler is gone, or someone cancelled them
                    self._check_scheduler(stage_name, len(submitted), e)
                    done = {f for f, _, _ in submitted.values() if f.done()}
                if not done:  # nothing finished for a while: is anyone able to run the rest?
                    self._check_scheduler(stage_name, len(submitted))
                    stalled_since = self._check_workers(stage_name, resources, submitted, stalled_since)
                    continue
                stalled_since = None
                for fut in done:
                    _, task, key = submitted.pop(fut.key)
                    try:
                        envelope = fut.result()
                    except Exception as e:  # noqa: BLE001 - KilledWorker, CancelledError, ...
                        self._check_scheduler(stage_name, len(submitted) + 1, e)
                        yield self._failed(stage_name, task, key, e)
                        continue
                    finally:
                        fut.release()
                    yield self._checked_result(stage_name, task, envelope)
        finally:
            for fut, _, _ in submitted.values():
                fut.cancel()

    def _checked_result(self, stage_name: str, task: Task, envelope: Any) -> CaseResult:
        """A case's result, once its envelope (:func:`_case_fn`) says this curator's code and this
        process's libraries computed it. One computed by other code or libraries (a worker that
        joined, or that its nanny restarted after an out-of-memory kill and that imported the code
        or packages now on disk) stops the stage as the stage-start check does: its result is not
        kept, so the next run computes the case again."""
        theirs = envelope.get("code") if isinstance(envelope, dict) else None
        worker = envelope.get("worker", "unknown") if isinstance(envelope, dict) else "unknown"
        if isinstance(envelope, dict) and isinstance(envelope.get("result"), CaseResult) \
                and _same_code(theirs, self._ours):
            differ = _libraries_differ(envelope.get("libraries", "a curator that does not say which libraries it "
                                                    "runs"), self._libs)
            if differ is None:
                return envelope["result"]
            raise ConfigError("config_error", f"stage {stage_name}: Dask worker {worker} at "
                              f"{self.address or 'the local cluster'} computed case {task.case_id} with other "
                              f"libraries than this run records as its environment: {differ}; its result was not kept",
                              remedy=_SAME_ENVIRONMENT)
        said = theirs if isinstance(theirs, str) else "a curator that does not say which code it runs"
        raise ConfigError("config_error", f"stage {stage_name}: Dask worker {worker} at "
                          f"{self.address or 'the local cluster'} computed case {task.case_id} with other curator "
                          f"code: {said}, not this {self._ours}; its result was not kept",
                          remedy="start every worker from the same Python environment and curator checkout "
                          "as `curator run` (same venv, same PYTHONPATH, same commit and edits; a worker started or "
                          "restarted during a run imports the code on disk then, so do not update the code "
                          "under a running cluster), then run the same command again; finished cases are kept")

    def _on_workers(self, fn: Callable[..., Any]) -> dict[str, Any]:
        """``fn``'s answer on every worker (an exception it raised as the answer)."""
        try:
            return dict(self.client.run(fn, on_error="return"))
        except TypeError:  # older distributed: no on_error
            return dict(self.client.run(fn))

    def _check_code(self, stage_name: str) -> None:
        """Refuse a cluster whose workers import other curator code (another checkout, commit or
        version), or other versions of the libraries that change the values written (another numpy,
        SimpleITK, pydicom, zarr, Python, ...: :func:`_libraries_differ`): their cases would silently come from that code or those libraries, under the
        environment this run records for them (:mod:`curator.runner.provenance`) and this run's
        release. A worker that cannot import curator at all is named too."""
        ours = self._ours
        theirs = self._on_workers(_code_identity_fn())
        bad = {w: v for w, v in theirs.items() if w not in self._checked and not _same_code(v, ours)}
        if not bad:
            libs = self._on_workers(_libraries_fn())
            differ = {w: d for w, v in libs.items() if w not in self._checked
                      and (d := _libraries_differ(v, self._libs)) is not None}
            if differ:
                named = "; ".join(f"{w}: {d}" for w, d in sorted(differ.items()))
                raise ConfigError("config_error", f"stage {stage_name}: {len(differ)} of the {len(libs)} Dask "
                                  f"worker(s) at {self.address} run other libraries than this run records as its "
                                  f"environment: {named}", remedy=_SAME_ENVIRONMENT)
            self._checked.update(w for w in theirs if w in libs)
        if bad:
            named = "; ".join(f"{w}: {v if isinstance(v, str) else f'{type(v).__name__}: {v}'}"
                              for w, v in sorted(bad.items()))
            raise ConfigError("config_error", f"stage {stage_name}: {len(bad)} of the {len(theirs)} Dask worker(s) at "
                              f"{self.address} do not run this {ours}: {named}",
                              remedy="start every worker from the same Python environment and curator checkout "
                              "as `curator run` (same venv, same PYTHONPATH, same commit and edits; restart workers after "
                              "updating the code: a running worker keeps the code it loaded), then run the same "
                              "command again; finished cases are kept")

    def _lost(self, stage_name: str, left: int) -> StageError:
        return StageError("stage_error", f"stage {stage_name} stopped: lost the connection to the Dask scheduler "
                          f"at {self.address or 'the local cluster'} with {left} case(s) not finished",
                          remedy="check that the scheduler still runs and is reachable (restart it and its "
                          "workers if it died), then run the same command again; finished cases are kept")

    def _check_scheduler(self, stage_name: str, left: int, err: BaseException | None = None) -> None:
        """Stop the stage when the scheduler is gone: its futures come back cancelled, and every
        case left would otherwise be recorded as a crash of its own."""
        lost = self.client.status not in ("running", "newly-created")
        if lost or "scheduler-connection-lost" in str(err or ""):  # distributed's reason for cancelling them
            raise self._lost(stage_name, left)

    def _check_workers(self, stage_name: str, resources: dict[str, int] | None, submitted: dict[Any, Any],
                       stalled_since: float | None) -> float | None:
        """Cases wait forever on a cluster with no worker able to run them (every worker gone,
        or the only ones with the GPU resource): warn at once, stop after ``NO_WORKER_WAIT_S``."""
        try:
            workers = self._workers()
        except OSError:
            raise self._lost(stage_name, len(submitted)) from None
        able = [w for w in workers if not resources or all((w.get("resources") or {}).get(r, 0) >= n
                                                             for r, n in resources.items())]
        if able:
            return None
        need = "with the GPU resource (`dask worker ... --resources GPU=1`)" if resources else ""
        now = time.monotonic()
        if stalled_since is None:
            log.warning("stage %s: no Dask worker %s is connected to the scheduler at %s; %d case(s) wait "
                        "for one (stopping in %.0f s)", stage_name, need or "at all", self.address,
                        len(submitted), NO_WORKER_WAIT_S)
            return now
        if now - stalled_since >= NO_WORKER_WAIT_S:
            raise StageError("stage_error", f"stage {stage_name} stopped: no Dask worker {need or 'at all'} was "
                             f"connected to the scheduler at {self.address} for {NO_WORKER_WAIT_S:.0f} s, with "
                             f"{len(submitted)} case(s) waiting for one",
                             remedy=f"start a worker {need + ' ' if need else ''}for the scheduler (or check why they died: "
                             "their logs), then run the same command again; finished cases are kept")
        return stalled_since

    def _failed(self, stage_name: str, task: Task, key: str, e: BaseException) -> CaseResult:
        """A case whose future failed: its worker died (``KilledWorker``), or the worker could not
        run curator's code at all (a missing package, other code)."""
        from distributed.scheduler import KilledWorker

        if isinstance(e, KilledWorker):
            return _crashed(stage_name, task, key, "the Dask scheduler gave up on it after its worker died "
                            "while running it, as often as `distributed.scheduler.allowed-failures` allows")
        if isinstance(e, CancelledError):
            return _crashed(stage_name, task, key, "it was cancelled on the Dask cluster, by another client or the "
                            "scheduler")
        err = CuratorError("internal_error", f"the Dask worker could not run this case: {type(e).__name__}: {e}",
                           remedy="start every Dask worker from the same Python environment and curator "
                           "checkout as `curator run` (same venv, same PYTHONPATH), then run the same command "
                           "again; `curator env` lists what each needs")
        row = problem_row(stage_name, err, dataset=task.dataset, case_id=task.case_id, path=task.path)
        return CaseResult(task.case_id, key, {}, [row], failed=True, cacheable=False)

    def _drain(self) -> None:
        """Cancel the stage's unfinished cases and wait for those already running on the external
        cluster's workers: a running case cannot be interrupted, and once this run ends (and
        lets go of the workspace lock) it would write on into the workspace beside the next run.
        A second Ctrl-C stops the wait."""
        keys = set(self._pending)
        for fut, _, _ in self._pending.values():
            fut.cancel()
        self._pending = {}
        said = False
        while True:
            try:
                running = {k for ks in self.client.run(_running_keys, keys).values() for k in ks}
            except Exception:  # noqa: BLE001 - the scheduler is gone, or a worker cannot run curator: nothing to ask
                return
            if not running:
                if said:
                    log.warning("the Dask workers finished the running case(s)")
                return
            if not said:
                log.warning("waiting for %d case(s) still running on the Dask cluster at %s to finish: a running "
                            "case cannot be interrupted and would write into the workspace beside the next run "
                            "(Ctrl-C again to stop waiting)", len(running), self.address)
                said = True
            time.sleep(0.5)

    def _workers(self) -> list[dict[str, Any]]:
        try:
            info = self.client.scheduler_info(n_workers=-1)  # newer distributed lists only 5 by default
        except TypeError:  # older ones list all and take no n_workers
            info = self.client.scheduler_info()
        return list(info.get("workers", {}).values())

    def _has_gpu_resource(self) -> bool:
        return any("GPU" in (w.get("resources") or {}) for w in self._workers())

    def close(self) -> None:
        if self.cluster is None and self._pending and self.client.status == "running":  # stopped mid-stage
            self._drain()
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
