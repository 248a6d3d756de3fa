"""Typed, frozen configuration: stage settings and the pipeline file (``pipeline.yaml``).

Every config has an explicit wire form (``to_dict``/``from_dict``) and a hash; the hash
and the code version are written next to every output, so a result says how it was
made. Unknown keys are errors (a typo must not silently fall back to a default).

>>> cfg = StageConfig.from_dict({"on_bad_case": "skip"})
>>> cfg.on_bad_case, len(cfg.config_hash())
('skip', 16)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from curator.errors import ConfigError
from curator.io.fsutil import sha256_json
from curator.yamlio import Lined, load_yaml

log = logging.getLogger(__name__)

T = TypeVar("T", bound="Config")
OnBadCase = Literal["error", "warn", "skip"]


def _key(where: str, name: str) -> str:
    """Setting ``name`` of the section ``where``: ``p.yaml: sources[0]`` under a file, else
    ``stages.ingest.on_bad_case``."""
    return f"{where}: {name}" if where.endswith((".yaml", ".yml")) else f"{where}.{name}"


def _bool_hint(name: str, value: bool, example: str) -> str:
    """YAML 1.1 reads an unquoted yes/no/on/off as a boolean: `on_bad_case: no` arrives as False."""
    words = "yes, on or true" if value else "no, off or false"
    return (f"; YAML read an unquoted {words} as the boolean {str(value).lower()}: quote text "
            f"(`{name.rsplit('[', 1)[0]}: \"{example}\"`)")


def _coerce(name: str, tp: Any, value: Any, where: str) -> Any:
    """Check and convert one YAML value to the annotated type (small subset of typing)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            text = all(isinstance(a, str) for a in get_args(tp))
            hint = _bool_hint(name, value, get_args(tp)[0]) if isinstance(value, bool) and text else ""
            raise ConfigError("config_error", f"{_key(where, name)} = {value!r}; expected one of "
                              f"{list(get_args(tp))}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        last: Exception | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, a, value, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError("config_error", f"{_key(where, name)}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError("config_error", f"{_key(where, name)} must be a list, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(f"{name}[{i}]", inner, v, where) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError("config_error", f"{_key(where, name)} must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp.from_dict(value or {}, where=_key(where, name))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("config_error", f"{_key(where, name)} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("config_error", f"{_key(where, name)} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError("config_error", f"{_key(where, name)} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            hint = _bool_hint(name, value, "no" if value is False else "yes") if isinstance(value, bool) else ""
            raise ConfigError("config_error", f"{_key(where, name)} must be text, got {value!r}{hint}")
        return str(value)
    if tp is Path:
        return Path(os.path.expanduser(str(value)))
    return value


def _at_line(e: ConfigError, line: int | None) -> ConfigError:
    """``e`` saying the line of pipeline.yaml it is about (once: a nested section says its own)."""
    if line is None or getattr(e, "line", None) is not None:
        return e
    out = ConfigError(e.kind, f"{e.detail} (line {line})", path=e.path, remedy=e.remedy)
    out.line = line  # type: ignore[attr-defined]
    return out


@dataclass(frozen=True)
class Config:
    """Base of every config: strict ``from_dict``, canonical ``to_dict``, stable hash."""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, *, where: str | None = None) -> typing.Self:
        where = where or cls.__name__
        if d is not None and not isinstance(d, dict):  # `executor: local`, `sources: [KiTS23]`
            raise ConfigError("config_error", f"{where} must be a mapping of settings (`key: value`), got {d!r}",
                              remedy="see the README's pipeline.yaml example for the section's settings")
        lines: dict[Any, int] = getattr(d, "lines", None) or {}  # a mapping of pipeline.yaml (Lined)
        line: int | None = getattr(d, "line", None)
        d = dict(d or {})
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls) if f.init}
        unknown = sorted(set(d) - set(known), key=str)
        if unknown:
            raise _at_line(ConfigError("config_error", f"{where}: unknown setting(s) {unknown}; "
                                       f"valid settings are {sorted(known)}"), lines.get(unknown[0], line))
        missing = [k for k, f in known.items() if k not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise _at_line(ConfigError("config_error", f"{where}: {', '.join(f'`{k}:`' for k in missing)} is required",
                                       remedy="see the README's pipeline.yaml example for the section's settings"),
                           line)
        kwargs = {}
        for k, v in d.items():
            try:
                kwargs[k] = _coerce(k, hints[k], v, where)
            except ConfigError as e:
                lined = _at_line(e, lines.get(k, line))
                if lined is e:
                    raise
                raise lined from e
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise _at_line(ConfigError("config_error", f"{where}: {e}"), line) from e
        except ConfigError as e:  # a check of the settings together (__post_init__): the line of the one it names
            said = next((n for k, n in lines.items() if re.search(rf"\b{re.escape(str(k))} = ", e.detail)), line)
            lined = _at_line(e, said)
            if lined is e:
                raise
            raise lined from e

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [x.to_dict() if isinstance(x, Config) else (str(x) if isinstance(x, Path) else x) for x in v]
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return out

    def hashed_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields marked ``hash=False`` (what changes results), nor those
        hashed only when set (:func:`payload_setting`, :func:`finalize_only`
        ``added``) while at their default."""
        d = self.to_dict()
        quiet = self.hashed_when_set()
        for f in fields(self):
            if f.metadata.get("hash") is False or (f.name in quiet and d.get(f.name) == quiet[f.name]):
                d.pop(f.name, None)
        return d

    @classmethod
    def hashed_when_set(cls) -> dict[str, Any]:
        """``{setting: its default}`` (in wire form: a tuple as a list) of the settings in the hash
        only when set to another value."""
        return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                for f in fields(cls) if f.metadata.get("hash_default") is False}

    def config_hash(self) -> str:
        """16 hex digits over the canonical wire form (excluding fields marked ``hash=False``)."""
        return sha256_json({"type": type(self).__name__, "config": self.hashed_dict()})[:16]

    def replace(self, **changes: Any) -> typing.Self:
        return dataclasses.replace(self, **changes)

    def per_case(self) -> typing.Self:
        """This config with every :func:`finalize_only` setting at its default: what a stage's
        per-case work sees and what its cached per-case results are keyed on, so changing such
        a setting re-runs only the stage's finalize step over the cached cases."""
        reset = {f.name: f.default for f in fields(self) if f.metadata.get("per_case") is False}
        return dataclasses.replace(self, **reset) if reset else self


def nohash(default: Any) -> Any:
    """A field that does not change results (e.g. progress display) and is left out of the hash."""
    return field(default=default, metadata={"hash": False})


def payload_setting(default: Any) -> Any:
    """A setting added after workspaces were made that changes only some cases' work (PET's
    window changes PET cases only). It is left out of the per-case config, hence out of every
    case's cache key (:meth:`Config.per_case`): the stage puts it into the task payload of the
    cases it changes, and their per-case work reads it from there, so setting it redoes those
    cases only. In the config hash only when set to another value than its default."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("payload_setting needs an immutable default (use a tuple)")
    return field(default=default, metadata={"per_case": False, "hash_default": False})


def finalize_only(default: Any, *, added: bool = False) -> Any:
    """A setting only the stage's finalize step reads (cohort-wide search, grouping, judging,
    ranking). It is in the config hash, but not in the per-case cache key (:meth:`Config.per_case`):
    changing it re-runs finalize over the cached per-case results, not every case. Per-case
    work sees the setting's default, so it cannot depend on it by mistake.

    ``added``: a setting added after workspaces were made whose default does what the stage did
    before it: in the hash only when set to another value, so those workspaces stay up to date
    (every setting's hash would change with a new key)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("finalize_only needs an immutable default (use a tuple)")
    return field(default=default, metadata={"per_case": False, **({"hash_default": False} if added else {})})


@dataclass(frozen=True)
class StageConfig(Config):
    """Settings every stage has."""

    on_bad_case: OnBadCase = nohash("warn")  # noqa: RUF009 - a dataclass field(), not a call result
    enabled: bool = nohash(True)


@dataclass(frozen=True)
class SourceConfig(Config):
    """One dataset to ingest: a registry name (or a path to a dataset YAML) and its root folder."""

    dataset: str
    root: Path
    name: str | None = None  # alias, when the same dataset is ingested twice (e.g. two versions)
    # case ids from a keyed hash instead of the file/folder names (a private export named after
    # patients); the release then leaves out source_case, file paths and problem details
    pseudonymous_ids: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, *, where: str | None = None) -> typing.Self:
        named = (d.get("name") or d.get("dataset")) if isinstance(d, dict) else None
        return super().from_dict(d, where=f"{where} ({named})" if where and isinstance(named, str) else where)

    def __post_init__(self) -> None:  # the name names workspace files (checksums/<name>.json) and starts case ids
        if self.name is not None and not (isinstance(self.name, str) and FOLDER_NAME.match(self.name)
                                          and "__" not in self.name):
            raise ConfigError("config_error", f"sources: name = {self.name!r} cannot name a source",
                              remedy=f"use {FOLDER_NAME_RULE}, without '__' (it separates a case id's source)")


@dataclass(frozen=True)
class ExecutorConfig(Config):
    kind: Literal["local", "dask"] = "local"
    workers: int = 1
    address: str | None = None  # dask scheduler address; None = in-process LocalCluster
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("config_error", f"executor.workers = {self.workers}: give 1 or more worker processes")


# MAJOR.MINOR.PATCH, an optional pre-release (-rc.1) and build (+abc); groups: major, minor, patch, pre-release
# (\Z, not $: `$` also matches before a final newline, and "demo\n" would name a folder)
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?\Z")
FOLDER_NAME = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,64}\Z")  # a name that becomes a file or folder name
FOLDER_NAME_RULE = "letters, digits, '.', '_' or '-' (at most 64), not starting with '.'"


@dataclass(frozen=True)
class ReleaseConfig(Config):
    root: Path = Path("releases")
    collection: str = "collection"
    version: str = "0.1.0"
    parent: str | None = None
    # a release without a source pipeline.yaml lists (no case from it: an unmounted root, a broken
    # dataset YAML) is refused unless this says that is meant
    allow_missing_sources: bool = False
    # where the release will be published and who made it (croissant.json's `url` and `creator`)
    url: str | None = None
    creators: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # refused when pipeline.yaml is read, not after hours of stages
        for key, value in (("version", self.version), ("parent", self.parent)):
            if value is not None and not SEMVER.match(value):
                raise ConfigError("config_error", f"release.{key} = {value!r} is not a semantic version",
                                  remedy="use MAJOR.MINOR.PATCH, e.g. 0.1.0 (quote it in YAML: `version: \"1.0.0\"`)")
        if not FOLDER_NAME.match(self.collection):
            raise ConfigError("config_error", f"release.collection = {self.collection!r} cannot name a folder",
                              remedy=f"use {FOLDER_NAME_RULE}")


@dataclass(frozen=True)
class PipelineConfig(Config):
    """The whole pipeline (``pipeline.yaml``)."""

    workspace: Path = Path("workspace")
    sources: tuple[SourceConfig, ...] = ()
    registry: tuple[Path, ...] = ()  # extra dataset YAML files or folders
    stages: dict[str, Any] = field(default_factory=dict)
    executor: ExecutorConfig = ExecutorConfig()
    release: ReleaseConfig = ReleaseConfig()
    # the folder holding pipeline.yaml (set by load(); None for a config built in code): relative
    # path settings of stages are relative to it. Not a YAML key, not in to_dict() or any hash.
    folder: Path | None = field(default=None, init=False, compare=False)
    # the file as the user named it (set by load(); None for a config built in code), for messages
    # telling what to run: `curator run my_pipeline.yaml`. Not a YAML key, not in to_dict() or any hash.
    file: Path | None = field(default=None, init=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, *, where: str | None = None) -> typing.Self:
        if isinstance(d, dict) and "seed" in d:  # a setting of curators before 2026-12-08 that set nothing
            line = (getattr(d, "lines", None) or {}).get("seed")
            log.warning("%s%s: the top-level `seed: %s` is ignored: it never set anything (the splits' seed is "
                        "`stages.splits.seed`). What to do: delete it, or move it to `stages: {splits: {seed: ...}}` "
                        "if it was meant for the splits", where or "pipeline.yaml",
                        f" (line {line})" if line else "", d["seed"])
            kept = {k: v for k, v in d.items() if k != "seed"}
            if isinstance(d, Lined):  # its lines, for the messages about the other settings
                lined = Lined(kept)
                lined.line, lined.lines = d.line, d.lines
                kept = lined
            d = kept
        return super().from_dict(d, where=where)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PipelineConfig:
        """Read ``pipeline.yaml``; relative paths are resolved against the file's folder."""
        p = Path(path)
        try:
            raw = load_yaml(p.read_text(encoding="utf-8"), name=p.name, lines=True) or {}
        except FileNotFoundError as e:
            raise ConfigError("config_error", f"pipeline file {p} does not exist") from e
        except yaml.YAMLError as e:
            raise ConfigError("config_error", f"{p} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError("config_error", f"{p} must hold a mapping at the top level")
        try:
            cfg = cls.from_dict(raw, where=p.name).resolved(p.parent.resolve())
            object.__setattr__(cfg, "file", p)
            cfg.check_stage_names()  # every command reading the file refuses `harmonise:`, not only `run`
        except ConfigError as e:  # a check of a section's settings together: which file it is about
            if e.detail.startswith(p.name) or e.path:
                raise
            raise ConfigError(e.kind, f"{p.name}: {e.detail}", remedy=e.remedy) from e
        return cfg

    def check_stage_names(self) -> None:
        """Refuse a ``stages:`` key that names no stage of curator's (a misspelt ``harmonise:``
        would silently run harmonize with its defaults). A config built in code may configure
        stages of its own (a test's stage); :func:`curator.pipeline.run_pipeline` checks it too."""
        from curator.stages import RELEASE_SECTIONS, STAGES, refuse_unknown

        refuse_unknown("stages:", self.stages, [*STAGES, *RELEASE_SECTIONS])

    @property
    def file_name(self) -> str:
        """The pipeline file as messages name it: as the user gave it (``curator run p3.yaml``),
        ``pipeline.yaml`` for a config built in code."""
        return str(self.file) if self.file is not None else "pipeline.yaml"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("folder", None)
        out.pop("file", None)
        return out

    def replace(self, **changes: Any) -> PipelineConfig:
        new = super().replace(**changes)
        for name in ("folder", "file"):  # init=False fields: replace() drops them
            object.__setattr__(new, name, getattr(self, name))
        return new

    def path(self, value: str | os.PathLike[str]) -> Path:
        """A path setting of a stage (``~`` expanded): a relative one is relative to the folder
        holding pipeline.yaml (the working directory for a config built in code), so a run
        started from any directory reads the same files. Settings keep the path as written, so
        moving the project folder changes no setting (no cache key, no freshness check)."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.folder or Path.cwd()) / p

    def resolved(self, base: Path) -> PipelineConfig:
        """Top-level paths (workspace, sources, registry, release root) made absolute against
        ``base``, which stage path settings are resolved against too (:meth:`path`)."""
        def r(x: Path) -> Path:
            return x if x.is_absolute() else (base / x)

        sources = tuple(
            s.replace(root=r(s.root),
                      dataset=str(r(Path(s.dataset))) if s.dataset.endswith((".yaml", ".yml")) else s.dataset)
            for s in self.sources
        )
        new = self.replace(workspace=r(self.workspace), sources=sources,
                           registry=tuple(r(x) for x in self.registry),
                           release=self.release.replace(root=r(self.release.root)))
        object.__setattr__(new, "folder", base)
        return new

    def stage(self, name: str) -> dict[str, Any]:
        raw = self.stages.get(name) or {}
        if not isinstance(raw, dict):
            raise ConfigError("config_error", f"stages.{name} must be a mapping")
        return raw
