"""Writing a release: tables as Parquet + ``release.json`` in ``<root>/<collection>/<version>/``.

A release is assembled in a hidden temporary folder next to its destination and renamed
into place in one step. An existing version is never overwritten unasked: a rebuild of it with the
same content (``content_sha256``) keeps the published folder, one with other content is refused
(``--overwrite`` replaces it). Extra release steps
(splits, dataset card, stores, reports) plug in through :data:`RELEASE_STEPS`.
"""

from __future__ import annotations

import datetime as dt
import errno
import importlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curator import __version__
from curator.envinfo import code_revision, versions
from curator.errors import CuratorError, ReleaseError
from curator.io.fsutil import (
    atomic_write_json,
    creatable_problem,
    remove_dead_staging,
    sha256_file,
    sha256_json,
    staging_path,
)
from curator.release.changes import write_changes
from curator.release.integrity import content_sha256, published_content, record_stores
from curator.release.lineage import (
    checksum_values,
    lineage,
    published_config,
    published_config_hash,
    published_settings,
    resolve_parent,
    sha256_sorted,
)
from curator.release.tables import TableSet, copy_table, write_release_table
from curator.runner.context import Context
from curator.runner.freshness import check_fresh
from curator.runner.provenance import environments_of
from curator.schema import load_schemas, schema_version, table_schema, to_arrow

log = logging.getLogger("curator")

# Optional steps, run in order if their module is installed: "module:function".
# Each is called as fn(builder) and may add tables (builder.tables) or files under builder.staging.
RELEASE_STEPS: list[str] = [
    "curator.release.splits:release_step",
    "curator.dedup.release:release_step",
    "curator.preprocess.release:release_step",
    "curator.pseudolabel.release:release_step",
    "curator.qc.release:release_step",
    "curator.taxonomy.release:release_step",
    "curator.release.privacy:release_step",
    "curator.release.sources:release_step",
    "curator.release.registry_files:release_step",
    "curator.release.schema_doc:release_step",
    "curator.release.changes:release_step",
    "curator.release.card:release_step",
    "curator.report.release:release_step",
]
# Steps that describe the written tables (their checksums): run after the tables are written.
FINAL_STEPS: list[str] = [
    "curator.release.croissant:release_step",
]


@dataclass
class ReleaseBuilder:
    ctx: Context
    staging: Path
    tables: TableSet = field(default_factory=TableSet)  # name -> pa.Table, workspace files loaded on use
    extra: dict[str, Any] = field(default_factory=dict)  # merged into release.json
    parent: Path | None = None  # the parent release folder (lineage.resolve_parent)
    # when the release was built (UTC): release.json's `created`, croissant.json's date
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    # SHA-256 of staged files already hashed (relative path -> digest): the final steps
    # (croissant.json) and release.json both list every table's, and a table is read once
    digests: dict[str, str] = field(default_factory=dict)
    # what changed since the parent in the tables being released (a curator.release.diff.ReleaseDiff,
    # by the changes release step): the card's "Changes since" section
    changes: Any = None

    @property
    def version(self) -> str:
        return self.ctx.config.release.version

    def digest(self, rel: str) -> str:
        """SHA-256 of the staged file ``rel``, hashed once (call it only once the file is final)."""
        if rel not in self.digests:
            self.digests[rel] = sha256_file(self.staging / rel)
        return self.digests[rel]

    def add_problems(self, rows: list[dict[str, Any]]) -> None:
        """Append ``problems`` rows found while building the release."""
        import pyarrow as pa

        if not rows:
            return
        have = self.tables["problems"] if "problems" in self.tables else to_arrow("problems", [])
        self.tables["problems"] = pa.concat_tables([have, to_arrow("problems", rows)], promote_options="permissive")


def check_writable(dest: Path, pipeline: str) -> None:
    """Refuse a release folder that cannot be written (read-only mount, a file in the way);
    ``pipeline``: the pipeline file the remedy names."""
    problem = creatable_problem(dest.parent)
    if problem is not None:
        probe, reason = problem
        raise ReleaseError("release_error", "the release folder cannot be written "
                           + ("(a file is in the way)" if reason is None else f"({reason})"),
                           path=str(probe), remedy=f"set `release.root` in {pipeline} to a folder you can write")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReleaseError("release_error", f"the release folder cannot be created: {e.strerror or e}",
                           path=str(dest.parent), remedy=f"set `release.root` in {pipeline} to a folder you "
                           "can write") from e


def release_dir(ctx: Context) -> Path:
    rc = ctx.config.release
    return Path(rc.root) / rc.collection / rc.version


def _load_step(ref: str) -> Callable[[ReleaseBuilder], None] | None:
    module, _, fn = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None  # step not installed
        raise
    return getattr(mod, fn)


def disabled_stages(ctx: Context) -> dict[str, tuple[str, ...]]:
    """Stages ``enabled: false`` in pipeline.yaml, with the tables they write."""
    from curator.stages import configured

    return {name: cls.tables for name, cls, enabled in configured(ctx) if not enabled}


def collect_tables(ctx: Context) -> TableSet:
    """Every workspace table (read when a step asks for it); the per-stage problem tables
    become one ``problems`` table. Tables of a stage now disabled are left out: what it
    wrote in an earlier run is not this configuration's result."""
    ws = ctx.workspace
    off = disabled_stages(ctx)
    skip = {t for tables in off.values() for t in tables} | {f"problems__{s}" for s in off}
    files: dict[str, Path] = {}
    problems: list[dict[str, Any]] = []
    for f in sorted(ws.tables_dir.glob("*.parquet")):
        name = f.stem
        if name in skip:
            log.info("release: %s left out (its stage is disabled in pipeline.yaml)", name)
        elif name.startswith("problems__"):
            problems += pq.read_table(f).to_pylist()
        elif not name.startswith("_"):
            files[name] = f
    return TableSet(files, {"problems": to_arrow("problems", problems)})


def check_consistent(tables: TableSet, pipeline: str) -> None:
    """Refuse tables holding cases that ``cases`` no longer lists — a stage re-run alone (a
    case removed from its source, then only `curator ingest`) left the later stages' tables
    behind, and their rows and stores would ship the withdrawn case. ``pipeline``: the pipeline
    file the remedy names."""
    import pyarrow.compute as pc

    if "cases" not in tables:
        return
    ids = tables.read("cases", ["case_id"]).column("case_id")
    stale: dict[str, list[str]] = {}
    for name in tables:
        if name in ("cases", "problems"):
            continue
        f = tables.file(name)
        cols = pq.read_schema(f).names if f is not None else tables[name].column_names
        if "case_id" not in cols:
            continue
        got = pc.unique(tables.read(name, ["case_id"]).column("case_id"))
        extra = pc.filter(got, pc.invert(pc.is_in(got, value_set=ids))).to_pylist()
        if extra:
            stale[name] = sorted(str(x) for x in extra)
    if stale:
        some = sorted({c for v in stale.values() for c in v})
        raise ReleaseError("release_error", "the workspace's tables are out of step: "
                           + "; ".join(f"{n} holds {len(v)} case(s) not in cases" for n, v in sorted(stale.items()))
                           + f" (e.g. {', '.join(some[:3])})",
                           remedy=f"run the later stages too (`curator run {pipeline}`: cached cases "
                           "are not redone), then the release")


def check_cases(ctx: Context) -> None:
    """Refuse a release without cases (it would use up its immutable version) or without a
    source pipeline.yaml lists (:func:`check_sources`). ``curator status`` asks the same."""
    if pq.ParquetFile(ctx.workspace.table_path("cases")).metadata.num_rows == 0:
        raise ReleaseError("release_error", "ingest found no case, so the release would be empty",
                           path=str(ctx.workspace.table_path("problems__ingest")),
                           remedy=f"check each source's `root:` and dataset in {ctx.config.file_name} against the errors "
                           "ingest logged (they are rows of this problems table), then run again")
    check_sources(ctx)


def check_sources(ctx: Context) -> None:
    """Refuse a release that leaves out a source pipeline.yaml lists: a root that is not there
    (an unmounted share), matches nothing, or a dataset YAML that does not load gave no case, and
    an unattended run published the other datasets with exit 0 — while release.json states the
    pipeline's sources, that one included."""
    cases = ctx.workspace.read_table("cases", ["source"])  # one column of a table of a million rows
    have = set(cases.column("source").to_pylist()) if cases is not None and "source" in cases.column_names else set()
    said: dict[str, str] = {}
    problems = ctx.workspace.read_table("problems__ingest")
    for p in problems.to_pylist() if problems is not None else []:
        if p["case_id"] is None and p["severity"] == "error" and p.get("dataset"):
            said.setdefault(p["dataset"], p["message"].partition(". What to do: ")[0])
    gone = [f"{name} ({said.get(name) or said.get(src.spec.name) or 'no case ingested'})"
            for name, src in sorted(ctx.sources.items()) if name not in have]
    # a dataset YAML that does not load (named in `sources:`, or in `registry:` and used by a source);
    # a broken file in `registry:` that no source uses leaves nothing out
    gone += [f"{name} ({why})" for name, why in sorted(ctx.skipped_sources.items())]
    name = ctx.config.file_name
    if gone and ctx.config.release.allow_missing_sources:
        log.warning("release: %d source(s) of %s gave no case and are left out (allow_missing_sources): "
                    "%s", len(gone), name, "; ".join(gone[:5]))
    elif gone:
        raise ReleaseError("release_incomplete", f"{len(gone)} source(s) of {name} gave no case, so the "
                           "release would leave them out: " + "; ".join(gone[:5]) + (" …" if len(gone) > 5 else ""),
                           remedy=f"fix them (`curator status {name}` and the ingest problems say why: mount "
                           f"the root, fix the patterns or the dataset YAML) and run again, remove them from "
                           f"{name}'s `sources:`, or set `release.allow_missing_sources: true`")


def exists_remedy(file_name: str) -> str:
    """What to do when the release version exists with other content: a new version — or, knowingly,
    the same version replaced (a damaged copy, a version never handed out)."""
    return (f"releases are immutable: bump `release.version` in {file_name} for the new content; to replace this "
            "version knowingly (a damaged copy, a version no one has yet), delete its folder or pass `--overwrite`")


def _differing(old: dict[str, str], new: dict[str, str]) -> str:
    """`` (3 file(s) differ: cases.parquet, labels.parquet, …)``: the files two builds list
    differently (croissant.json, dated by its build, left out as content_sha256 leaves it out)."""
    diff = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p) and p != "croissant.json")
    return f" ({len(diff)} file(s) differ: {', '.join(diff[:5])}{', …' if len(diff) > 5 else ''})" if diff else ""


def _keep_or_replace(dest: Path, staging: Path, info: dict[str, Any], overwrite: bool, pipeline: str) -> bool:
    """A rebuild of a version already at ``dest``: True when it holds the same content (the published
    folder is kept as it is: its release.json, whose SHA-256 may be published, stays); its folder
    replaced by ``staging`` under ``overwrite``; else refused, naming both content_sha256 values."""
    rc_name = f"{dest.parent.name} {dest.name}"
    old, old_files = published_content(dest)
    new = str(info["content_sha256"])
    if old == new:
        log.info("release %s is already published with the same content (content_sha256 %s): kept as it is "
                 "(`curator verify %s` checks its files)", rc_name, new, dest)
        return True
    what = (f"content_sha256 {old} (published) → {new} (this build)" if old else
            "its release.json cannot be read, so its content cannot be compared") + _differing(old_files, info["files"])
    if not overwrite:
        raise ReleaseError("release_exists", f"release {rc_name} already exists with other content: {what}",
                           path=str(dest), remedy=exists_remedy(pipeline))
    log.warning("release %s replaced (--overwrite): %s", rc_name, what)
    aside = staging_path(dest.with_name(dest.name + ".replaced"))
    os.rename(dest, aside)
    try:
        os.rename(staging, dest)
    except OSError:
        os.rename(aside, dest)  # the published folder back where it was
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return False


def build_release(ctx: Context, *, steps: list[str] | None = None, overwrite: bool = False) -> Path:
    """Write the release of ``ctx``'s workspace into ``<root>/<collection>/<version>/``. A version
    already there is compared by content: the same ``content_sha256`` keeps it (a rebuild is
    idempotent), other content is refused (``release_exists``) unless ``overwrite`` replaces it."""
    rc = ctx.config.release
    dest = release_dir(ctx)
    if not ctx.workspace.has_table("cases"):
        raise ReleaseError("release_error", "the workspace has no cases table",
                           remedy=f"run ingest first (`curator run {ctx.config.file_name}`)")
    check_fresh(ctx)  # first: it names a damaged table (read below)
    check_cases(ctx)
    check_writable(dest, ctx.config.file_name)  # creates dest.parent
    remove_dead_staging(dest.parent)
    staging = staging_path(dest)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        b = ReleaseBuilder(ctx, staging, collect_tables(ctx), parent=resolve_parent(ctx))
        check_consistent(b.tables, ctx.config.file_name)
        for ref in steps if steps is not None else RELEASE_STEPS:
            fn = _load_step(ref)
            if fn is not None:
                fn(b)
        stores = _record_released_stores(b)  # the stores are final: SHA256SUMS, and their hashes for the tables
        for name in b.tables:
            table_schema(name)  # every released table has a declared schema
            src = b.tables.file(name)
            if src is not None:  # untouched workspace table: streamed, never loaded
                copy_table(src, staging / f"{name}.parquet", name)
            else:
                write_release_table(b.tables[name], name, staging / f"{name}.parquet")
        for ref in FINAL_STEPS:
            fn = _load_step(ref)
            if fn is not None:
                fn(b)
        if b.parent is not None:  # changes.json: the diff of the parent and this release, listed in files
            write_changes(b, _release_json(b, stores))
        info = _release_json(b, stores)
        atomic_write_json(staging / "release.json", info, indent=1)
        if os.path.lexists(dest):
            if _keep_or_replace(dest, staging, info, overwrite, ctx.config.file_name):
                return dest
        else:
            try:
                os.rename(staging, dest)  # atomic; fails if dest appeared meanwhile
            except OSError as e:
                raise ReleaseError("release_exists", f"release {rc.version} appeared while this one was built",
                                   path=str(dest), remedy="run the same command again: it compares this build "
                                   "with that release") from e
    except OSError as e:  # a full disk or quota while copying tables and stores: not a bug in curator
        raise release_write_error(e, dest, staging) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("release written: %s", dest)
    return dest


def release_write_error(e: OSError, dest: Path, staging: Path | None = None) -> CuratorError:
    """What a failed write of the release's staging folder (``staging``, removed) means for the user."""
    if isinstance(e, CuratorError):
        return e
    where = str(e.filename or dest)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        written = Path(str(e.filename2 or where))  # a copy names its source first
        # a file of the staging folder, which is gone: named by what it is in the release (a table, a store's chunk)
        part = written.relative_to(staging).as_posix() if staging is not None and written.is_relative_to(staging) \
            else written.name
        why = "no space left on the device" if e.errno == errno.ENOSPC else "the disk quota is used up"
        return ReleaseError("disk_full", f"{why} while writing the release {dest.name} into {dest.parent} (at "
                            f"{part}); nothing of it was kept", path=str(dest),
                            remedy=f"free space on the disk holding {dest.parent} (`df -h {dest.parent}` shows what is "
                            "left), or set `release.root` to a disk with more room; then run the same command again "
                            "(the workspace is unchanged)")
    named = e.filename if isinstance(e.filename, str | os.PathLike) else None  # not a descriptor number
    if named and not Path(named).resolve().is_relative_to(dest.parent.resolve()):
        # a file read from the workspace (or a source), not one written: the write advice would mislead
        return ReleaseError("release_error", f"cannot read {Path(where).name} while building the release "
                            f"{dest.name}: {e.strerror or e}; nothing of it was kept", path=where,
                            remedy="check that the file exists and is readable (a workspace file removed or "
                            "damaged since its stage ran: run `curator run pipeline.yaml` again), then run the "
                            "same command again")
    return ReleaseError("release_error", f"cannot write the release {dest.name}: {e.strerror or e}; nothing "
                        "of it was kept", path=where,
                        remedy=f"check that {dest.parent} is writable and healthy, then run the same command again")


def _record_released_stores(b: ReleaseBuilder) -> dict[str, dict[str, Any]]:
    """Hash the staged stores (writing ``stores/SHA256SUMS``) and put each store's hash into the
    release's ``preprocessed.store_sha256`` (table v2): the workspace row holds the hash preprocess
    took, before pseudolabel added ``labels/pseudo`` and the release step OME-NGFF metadata, so a
    reader checking a released store against the table would find it changed. The workspace's
    table keeps its value (qc's cache fingerprint reads it there)."""
    import pyarrow as pa

    stores = record_stores(b.staging)
    if stores and "preprocessed" in b.tables:
        t = b.tables["preprocessed"]
        old = t.column("store_sha256").to_pylist()
        new = [(stores.get(cid) or {}).get("sha256") or o for cid, o in zip(t.column("case_id").to_pylist(), old,
                                                                           strict=True)]
        i = t.schema.get_field_index("store_sha256")
        t = t.set_column(i, t.schema.field(i), pa.array(new, pa.string()))
        # the column now means what this table version says, whichever version the workspace file was
        b.tables["preprocessed"] = t.replace_schema_metadata(table_schema("preprocessed").schema.metadata)
    return stores


def _release_json(b: ReleaseBuilder, stores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """release.json; ``stores``: :func:`_record_released_stores`'s hashes (``stores/SHA256SUMS``
    is listed in ``files``)."""
    ctx, staging = b.ctx, b.staging
    rc = ctx.config.release
    files: dict[str, str] = {}
    for p in sorted(staging.rglob("*")):
        rel = p.relative_to(staging).as_posix()
        if p.is_file() and rel != "release.json" and ".zarr/" not in rel + "/":
            files[rel] = b.digest(rel)
    stage_info = {}
    off = disabled_stages(ctx)  # what a disabled stage wrote earlier is not in this release
    for sj in sorted((ctx.workspace.root / "stages").glob("*/stage.json")):
        d = json.loads(sj.read_text())
        if d["stage"] not in off:
            # settings_files: the digest of the files its settings name (qc's overrides, harmonize's
            # taxonomy, model files), which the config names only by path — a diff compares it
            # run_environment, case_environments: the code and libraries that computed its tables
            # and its cases (curator.runner.provenance), as ids of `environments` below
            info = {k: d[k] for k in ("stage_version", "config_hash", "settings_files", "run_id", "finished",
                                      "run_environment", "case_environments") if d.get(k) is not None}
            stage_info[d["stage"]] = {**info, "config": published_settings(d["stage"], d.get("config") or {})}
    pipeline = published_config(ctx)
    registry = {n: {"version": s.spec.version, "spec_sha256": sha256_json(s.spec.to_dict())}
                for n, s in sorted(ctx.sources.items())}
    inputs = checksum_values(b.tables.read("cases", ["image_sha256", "label_sha256"]))["value"]
    schemas = load_schemas()
    out = {
        "collection": rc.collection, "version": rc.version,
        # the data's identity: the same for every build of the same inputs, settings and key
        "content_sha256": content_sha256(files),
        "created": b.created,
        # the code and libraries that assembled this release (its release steps); those that
        # computed each stage's tables and cases: stages.<name>.run_environment / case_environments
        "code_version": __version__, "code_revision": code_revision(), "environment": versions(),
        "schema_version": schema_version(),
        "pipeline_config": pipeline, "pipeline_config_hash": published_config_hash(pipeline),
        "stages": stage_info, "environments": environments_of(ctx.workspace, stage_info), "registry": registry,
        "input_checksums_sha256": sha256_sorted(inputs), "n_input_files": inputs.len(),
        "files": files, "stores": stores,
        "counts": {name: b.tables.num_rows(name) for name in b.tables},
        "table_versions": {name: schemas[name].version for name in b.tables if name in schemas},
    }
    out.update(b.extra)
    out.update(lineage(b))
    return out
