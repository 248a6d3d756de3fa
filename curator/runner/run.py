"""Running stages: cache look-up, execution, progress, problems, consolidation."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from curator.errors import StageError, WorkspaceError
from curator.runner.context import Context
from curator.runner.executors import Executor, make_executor
from curator.runner.freshness import rerun_reasons, tables_read_digest, upstream_runs, write_record
from curator.runner.provenance import case_environments, record_environment
from curator.runner.stage import NOT_CACHED, WORKSPACE_FAULTS, CaseResult, Stage, Task
from curator.schema import to_arrow

log = logging.getLogger("curator")
console = Console(stderr=True)


@dataclass
class StageReport:
    stage: str
    planned: int = 0
    cached: int = 0
    ran: int = 0
    failed: int = 0
    errors: int = 0  # error rows that failed no case: a source root, a dataset YAML, ...
    warnings: int = 0
    seconds: float = 0.0
    tables: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the stage says of its run beyond the counts

    def line(self) -> str:
        errors = f"{self.errors} errors, " if self.errors else ""
        notes = "".join(f" — {n}" for n in self.notes)
        return (f"{self.stage}: {self.planned} cases ({self.cached} cached, {self.ran} run), "
                f"{self.failed} failed, {errors}{self.warnings} warnings, {self.seconds:.1f} s{notes}")

    @property
    def clean(self) -> bool:
        """No failed case and no error row."""
        return not (self.failed or self.errors)


@contextlib.contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Any]:
    if not enabled or total == 0:
        class _Null:
            def advance(self, n: int = 1) -> None:
                pass
        yield _Null()
        return
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                    transient=False)
    with prog:
        tid = prog.add_task(label, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                prog.advance(tid, n)
        yield _Bar()


def _workspace_fault(res: CaseResult, stage: str, root: Path, ran: int) -> WorkspaceError | None:
    """The error that stops a stage when a case failed for the workspace's sake, not its own
    (:data:`~curator.runner.stage.WORKSPACE_FAULTS`: a full disk, a folder refusing writes)."""
    bad = next((p for p in res.problems if p["kind"] in WORKSPACE_FAULTS), None)
    if bad is None:
        return None
    kept = f"{ran} finished case(s) are kept"
    if bad["kind"] == "disk_full":
        return WorkspaceError("disk_full", f"stage {stage} stopped: the disk is full (while processing "
                              f"{res.case_id})", path=str(root),
                              remedy=f"free disk space, then run the same command again; {kept}")
    return WorkspaceError("folder_unwritable", f"stage {stage} stopped: {bad['message'].split('. What to do:')[0]} "
                          f"(while processing {res.case_id})", path=str(root),
                          remedy=f"make {root} and the folders under it writable for the user running curator "
                          "(check their owner, a read-only mount or an immutable flag: `ls -ld`, `lsattr -d`), "
                          f"then run the same command again; {kept}")


def _not_cached(res: CaseResult) -> bool:
    """Whether a cached failure is of a kind never cached now (:data:`~curator.runner.stage.NOT_CACHED`)."""
    return any(p.get("kind") in NOT_CACHED for p in res.problems if p.get("severity") == "error")


CRASH_STOP = 3  # a stage whose worker died on every one of at least this many cases it ran stops the run


def _all_crashed(ctx: Context, stage: str, ran: list[CaseResult], succeeded: bool) -> StageError | None:
    """The error that stops the run when the worker process died on every case a stage ran (at
    least :data:`CRASH_STOP`) and no case of the stage succeeded, in this run or from the cache:
    workers too small for the cases (a Dask worker's memory limit), not bad data. Each case was a
    ``worker_crashed`` row and the run went on to write a release without the stage's results,
    exiting 0. (A resumed run whose only pending cases are the few that crash their worker — not
    cached, so planned again — goes on: the cached cases show the workers can run the stage.)"""
    if succeeded or len(ran) < CRASH_STOP or not all(r.failed and any(p["kind"] == "worker_crashed" for p in r.problems)
                                        for r in ran):
        return None
    ex = ctx.config.executor
    if ex.kind == "dask":
        what = ("give each Dask worker more memory (`dask worker --memory-limit`, or the "
                "`distributed.worker.memory.*` settings; the workers' own logs say when they were restarted for "
                "memory)" if ex.address else "lower --workers or give the machine more memory (each worker of "
                "the local Dask cluster holds one case at a time)")
    else:
        what = "lower --workers or free memory (each worker holds one case at a time)"
    return StageError("stage_error", f"stage {stage} stopped: the worker process died on every case it ran "
                      f"({len(ran)} of {len(ran)}) and no case of the stage has succeeded, which points at the workers more "
                      "than at the data",
                      remedy=f"{what}, then run the same command again (finished stages are kept; the "
                      f"problems table lists the crashes: stage = '{stage}' and kind = 'worker_crashed')")


def run_stage(ctx: Context, stage_cls: type[Stage], executor: Executor | None = None) -> StageReport:
    """Run one stage over every planned case (resuming), then write its tables atomically."""
    config = ctx.stage_config(stage_cls.config_class, stage_cls.name)
    stage = stage_cls(ctx, config)
    report = StageReport(stage_cls.name)
    t0 = time.perf_counter()
    ws = ctx.workspace
    missing = [t for t in stage_cls.requires if not ws.has_table(t)]
    if missing:
        raise StageError("stage_error", f"stage {stage_cls.name} needs table(s) {missing}",
                         remedy="run the stage(s) that write them first (e.g. `curator run`)")
    upstream = upstream_runs(ctx, stage_cls.name)  # what this run's tables are computed from
    files = stage_cls.settings_files_digest(ctx, config)
    tables_read = tables_read_digest(ctx, stage_cls)
    tasks = stage.plan()
    _check_unique(stage_cls.name, tasks)
    made = record_environment(ws)  # the code and libraries this run computes its cases with
    report.planned = len(tasks)
    jobs: list[tuple[Task, str]] = []
    results: dict[str, CaseResult] = {}
    for t in tasks:
        key = stage.task_key(t)
        cached = ws.read_case_result(stage_cls.name, t.case_id, rerun=True)
        hit = CaseResult.from_json(cached) if cached is not None and cached.get("key") == key else None
        if hit is not None and hit.failed and (hit.computed_with != made or _not_cached(hit)):
            hit = None  # a failure under other code or libraries is tried again: they may read the file now;
            # one that is never cached now (a store missing: written by a curator that cached it) is too
        if hit is not None and stage.outputs_exist(hit):
            if stage_cls.reads_sources:  # found in its source again: gc keeps a run's cases by this mtime
                ws.touch_case_result(stage_cls.name, t.case_id)  # until the run writes its tables
            results[t.case_id] = hit
            report.cached += 1
        else:
            jobs.append((t, key))
    # a whole stage run again after an upgrade or a settings change: said why, as status says it (not
    # when some cases come from the cache: those run are new or changed, whatever else changed)
    if jobs and not report.cached:
        for why in rerun_reasons(ctx, stage_cls, files, tables_read):
            log.info("%s: %d case(s) to run: %s", stage_cls.name, len(jobs), why)
    own = executor is None
    ex = executor or make_executor(ctx.config.executor)
    env = ctx.case_env()
    # a case that failed in an earlier run fails this one too under on_bad_case: error (the cache
    # must not turn a strict run's bad input into a pass)
    first_error: CaseResult | None = None
    if config.on_bad_case == "error":
        first_error = next((r for r in results.values() if r.failed), None)
        if first_error is not None:
            jobs = []
    try:
        with _progress(ctx.config.executor.progress, stage_cls.name, len(jobs)) as bar:
            for res in ex.run(stage_cls.ref(), stage_cls.name, jobs, config.to_dict(), env, gpu=stage_cls.gpu,
                              any_gpu=stage_cls.any_gpu(config)):
                fault = _workspace_fault(res, stage_cls.name, ws.root, report.ran)
                if fault is not None:  # every later case would fail the same way
                    raise fault
                res.computed_with = made
                if res.cacheable:
                    ws.write_case_result(stage_cls.name, res.case_id, res.to_json())
                results[res.case_id] = res
                report.ran += 1
                bar.advance()
                if res.failed:
                    _announce(config.on_bad_case, res)
                    if config.on_bad_case == "error" and first_error is None:
                        first_error = res
                        break
    finally:
        if own:
            ex.close()
    if first_error is not None:
        _write_problems(ctx, stage_cls.name, list(results.values()))
        p = next((q for q in first_error.problems if q["severity"] == "error"), first_error.problems[-1])
        file = _file_of(ctx, p)
        raise _stopped(stage_cls.name, f"case {first_error.case_id}" + (f", file {file}" if file else ""), p,
                       "bad cases as problems")
    crashed = _all_crashed(ctx, stage_cls.name, [results[t.case_id] for t, _ in jobs if t.case_id in results],
                           succeeded=any(not r.failed for r in results.values()))
    if crashed is not None:  # the machine, not the data: no release built on a stage that did nothing
        _write_problems(ctx, stage_cls.name, list(results.values()))
        raise crashed
    ordered = [results[t.case_id] for t in tasks if t.case_id in results]
    report.failed = sum(r.failed for r in ordered)
    # info rows ("accepted, nothing to do") are kept in the table but are no warning
    report.warnings = sum(p["severity"] != "info" for r in ordered if not r.failed for p in r.problems)
    tables = stage.finalize([r for r in ordered if not r.failed])
    for name, table in tables.items():
        report.tables[name] = table.num_rows
    extra = list(getattr(stage, "extra_problems", []))  # rows not tied to one task: a missing source root,
    errors = [p for p in extra if p["severity"] == "error"]  # an invalid dataset YAML, a duplicate file...
    report.errors = len(errors)
    report.warnings += sum(p["severity"] == "warning" for p in extra)
    report.notes = list(getattr(stage, "notes", []))  # e.g. qc: "7 of 9 override rows matched no label"
    for p in extra:  # said, not only stored: a whole source can be in one of these rows. `skip` quiets
        # bad cases' problems; an error of a whole source (a root that is not there, a dataset YAML
        # that does not load) is no bad case and is said whatever on_bad_case (it is counted as one)
        if config.on_bad_case in ("warn", "error") or p["severity"] == "error":
            log.log(_LEVEL.get(p["severity"], logging.WARNING), "%s [%s] %s",
                    _where(ctx, p) or p.get("case_id") or p.get("dataset") or stage_cls.name, p["kind"], p["message"])
    if config.on_bad_case == "error" and errors:  # as a failed case: the problems are kept, the tables are not
        ws.write_table(f"problems__{stage_cls.name}", _problems_table(ordered, extra))
        raise _stopped(stage_cls.name, _where(ctx, errors[0]) or "its plan", errors[0], "it as a problem")
    ws.write_tables({**tables, f"problems__{stage_cls.name}": _problems_table(ordered, extra)})
    report.seconds = time.perf_counter() - t0
    parts = getattr(stage, "settings_parts", None)  # each model's fingerprint, as the plan read them
    write_record(ctx, stage_cls, config, upstream, settings_files=files, tables_read=tables_read,
                 planned=report.planned, failed=report.failed, tables=report.tables, run_environment=made,
                 case_environments=case_environments(r for r in ordered if not r.failed),
                 **({"settings_files_parts": parts} if parts else {}))
    log.info(report.line())
    return report


_LEVEL = {"error": logging.ERROR, "info": logging.INFO}


def _where(ctx: Context, row: dict[str, Any]) -> str | None:
    """A problem row's path as the console says it: a row about a source's root (``KiTS23:.``)
    with the folder its ``root:`` resolves to. The row itself never holds that folder (it is
    published, and the folder may name a person); the console is the user's own."""
    path = row.get("path")
    if not path or not path.endswith(":."):
        return path
    source = ctx.sources.get(path[:-2])
    return f"{path} (root: {source.root})" if source is not None else path


def _file_of(ctx: Context, row: dict[str, Any]) -> str | None:
    """The file a case's problem row is about, as the console says it: under its source's root
    (the row holds ``<source>:<relative path>``; MSD's image and label share a file name)."""
    path = row.get("path")
    if not path or path.endswith(":."):
        return None
    name, _, rel = path.partition(":")
    if rel and rel == row.get("case_id"):  # a pseudonymous source's case: its task names no file
        return None
    source = ctx.sources.get(name)
    return str(source.root / rel) if source is not None and rel else path


def _stopped(stage: str, at: str, row: dict[str, Any], record: str) -> StageError:
    """The error that stops a stage under ``on_bad_case: error`` at problem ``row`` (its message's
    one "What to do:" becomes the remedy)."""
    what, _, todo = row["message"].partition(". What to do: ")
    return StageError("stage_error", f"stage {stage} stopped at {at}: {what}",
                      remedy=f"{todo or 'fix the input'}; or set on_bad_case: warn to record {record} and continue")


def _check_unique(stage: str, tasks: list[Task]) -> None:
    seen: set[str] = set()
    for t in tasks:
        if t.case_id in seen:
            raise StageError("stage_error", f"stage {stage} planned case {t.case_id} twice",
                             remedy="this is a bug in the stage's plan(); report it")
        seen.add(t.case_id)


def _announce(policy: str, res: CaseResult) -> None:
    if policy in ("warn", "error"):
        for p in res.problems:
            log.warning("%s [%s] %s", res.case_id, p["kind"], p["message"])


def _problems_table(results: list[CaseResult], extra: list[dict[str, Any]] | None = None) -> pa.Table:
    return to_arrow("problems", [p for r in results for p in r.problems] + list(extra or []))


def _write_problems(ctx: Context, stage: str, results: list[CaseResult]) -> None:
    ctx.workspace.write_table(f"problems__{stage}", _problems_table(results))
