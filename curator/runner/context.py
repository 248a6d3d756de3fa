"""What a running pipeline knows: its config, workspace, registry and sources."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.config import PipelineConfig, SourceConfig, StageConfig
from curator.errors import ConfigError
from curator.runner.stage import CaseEnv
from curator.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from curator.errors import RegistryError
    from curator.registry import DatasetSpec, Issue, Registry

log = logging.getLogger("curator")


@dataclass(frozen=True)
class Source:
    """A configured source: its name in this pipeline, its dataset spec and its root folder."""

    name: str
    spec: DatasetSpec
    root: Path
    pseudonymous_ids: bool = False

    def structure_names(self, ws: Workspace, keys: Iterable[str]) -> dict[str, str]:
        """``{structure: published name}`` for the structures among ``keys`` (per-structure file
        stems, RTSTRUCT ROI or SEG segment names: free text) that the dataset YAML does not
        declare, when this source has ``pseudonymous_ids``: their keyed pseudonyms (``u_<20 hex>``,
        the same in the release's tables and its stores). Empty for any other source."""
        if not self.pseudonymous_ids or self.spec.labels.encoding != "per_structure":
            return {}
        # "structure" in the keyed message: the prefix is not, so without it a structure named like a
        # patient or study folder would key to its patient_id's or study_key's digest (linkable)
        return {k: ws.pseudonym(self.name, "structure", k, prefix="u") for k in keys
                if k and k not in self.spec.labels.structures}


class Context:
    def __init__(self, config: PipelineConfig, workspace: Workspace | None = None) -> None:
        self.config = config
        self.workspace = workspace or Workspace(config.workspace)
        self._skipped_sources: dict[str, str] = {}
        self._registry_duplicates: dict[str, str] = {}
        self._unusable_datasets: dict[str, str] = {}
        self._source_problems: list[dict[str, Any]] = []
        self._registry_problems: list[dict[str, Any]] = []
        self._nameless_files: set[str] = set()  # `registry:` files (or entries) giving no dataset name

    @functools.cached_property
    def registry(self) -> Registry:
        """Built-in + extra datasets; an invalid extra file becomes a problem row, not a crash."""
        from curator.registry import NOTE_KINDS, Registry, with_extra

        specs, builtin_issues, issues, notes = with_extra(self.config.registry)
        if builtin_issues:
            raise ConfigError("registry_error", f"the built-in registry is invalid: {builtin_issues[0]}",
                              remedy="reinstall curator; run `curator labels check`")
        used = {sc.dataset.lower() for sc in self.config.sources}
        for i in issues:
            file = i.loc.split(":", 1)[0]
            if i.kind == "duplicate" and i.dataset:
                self._registry_duplicates[i.dataset.lower()] = i.message
            else:  # a file with any issue gives no dataset, as a dataset YAML named in `sources:` does not
                spec = specs.get(i.dataset or "")
                if spec is not None and Path(spec.path).name == file:
                    del specs[spec.name]
                self._unusable_datasets[(i.dataset or file).lower()] = i.message
                if i.dataset is None:
                    self._nameless_files.add(file)
            self._registry_problems.append(self._registry_problem(file, i, used))
        for i in notes:  # on purpose (a fixed copy of a built-in; a taxonomy file kept beside), but said
            # at the severity `labels check` gives it: a fixed copy is an info note (shown: curator's
            # loggers print INFO), a taxonomy file in a registry folder a warning
            log.log(logging.INFO if i.kind in NOTE_KINDS else logging.WARNING, "registry: %s %s (%s)", i.loc,
                    i.message, i.kind)
        return Registry(specs)

    # Filled while `registry` and `sources` are worked out; each accessor works them out first,
    # so reading one before `sources` can never see a half-filled table.
    @property
    def skipped_sources(self) -> dict[str, str]:
        """Sources of pipeline.yaml left out because their dataset YAML is invalid -> why."""
        _ = self.sources
        return self._skipped_sources

    @property
    def registry_duplicates(self) -> dict[str, str]:
        """Dataset names (lower case) two `registry:` files define -> the issue's message."""
        _ = self.registry
        return self._registry_duplicates

    @property
    def unusable_datasets(self) -> dict[str, str]:
        """Dataset names (lower case; or a file's name, when its YAML gives none) of `registry:`
        files that give no usable spec -> why."""
        _ = self.registry
        return self._unusable_datasets

    @property
    def source_problems(self) -> list[dict[str, Any]]:
        """Problem rows of invalid dataset YAMLs (the registry's files and the sources')."""
        _ = self.sources
        return self._registry_problems + self._source_problems

    @property
    def registry_problems(self) -> list[dict[str, Any]]:
        """The problem rows of `registry:` files (among :attr:`source_problems`): an entry that
        cannot be read, a file that gives no dataset or one that two files define."""
        _ = self.registry
        return self._registry_problems

    def _spec_problem(self, path: str, message: str, kind: str | None = None) -> dict[str, Any]:
        """The problem row of a source whose dataset YAML (named in `sources:`) does not load."""
        return {"stage": "ingest", "dataset": None, "case_id": None, "path": path,
                "kind": kind or "invalid_dataset_spec", "severity": "error",
                "message": f"{message}. What to do: fix the dataset YAML (README, 'Adding a dataset'); "
                           "this source was skipped"}

    def _registry_problem(self, file: str, i: Issue, used: set[str]) -> dict[str, Any]:
        """The problem row of a `registry:` file that gives no dataset (named by ``file``, its
        file name, never its path: the row is published in the release). A file no source uses
        skips nothing: a warning that says so; one a source names skips that source; one whose
        datasets are not known (it cannot be read, its YAML names none) is an error."""
        pipeline = Path(self.config.file_name).name
        unused = i.kind == "duplicate" or (i.dataset is not None and i.dataset.lower() not in used)
        if i.kind == "file":
            what = (f"correct its path in `registry:` (a relative path is relative to the folder of {pipeline}) "
                    "or make it readable, or remove it from `registry:`; no dataset of it is used")
        else:
            what = "fix the dataset YAML (README, 'Adding a dataset'); " + (
                "no source of this pipeline uses it" if unused else
                f"the source naming dataset {i.dataset} was skipped" if i.dataset is not None else
                "no dataset of it is used")
        return {"stage": "ingest", "dataset": None, "case_id": None, "path": file,
                "kind": "path_escape" if i.kind == "path_escape" else "invalid_dataset_spec",
                "severity": "warning" if unused else "error",
                "message": f"{i.loc} [{i.kind}] {i.message} (in `registry:` of {pipeline}). What to do: {what}"}

    @functools.cached_property
    def sources(self) -> dict[str, Source]:
        from curator.errors import RegistryError

        # read even when every source names its dataset YAML by path: a `registry:` entry that does
        # not load is then said all the same (a problem row, logged by ingest), not only by status
        _ = self.registry
        out: dict[str, Source] = {}
        for sc in self.config.sources:
            try:
                spec = self._spec_for(sc)
            except RegistryError as e:
                if not sc.dataset.endswith((".yaml", ".yml")):
                    self._named_spec_error(sc.dataset, e)  # raises unless its registry file is invalid
                    self._skipped_sources[sc.name or sc.dataset] = self._unusable_datasets[sc.dataset.lower()]
                    continue  # its file's problem row says why
                kind = "path_escape" if "path_escape" in e.detail else None
                self._source_problems.append(self._spec_problem(Path(sc.dataset).name, e.detail, kind))
                self._skipped_sources[sc.name or Path(sc.dataset).name] = e.detail
                continue
            name = sc.name or spec.name
            if name in out:
                raise ConfigError("config_error", f"source {name!r} is listed twice in {self.config.file_name}; "
                                  "give one of them a distinct `name:`")
            out[name] = Source(name=name, spec=spec, root=sc.root.resolve(), pseudonymous_ids=sc.pseudonymous_ids)
        return out

    def _named_spec_error(self, name: str, e: RegistryError) -> None:
        """Why a source naming a registry dataset has no spec: two `registry:` files define it (the
        run is refused: which one is meant cannot be guessed), or its file is invalid (the source
        is skipped: its problem row says why). Any other miss is re-raised."""
        if name.lower() in self._registry_duplicates:
            raise ConfigError("config_error", f"source {name!r}: {self._registry_duplicates[name.lower()]}",
                              remedy="keep one of the files in the `registry:` folders (or give the other "
                              "dataset another `name:`)") from e
        if name.lower() in self._unusable_datasets:
            return
        unnamed = sorted(self._nameless_files)
        if unnamed:  # a file whose YAML gives no name, or an entry that cannot be read, may be the one meant
            raise ConfigError("config_error", f"{e.detail}; these `registry:` files could not be read and may define "
                              f"it: {', '.join(unnamed)}", remedy="fix them (`curator labels check`), or the "
                              f"paths of `registry:` in {Path(self.config.file_name).name}") from e
        raise e

    def _spec_for(self, sc: SourceConfig) -> DatasetSpec:
        if sc.dataset.endswith((".yaml", ".yml")):
            from curator.registry import load_dataset_file

            return load_dataset_file(Path(sc.dataset), shown=Path(sc.dataset).name)  # no machine path in a row
        return self.registry.get(sc.dataset)

    def stage_config(self, cls: type[StageConfig], name: str) -> Any:
        file = self.config.file.name if self.config.file is not None else None  # None: a config built in code
        return cls.from_dict(self.config.stage(name), where=f"{file}: stages.{name}" if file else f"stages.{name}")

    def stage_enabled(self, name: str) -> bool:
        """Whether ``stages.<name>.enabled`` is on (the default), without parsing the stage's other
        settings (so without importing the stage)."""
        return bool(StageConfig.from_dict({"enabled": self.config.stage(name).get("enabled", True)},
                                          where=f"stages.{name}").enabled)

    def case_env(self) -> CaseEnv:
        return CaseEnv(workspace=str(self.workspace.root),
                       sources={n: str(s.root) for n, s in self.sources.items()},
                       key_hex=self.workspace.key.hex(), threads=self.worker_threads(),
                       workers=self.memory_workers())

    def memory_workers(self) -> int:
        """Worker processes that share this machine's memory: ``executor.workers`` for a local pool
        or a local Dask cluster, 1 for a remote Dask cluster (its workers' machines are not this one)."""
        ex = self.config.executor
        return 1 if ex.kind == "dask" and ex.address else max(1, ex.workers)

    def worker_threads(self) -> int:
        """Threads each worker process's torch uses under ``stages.pseudolabel.threads: 0`` (the
        default; a fixed count gives the same bytes whatever the worker count): this machine's cores ÷ workers (Dask's
        nanny gives its local workers one thread each, torch in a local pool took every core, so
        2 workers ran 4 threads on 2 cores — and attention values differed in the 6th digit with
        the executor). 0 for a remote Dask cluster: its workers' own settings stand."""
        ex = self.config.executor
        if ex.kind == "dask" and ex.address:
            return 0
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // max(1, ex.workers))
