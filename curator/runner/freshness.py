"""Whether the workspace's tables are what pipeline.yaml would produce now.

Every stage run records in ``stages/<name>/stage.json`` a ``run_id``, the ``run_id`` of each
earlier stage it ran after (``upstream``: enabled ones; ``upstream_disabled``), its config
hash, its stage version, digests of the sources (:func:`sources_digest`; and of each one,
:func:`source_facts`, to name the one that changed), of the files its
settings name (``Stage.settings_files_digest``: a taxonomy, QC overrides, model weights) and of
the tables other commands write that it reads (``tables_read``). A stage's tables
are out of date when it has not run, when its settings, those files, its code's stage version,
the sources (their roots and specs; for ingest, ``Stage.reads_sources``, also each case's files:
an edited, added or removed file) or a table another command writes that it reads (``Stage.reads_tables``: qc and
the revised labels of ``curator review import``) changed since, or when an earlier stage ran
again after it (its inputs may have changed: a re-ingested case, a fixed label mapping), is
disabled and out of date itself, or is disabled and the stage ``follows`` it. The stages run in
a line (``curator.stages.STAGES``), so "earlier" is that order.

The release refuses out-of-date tables (:func:`check_fresh`): its ``release.json`` states
pipeline.yaml's settings and sources, and a table computed under others would contradict it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator import __version__
from curator.errors import CuratorError, ReleaseError
from curator.io.fsutil import atomic_write_json, sha256_file, sha256_json
from curator.runner.context import Context

if TYPE_CHECKING:
    from curator.config import StageConfig
    from curator.runner.stage import Stage


def file_digest(path: str | os.PathLike[str]) -> str:
    """16 hex digits of a file's SHA-256 ("missing" when there is no such file), for a stage's
    ``settings_files_digest``."""
    return sha256_file(path)[:16] if Path(path).is_file() else "missing"


def write_record(ctx: Context, stage_cls: type[Stage], config: StageConfig,
                 upstream: dict[str, dict[str, str | None]], **fields: Any) -> None:
    """Write ``stages/<name>/stage.json`` for a finished run of ``stage_cls`` under ``config``,
    computed from the ``upstream`` runs (:func:`upstream_runs`, taken when the run started)."""
    atomic_write_json(ctx.workspace.stage_dir(stage_cls.name) / "stage.json", {
        "stage": stage_cls.name, "stage_version": stage_cls.version, "code_version": __version__,
        "config": config.to_dict(), "config_hash": config.config_hash(), "run_id": uuid.uuid4().hex,
        # the settings pipeline.yaml gave (the rest were defaults): a status after an edit tells
        # a setting the user removed from one whose default changed with curator (:func:`_changed`)
        "config_given": sorted(ctx.config.stage(stage_cls.name)),
        **upstream, "sources_digest": sources_digest(ctx),
        "sources_digest_relative": sources_digest(ctx, relative=True), "sources": source_facts(ctx), **fields,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })


def stage_record(ctx: Context, name: str) -> dict[str, Any] | None:
    """The stage's ``stage.json`` (None when it never finished a run here, or it is unreadable)."""
    path = ctx.workspace.stage_dir(name) / "stage.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def sources_digest(ctx: Context, relative: bool = False) -> str:
    """16 hex digits over the configured sources: name, root and dataset spec of each. With
    ``relative``, a root inside the folder holding pipeline.yaml counts by its path from there:
    a record holds both digests, and the sources are unchanged when either matches, so moving a
    whole project, or copying one whose roots are elsewhere, puts no stage out of date."""
    return sha256_json({n: [_where(ctx, Path(s.root), relative), sha256_json(s.spec.to_dict())]
                        + (["pseudonymous_ids"] if s.pseudonymous_ids else [])  # other case ids
                        for n, s in sorted(ctx.sources.items())})[:16]


def _where(ctx: Context, root: Path, relative: bool) -> str:
    folder = ctx.config.folder
    if relative and folder is not None and root.is_relative_to(folder):
        return "./" + root.relative_to(folder).as_posix()
    return str(root)


def source_facts(ctx: Context) -> dict[str, dict[str, Any]]:
    """What a run's record keeps of each source (``{name: facts}``), so that a change of the
    sources can be said by name (:func:`_sources_changed`): its dataset, its root (as given to
    :func:`sources_digest` and with ``relative``), 16 hex digits of its dataset spec and its
    ``pseudonymous_ids``."""
    # roots as digests: a folder may be named after a person, and no patient information leaves ingest
    return {n: {"dataset": s.spec.name, "root": sha256_json(_where(ctx, Path(s.root), False))[:16],
                "root_relative": sha256_json(_where(ctx, Path(s.root), True))[:16],
                "spec": sha256_json(s.spec.to_dict())[:16],
                "pseudonymous_ids": s.pseudonymous_ids} for n, s in sorted(ctx.sources.items())}


def _sources_changed(ctx: Context, rec: dict[str, Any]) -> str:
    """How the sources differ from those of the run ``rec`` records: the sources added and
    removed, and of the others, the dataset spec, root or ``pseudonymous_ids`` that changed
    (a record of an older curator keeps no ``sources``: then only that they changed)."""
    old = rec.get("sources")
    generic = "pipeline.yaml's `sources:` or their dataset specs changed since"
    if not isinstance(old, dict):
        return generic
    now = source_facts(ctx)
    skipped = ctx.skipped_sources  # still listed, but their dataset YAML does not load
    removed = [f"{n} (skipped: its dataset YAML does not load)" if n in skipped else n
               for n in sorted(set(old) - set(now))]
    parts = [f"{what} {', '.join(names)}" for what, names in
             (("added", sorted(set(now) - set(old))), ("removed", removed)) if names]
    for n in sorted(set(now) & set(old)):
        was, new = old[n] if isinstance(old[n], dict) else {}, now[n]
        if was.get("dataset") != new["dataset"]:
            parts.append(f"{n} is now dataset {new['dataset']} (was {was.get('dataset')})")
        elif was.get("spec") != new["spec"]:
            named = "" if n == new["dataset"] else f" ({new['dataset']})"
            parts.append(f"{n}'s dataset YAML{named} changed")
        if was.get("root") != new["root"] and was.get("root_relative") != new["root_relative"]:
            parts.append(f"{n}'s root changed (now {ctx.sources[n].root})")
        if bool(was.get("pseudonymous_ids")) != new["pseudonymous_ids"]:
            parts.append(f"{n}'s pseudonymous_ids: {json.dumps(bool(was.get('pseudonymous_ids')))} → "
                         f"{json.dumps(new['pseudonymous_ids'])}")
    return "; ".join(parts) or generic


def tables_read_digest(ctx: Context, stage_cls: type[Stage]) -> dict[str, str]:
    """``{table: file digest}`` of the tables written outside the stage line that ``stage_cls``
    reads (``Stage.reads_tables``), for its run's record."""
    return {t: file_digest(ctx.workspace.table_path(t)) for t in stage_cls.reads_tables}


def upstream_runs(ctx: Context, name: str) -> dict[str, dict[str, str | None]]:
    """What a run of ``name`` records of the earlier stages: ``upstream``, ``{enabled stage: its
    latest run_id}``, and ``upstream_disabled``, the same of the disabled ones (their tables and
    stores stay in the workspace, and ``name`` may read them)."""
    from curator.stages import available

    out: dict[str, dict[str, str | None]] = {"upstream": {}, "upstream_disabled": {}}
    for other in available():
        if other == name:
            break
        rec = stage_record(ctx, other)
        side = "upstream" if ctx.stage_enabled(other) else "upstream_disabled"  # without parsing its settings
        out[side][other] = rec.get("run_id") if rec else None
    return out


def _changed(old: dict[str, Any], config: StageConfig, given: Collection[str] = (), limit: int = 3,
             old_given: Collection[str] | None = None) -> str:
    """The settings that differ from the recorded ones (those that change results only). A setting
    pipeline.yaml does not give (``given``) is now at this curator's default, and is said so with
    why, as far as the record tells (``old_given``: the settings pipeline.yaml gave the recorded
    run; None in a record of a curator before 2026-12-08): the recorded run gave it and pipeline.yaml
    no longer does (``not in pipeline.yaml: the default``), or neither gave it, so its default
    changed — or an older curator, which recorded ``old``, had no such setting — and the user
    changed nothing there (``this curator's default``)."""
    quiet = config.hashed_when_set()  # absent from a record of a run before them: their default
    full = config.to_dict()
    new = {**config.hashed_dict(), **{k: full[k] for k in quiet}}
    unhashed = set(full) - set(new)
    keys = sorted(k for k in set(old) | set(new) if k not in unhashed and old.get(k, quiet.get(k)) != new.get(k))

    def why(k: str) -> str:
        if old_given is None:  # either may be true: a wording true of both
            return " (not in pipeline.yaml: this curator's default)"
        if k in old_given:
            return " (not in pipeline.yaml: the default)"
        return " (this curator's default)"

    def part(k: str) -> str:
        if k in quiet and k not in old:
            said = f"{k}: {json.dumps(quiet[k])} → {json.dumps(new.get(k))}"
            return said if k in given else f"{said} (this curator's default)"
        if old and k not in old:
            return f"{k}: {json.dumps(new.get(k))} (a setting this curator added)"
        if k not in new:
            return f"{k}: no longer a setting"
        said = f"{k}: {json.dumps(old.get(k))} → {json.dumps(new.get(k))}"
        return said if k in given else said + why(k)

    parts = [part(k) for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass
class StageState:
    """One installed stage as the workspace holds it: its last run's record and why its tables
    are out of date with pipeline.yaml (``reasons`` empty: current, or disabled)."""

    name: str
    enabled: bool
    record: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)


def rerun_reasons(ctx: Context, cls: type[Stage], files: str | None,
                  tables_read: dict[str, str]) -> list[str]:
    """Why a stage about to run finds its cases' results out of date, said by ``curator run``
    (``files`` and ``tables_read``: the digests the run records): its stage version, settings,
    the files they name or the tables it reads changed since its last run (none when it has not
    run, or only cases or their files changed)."""
    rec = stage_record(ctx, cls.name)
    if rec is None:
        return []
    return _own_reasons(ctx, cls.name, cls, rec, ("", ""), now=(files, tables_read))


def _own_reasons(ctx: Context, name: str, cls: type[Stage], rec: dict[str, Any], digest: tuple[str, str],
                 now: tuple[str | None, dict[str, str]] | None = None) -> list[str]:
    """Why a stage's last run is out of date by itself (whatever ran before it): its stage
    version, its settings, the files they name, the tables it reads that other commands write,
    or the sources changed since. With ``now`` (the settings files' and tables' digests a run
    has just taken) the sources are not looked at: what a run about to start says."""
    reasons: list[str] = []
    for table in (*cls.tables, f"problems__{name}"):  # a truncated file: the release would crash on it
        why = ctx.workspace.damaged_table(table)
        if why is not None:
            reasons.append(f"{name}'s table {table} is damaged ({why}); running {name} again writes it")
    if str(rec.get("stage_version")) != str(cls.version):
        reasons.append(f"{name} ran with stage version {rec.get('stage_version')} (this curator's is "
                       f"{cls.version})")
    config = ctx.stage_config(cls.config_class, name)
    if rec.get("config_hash") != config.config_hash():
        given = ctx.config.stage(name)
        old_given = rec.get("config_given")
        said = _changed(rec.get("config") or {}, config, given,
                        old_given=old_given if isinstance(old_given, list) else None)
        reasons.append(f"{name} ran with other settings ({said})")
    try:
        files = now[0] if now is not None else cls.settings_files_digest(ctx, config)
    except CuratorError as e:  # a model file moved away: said here, as the run would say it
        reasons.append(f"{name}'s settings name a file that cannot be read ({e})")
    else:
        what = cls.settings_files or "the files its settings name"
        recorded = rec.get("settings_files")  # None: a run before the stage named files (dedup's taxonomy)
        if recorded is not None and recorded != files:
            reasons.append(f"{name}'s settings name {what}, which is missing" if files == "missing" else
                           f"{name} ran with another version of {what}" + _parts_changed(ctx, cls, config, rec))
    read = rec.get("tables_read") or {}
    for table, current in (now[1] if now is not None else tables_read_digest(ctx, cls)).items():
        if read.get(table, current) != current:
            reasons.append(f"{name} ran before a change to {cls.reads_tables[table]}")
    if now is not None:
        return reasons
    if rec.get("sources_digest", digest[0]) != digest[0] and rec.get("sources_digest_relative") != digest[1]:
        reasons.append(f"{name} ran with other sources ({_sources_changed(ctx, rec)})")
        if cls.reads_sources and len(reasons) == 1:  # a dataset YAML changed: its files may have too
            reasons += _changed_inputs(ctx, name, cls, config, files_only=True)
    elif cls.reads_sources and not reasons:
        reasons += _changed_inputs(ctx, name, cls, config)
    return reasons


def _parts_changed(ctx: Context, cls: type[Stage], config: StageConfig, rec: dict[str, Any]) -> str:
    """`` (changed: labnet_b; added: x)``: the parts of the settings files (an ensemble's models)
    whose digest differs from the last run's record; empty when the record holds none."""
    then = rec.get("settings_files_parts")
    if not isinstance(then, dict):
        return ""
    try:
        now = cls.settings_files_parts(ctx, config) or {}
    except CuratorError:
        return ""
    said = [(what, names) for what, names in (
        ("changed", [n for n in now if n in then and then[n] != now[n]]),
        ("added", [n for n in now if n not in then]), ("removed", [n for n in then if n not in now])) if names]
    return " (" + "; ".join(f"{what}: {', '.join(names)}" for what, names in said) + ")" if said else ""


def _changed_inputs(ctx: Context, name: str, cls: type[Stage], config: StageConfig,
                    files_only: bool = False) -> list[str]:
    """Why the files under the sources are not what ``name`` last read: its plan made again
    (content checksums, re-read only for files whose size or times changed) against each case's
    cached result — what `curator run` would redo —, the cases it ingested that are gone, and the
    files edited since (by path, :meth:`Stage.edited_inputs`: a case's image and labels, and the
    metadata, split and index files a dataset YAML names). With ``files_only`` (the sources' specs
    changed too, which may change every case's key) only the edited files are said."""
    try:
        stage = cls(ctx, config)
        stage.save_checksums = False  # edited files are named against the checksums of the last run
        tasks = stage.plan()
    except CuratorError as e:
        return [f"{name} cannot plan its cases now ({e})"]
    ws = ctx.workspace
    changed, new, edited = [], [], []
    for t in tasks:
        cached = ws.read_case_result(name, t.case_id)
        if cached is None:
            new.append(t.case_id)
        elif files_only or cached.get("key") != stage.task_key(t):
            mine = stage.edited_inputs(t, _mtime_ns(ws.case_result_path(name, t.case_id)))
            edited += mine
            if mine or not files_only:
                changed.append(t.case_id)
    record = ws.stage_dir(name) / "stage.json"
    edited += stage.edited_source_files(_mtime_ns(record)) if record.is_file() else []
    files = [f"input files edited since {name} ran: {', '.join(edited[:5])}" + (f" (and {len(edited) - 5} more)"
             if len(edited) > 5 else "")] if edited else []
    if files_only:
        return files
    had = ws.read_table(cls.tables[0], ["case_id", "source"]) if cls.tables else None
    gone: list[str] = []
    if had is not None and "source" in had.column_names:  # cases of a source no longer configured: said above
        planned = {t.case_id for t in tasks}
        gone = sorted(c for c, src in zip(had.column("case_id").to_pylist(), had.column("source").to_pylist(),
                                          strict=True) if src in ctx.sources and c not in planned)
    said = (("the source files of {n} case(s) changed", changed), ("{n} case(s) of the sources are new", new),
            ("{n} case(s) of the sources are gone", gone))
    cases = [f"{what.format(n=len(ids))} since {name} ran (e.g. {', '.join(ids[:3])})" for what, ids in said if ids]
    # the files say why, never whether: a file touched with its content kept (a metadata file is
    # judged by its time) changes no case's key, so it puts nothing out of date
    return cases + files if cases else []


def _mtime_ns(path: Path) -> int:
    """When ``path`` was last written (a case's cached result: when its run read the case's files)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _kept_cases(ctx: Context, name: str) -> int:
    """Case results a stage holds (``stages/<name>/cases``), counted when it has no record of a
    finished run: those of an interrupted one."""
    folder = ctx.workspace.stage_dir(name) / "cases"
    return sum(1 for _ in folder.glob("*/*.json")) if folder.is_dir() else 0


def stage_states(ctx: Context, will_run: Collection[str] = ()) -> list[StageState]:
    """Every installed stage, in run order, with the reasons its tables are out of date. Stages
    in ``will_run`` are about to run, so they will be current, and every later stage that is not
    about to run too will not be.

    A disabled stage's tables are left out of the release, but a later stage may have been
    computed from them (pseudolabel from preprocess's stores): that stage is out of date when
    the disabled one is, or ran again after it. A stage that ``follows`` an earlier one is out of
    date when that one is disabled after it ran (qc judged pseudo labels the release leaves out).
    """
    from curator.stages import configured

    stages = configured(ctx)
    classes = {name: cls for name, cls, _ in stages}
    order = [(name, cls) for name, cls, enabled in stages if enabled]
    records = {name: stage_record(ctx, name) for name, _, _ in stages}
    digest = (sources_digest(ctx), sources_digest(ctx, relative=True)) if order else ("", "")
    states = {name: StageState(name, enabled, records[name]) for name, _, enabled in stages}
    for i, (name, cls) in enumerate(order):
        if name in will_run:
            continue
        reasons = states[name].reasons
        rec = records[name]
        if rec is None:
            kept = _kept_cases(ctx, name)  # after Ctrl-C: "has not run" hid the cases the next run resumes from
            reasons.append(f"{name} has not run" if not kept else
                           f"{name} has not finished a run: {kept} case(s) of an interrupted or stopped run are kept, "
                           "and the next run resumes from them")
            continue
        reasons.extend(_own_reasons(ctx, name, cls, rec, digest))
        upstream = rec.get("upstream") or {}
        earlier = {**(rec.get("upstream_disabled") or {}), **upstream}
        for up, run_id in earlier.items():  # earlier stages disabled now
            if up not in states or states[up].enabled:
                continue
            if up in cls.follows:  # it reads up's results only while up is enabled
                if up in upstream:
                    reasons.append(f"{name} ran while {up} was enabled (its tables hold {up}'s results, which "
                                   "the release now leaves out)")
            elif run_id is None:
                continue
            elif (ran := records[up]) is not None and ran.get("run_id") != run_id:
                reasons.append(f"{up} ran again after {name} ({up} is disabled, but {name} was computed "
                               f"from its results)")
            elif ran is not None and (own := _own_reasons(ctx, up, classes[up], ran, digest)):
                reasons.append(f"{name} was computed from {up}'s results, which are out of date ({up} is "
                               f"disabled: {own[0]})")
        for up, _ in order[:i]:  # the first earlier stage it is older than
            ran = records[up]
            if up in will_run:
                reasons.append(f"{name} would be older than {up}, which runs now")
            elif up not in upstream and up in (rec.get("upstream_disabled") or {}):
                reasons.append(f"{name} ran while {up} was disabled")
            elif ran is None or (ran.get("run_id") is not None and upstream.get(up) != ran["run_id"]):
                reasons.append(f"{up} ran again after {name}" if ran else f"{name} ran without {up}")
            elif ran.get("run_id") is None and str(ran.get("finished", "")) > str(rec.get("finished", "")):
                reasons.append(f"{up} ran again after {name}")  # records of an older curator: by time
            else:
                continue
            break
    return list(states.values())


def stale_reasons(ctx: Context, will_run: Collection[str] = ()) -> list[str]:
    """Why the enabled stages' tables are out of date (empty when they are all current); see
    :func:`stage_states`."""
    return [r for state in stage_states(ctx, will_run) for r in state.reasons]


def check_fresh(ctx: Context) -> None:
    """Refuse to release tables that pipeline.yaml would not produce now (see the module doc)."""
    reasons = stale_reasons(ctx)
    if reasons:
        name = ctx.config.file_name
        raise ReleaseError("release_stale", stale_message(reasons, name), remedy=_stale_remedy(reasons, name))


def stale_message(reasons: list[str], pipeline: str) -> str:
    """What ``release_stale`` says (``curator status`` says it too): the tables are out of date, and why."""
    return f"the workspace's tables are out of date with {pipeline}: " + "; ".join(reasons)


def _stale_remedy(reasons: list[str], pipeline: str) -> str:
    """What to do about ``release_stale``; it warns that a stage whose version changed re-runs
    every one of its cases (its cache is keyed by the version), where only changed cases would."""
    bumped = sorted({r.split(" ran with stage version", 1)[0] for r in reasons if " ran with stage version " in r})
    cache = ("cases whose inputs did not change come from the cache" if not bumped else
             f"{', '.join(bumped)} re-run{'s' if len(bumped) == 1 else ''} every case (a new stage version: its "
             "cached results no longer apply); other cases whose inputs did not change come from the cache")
    return (f"run the pipeline (`curator run {pipeline}`: {cache}), or set `enabled: false` on a stage the "
            "release should leave out")
