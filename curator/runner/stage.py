"""The stage contract.

A stage is a :class:`Stage` subclass living in its own subpackage. It has

* ``plan()`` — runs in the main process, reads earlier tables, returns one
  :class:`Task` per case (a JSON-able payload + a fingerprint of the inputs);
* ``process(task, config, env)`` — a classmethod run in a worker (process pool or Dask):
  reads the case's inputs, calls the stage's pure per-case functions, writes per-case
  artefacts atomically, and returns a :class:`CaseOutput` (table rows + warnings);
  a bad case raises a :class:`~curator.errors.CuratorError` (``raise with_warnings(err,
  out.problems)`` keeps the warnings it collected before failing);
* ``finalize(results)`` — main process: turns all per-case rows into tables (and does the
  cross-case work some stages need: dedup grouping, QC cohort bounds).

The runner (:mod:`curator.runner.run`) owns processes, caching, progress and problems.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from curator import __version__
from curator.config import StageConfig
from curator.errors import CuratorError
from curator.io.formats import WORKERS
from curator.io.fsutil import canonical_json
from curator.problem_kinds import remedy_for
from curator.schema import to_arrow

if TYPE_CHECKING:  # pragma: no cover
    from curator.runner.context import Context


@dataclass(frozen=True)
class Task:
    """One case's unit of work."""

    case_id: str
    payload: dict[str, Any]
    fingerprint: str  # checksums (or stat fingerprints) of every input file of the case
    dataset: str | None = None
    path: str | None = None  # display path for problems ("<source>:<relative path>")


@dataclass(frozen=True)
class CaseEnv:
    """What a worker needs besides the task: plain data, picklable, no open handles."""

    workspace: str
    sources: dict[str, str]  # source name -> absolute root
    key_hex: str  # pseudonym key (memory only; never written by a stage)
    code_version: str = __version__
    threads: int = 0  # intra-op threads a worker's numeric library should use (0: leave as it is)
    workers: int = 1  # worker processes sharing this machine's memory (io.formats.check_memory's share)


@dataclass
class CaseOutput:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)  # warnings: the case is kept


@dataclass
class CaseResult:
    case_id: str
    key: str
    rows: dict[str, list[dict[str, Any]]]
    problems: list[dict[str, Any]]
    failed: bool = False
    cacheable: bool = True
    seconds: float = 0.0
    # the id of the code and libraries that computed it (curator.runner.provenance), stamped by
    # the run that wrote it; None in a result of a curator before it
    computed_with: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "key": self.key, "rows": self.rows, "problems": self.problems,
                "failed": self.failed, "seconds": round(self.seconds, 4),
                **({"computed_with": self.computed_with} if self.computed_with else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseResult:
        made = d.get("computed_with")
        return cls(d["case_id"], d["key"], d.get("rows", {}), d.get("problems", []),
                   bool(d.get("failed", False)), True, float(d.get("seconds", 0.0)),
                   made if isinstance(made, str) else None)


def problem_row(stage: str, err: CuratorError, *, dataset: str | None, case_id: str | None,
                path: str | None, severity: str = "error") -> dict[str, Any]:
    """A ``problems`` row from an error; the message always ends with what to do."""
    from curator.io.formats import scrub

    msg = scrub(err.detail or err.kind)  # no absolute path (a user name, a patient-named folder) is published
    remedy = err.remedy or remedy_for(err.kind)
    # the file a row is about, when its path column names another; never the source root's own
    # folder name (`<source>:.`), which is the user's and may name a person or a site
    other = _other_file(err.path, path) if err.path and path and not path.endswith(":.") else None
    if other:
        msg = f"{other}: {msg}"
    return {"stage": stage, "dataset": dataset, "case_id": err.case_id or case_id, "path": path,
            "kind": err.kind, "severity": severity, "message": f"{msg}. What to do: {remedy}"}


def _other_file(err_path: str, path: str) -> str | None:
    """``err_path`` by as many of its last path components as tell it from the file the row's
    ``path`` (``<source>:<relative path>``) names — ``labelsTr/x.nii.gz`` beside ``imagesTr/x.nii.gz``
    (MSD and nnU-Net give an image and its label one file name) — or None when it is that file."""
    if err_path == path:  # a dataset-wide row (`<dataset>:`): its path is the row's own
        return None
    mine = PurePosixPath(err_path).parts
    row = PurePosixPath(path.split(":", 1)[-1]).parts
    if row and mine[-len(row):] == row:
        return None
    k = next((k for k in range(1, len(mine) + 1) if mine[-k:] != row[-k:]), len(mine))
    return "/".join(mine[-k:])


def fault_path(task: Task, err: CuratorError, env: CaseEnv) -> str | None:
    """The ``path`` column of a case's error: the file the error names, as ``<source>:<relative
    path>`` when it lies under the case's source root (a preprocess that finds the label gone names
    ``labelsTr/x.nii.gz``, not the image); else the task's path (the case's image)."""
    source, _, _ = (task.path or "").partition(":")
    root = env.sources.get(source)
    if not err.path or root is None or not os.path.isabs(err.path):
        return task.path
    rel = os.path.relpath(err.path, root)  # no resolve(): the path may be a looping link
    if rel == "." or rel == ".." or rel.startswith("../"):
        return task.path
    return f"{source}:{Path(rel).as_posix()}"


def with_warnings(err: CuratorError, problems: list[dict[str, Any]]) -> CuratorError:
    """``err`` carrying the warnings its case collected before failing (``raise with_warnings(err,
    out.problems)``): :func:`execute` writes them beside the error's row instead of dropping them."""
    err.case_problems = tuple(problems)
    return err


class Stage:
    """Base class of every stage (see module docstring)."""

    name: ClassVar[str] = "stage"
    version: ClassVar[str] = "1"  # bump when per-case outputs change meaning
    config_class: ClassVar[type[StageConfig]] = StageConfig
    tables: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()  # tables that must exist before the stage runs
    gpu: ClassVar[bool] = False  # cases run on a GPU: Dask's GPU resource, a local pool's pinning (any_gpu)
    settings_files: ClassVar[str] = ""  # what settings_files_digest covers, for messages ("the taxonomy file")
    # tables written outside the stage line that the stage's results depend on, with what writes
    # them (for messages): each run records their digests, so a release refuses tables computed
    # before they changed (:mod:`curator.runner.freshness`)
    reads_tables: ClassVar[dict[str, str]] = {}
    # earlier stages whose being enabled or not changes the stage's results (qc judges the pseudo
    # labels only while pseudolabel is enabled): disabling one puts the stage out of date
    follows: ClassVar[tuple[str, ...]] = ()
    # the stage reads the sources' files: freshness plans it again and compares each case's key
    # with its cached result, so an edited, added or removed file puts it out of date
    reads_sources: ClassVar[bool] = False
    # a reads_sources stage's plan saves the content checksums it took (the workspace's checksum
    # cache); freshness sets False, so it names the files edited since the last run, every time
    save_checksums: bool = True

    def __init__(self, ctx: Context, config: StageConfig) -> None:
        self.ctx = ctx
        self.config = config

    @classmethod
    def any_gpu(cls, config: StageConfig) -> bool:
        """Whether the stage's cases run on whichever GPU their worker sees (``gpu`` stages), so a
        local pool may give each worker a GPU of its own; a stage whose config names the device
        (``cuda:1``) or asks for the CPU says False."""
        return cls.gpu

    # -- to implement -----------------------------------------------------------------------
    def plan(self) -> list[Task]:
        raise NotImplementedError

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        raise NotImplementedError

    def edited_inputs(self, task: Task, since_ns: int) -> list[str]:
        """For a ``reads_sources`` stage: the files under a source root that ``task`` reads and that
        were written after ``since_ns`` (a time in ns), as ``<source>:<path under its root>`` —
        what `curator status` names beside a case whose inputs changed. None by default."""
        return []

    def edited_source_files(self, since_ns: int) -> list[str]:
        """For a ``reads_sources`` stage: the files under the source roots that the dataset YAMLs
        name for the whole dataset (a metadata table, an official split, an index listing the
        pairs) written after ``since_ns``, as :meth:`edited_inputs` names them. None by default."""
        return []

    @classmethod
    def settings_files_digest(cls, ctx: Context, config: StageConfig) -> str | None:
        """A digest of the files the stage's settings name (a taxonomy, QC overrides, model
        weights), or None when it reads none. Each run records it; a release refuses tables
        computed from other versions of those files (:mod:`curator.runner.freshness`)."""
        return None

    @classmethod
    def settings_files_parts(cls, ctx: Context, config: StageConfig) -> dict[str, str] | None:
        """The digest of each named part of those files (an ensemble's models: name -> its
        fingerprint), or None. A run records what its plan leaves in ``self.settings_parts``, so
        that ``curator status`` names the part that changed. Default: none."""
        return None

    @classmethod
    def settings_files_missing(cls, ctx: Context, config: StageConfig) -> list[str]:
        """The files the stage's settings name that do not exist (``curator run`` refuses them
        before any stage runs, not hours later when this one starts); may raise a
        ``CuratorError`` for a settings file that cannot be read. Default: none."""
        return []

    def outputs_exist(self, result: CaseResult) -> bool:
        """Whether a cached result's files are still there (default: a stage writes no files).
        A cached case whose outputs were deleted is run again rather than trusted."""
        return True

    def finalize(self, results: list[CaseResult]) -> dict[str, pa.Table]:
        """Default: concatenate each table's per-case rows."""
        out: dict[str, list[dict[str, Any]]] = {t: [] for t in self.tables}
        for r in results:
            for t, rows in r.rows.items():
                out.setdefault(t, []).extend(rows)
        return {t: to_arrow(t, rows) for t, rows in out.items()}

    # -- helpers ----------------------------------------------------------------------------
    @classmethod
    def ref(cls) -> str:
        return f"{cls.__module__}:{cls.__qualname__}"

    def cache_payload(self, task: Task) -> Any:
        """What of ``task.payload`` keys the cache (default: all of it). A stage whose payload
        carries machine paths of files the fingerprint already covers by content leaves them
        out, so moving those files does not re-run every case."""
        return task.payload

    def task_key(self, task: Task) -> str:
        h = hashlib.sha256()
        for part in (self.name, self.version, self.config.per_case().config_hash(), task.fingerprint,
                     canonical_json(self.cache_payload(task))):
            h.update(part.encode())
            h.update(b"\x00")
        return h.hexdigest()[:32]


def load_stage_class(ref: str) -> type[Stage]:
    module, _, qual = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


# kinds of a case's failure that are the workspace's, not the case's: never cached as failed (the same
# command retries the case once they are fixed), and the stage stops on the first one
WORKSPACE_FAULTS = ("disk_full", "folder_unwritable")
# kinds of a case's failure that are the state of its store in the workspace (missing, damaged,
# unreadable), not its input: a store is rebuilt by preprocess, so such a failure is never cached
# (a cached store_missing outlived the deleted store and the release shipped without the case);
# not ``store_error``, which also names deterministic errors (a label code over 32 bits) that no
# rebuild fixes: never cached, they came back on every run
STORE_FAULTS = ("store_missing", "store_damaged")
# kinds of a case's failure that are this machine's at the time (its GPUs), not the case's: never
# cached as failed, so the next run on another device or with other settings tries the case again
NOT_CACHED = (*WORKSPACE_FAULTS, *STORE_FAULTS, "gpu_out_of_memory", "gpu_unavailable")


def execute(ref: str, task: Task, key: str, config_dict: dict[str, Any], env: CaseEnv) -> CaseResult:
    """Run one case in a worker. Bad input → a failed result with a problem row (cacheable);
    an unexpected exception → an ``internal_error`` row (not cached, so a re-run retries)."""
    cls = load_stage_class(ref)
    config = cls.config_class.from_dict(config_dict).per_case()  # what the task key covers
    t0 = time.perf_counter()
    budget = WORKERS.set(env.workers)  # a crafted file's arrays are refused by the memory each worker has
    try:
        out = cls.process(task, config, env)
        return CaseResult(task.case_id, key, out.rows, out.problems, False, True, time.perf_counter() - t0)
    except CuratorError as e:
        row = problem_row(cls.name, e, dataset=task.dataset, case_id=task.case_id, path=fault_path(task, e, env))
        return CaseResult(task.case_id, key, {}, [*e.case_problems, row], True, e.kind not in NOT_CACHED,
                          time.perf_counter() - t0)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        err = CuratorError("disk_full", "no space left on the device while processing this case",
                           remedy="free disk space, then run the same command again (finished work is kept)")
        row = problem_row(cls.name, err, dataset=task.dataset, case_id=task.case_id, path=task.path)
        return CaseResult(task.case_id, key, {}, [row], True, False, time.perf_counter() - t0)
    except MemoryError:
        err = CuratorError("internal_error", "ran out of memory on this case",
                           remedy="run with fewer --workers or on a machine with more memory")
        row = problem_row(cls.name, err, dataset=task.dataset, case_id=task.case_id, path=task.path)
        return CaseResult(task.case_id, key, {}, [row], True, False, time.perf_counter() - t0)
    except ModuleNotFoundError as e:  # a worker's environment, not a bug: say which package
        err = CuratorError("internal_error", f"this worker's Python environment has no module {e.name!r} "
                           f"({e})", remedy="install curator with the same extras in every worker's environment "
                           "as where `curator run` runs (`curator env` lists what each has), then run the same "
                           "command again; finished cases are kept")
        row = problem_row(cls.name, err, dataset=task.dataset, case_id=task.case_id, path=task.path)
        return CaseResult(task.case_id, key, {}, [row], True, False, time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - the run continues; the row says it is a bug
        tb = traceback.extract_tb(e.__traceback__)[-1]
        err = CuratorError("internal_error", f"{type(e).__name__}: {e} (at {tb.filename.rsplit('/', 1)[-1]}:"
                           f"{tb.lineno})", remedy="report this as a bug with the case's file; "
                           "the rest of the run continued")
        row = problem_row(cls.name, err, dataset=task.dataset, case_id=task.case_id, path=task.path)
        return CaseResult(task.case_id, key, {}, [row], True, False, time.perf_counter() - t0)
    finally:
        WORKERS.reset(budget)
