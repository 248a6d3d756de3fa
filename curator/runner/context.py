"""What a running pipeline knows: its config, workspace, registry and sources."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.config import PipelineConfig, SourceConfig, StageConfig
from curator.errors import ConfigError
from curator.runner.stage import CaseEnv
from curator.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from curator.registry import DatasetSpec, Registry

log = logging.getLogger("curator")


@dataclass(frozen=True)
class Source:
    """A configured source: its name in this pipeline, its dataset spec and its root folder."""

    name: str
    spec: DatasetSpec
    root: Path


class Context:
    def __init__(self, config: PipelineConfig, workspace: Workspace | None = None) -> None:
        self.config = config
        self.workspace = workspace or Workspace(config.workspace)

    @functools.cached_property
    def registry(self) -> Registry:
        from curator.registry import load_registry

        return load_registry(extra=self.config.registry)

    @functools.cached_property
    def sources(self) -> dict[str, Source]:
        out: dict[str, Source] = {}
        for sc in self.config.sources:
            spec = self._spec_for(sc)
            name = sc.name or spec.name
            if name in out:
                raise ConfigError("config_error", f"source {name!r} is listed twice in pipeline.yaml; "
                                  "give one of them a distinct `name:`")
            out[name] = Source(name=name, spec=spec, root=sc.root.resolve())
        return out

    def _spec_for(self, sc: SourceConfig) -> DatasetSpec:
        if sc.dataset.endswith((".yaml", ".yml")):
            from curator.registry import load_dataset_file

            return load_dataset_file(Path(sc.dataset))
        return self.registry.get(sc.dataset)

    def stage_config(self, cls: type[StageConfig], name: str) -> Any:
        return cls.from_dict(self.config.stage(name), where=f"stages.{name}")

    def case_env(self) -> CaseEnv:
        return CaseEnv(workspace=str(self.workspace.root),
                       sources={n: str(s.root) for n, s in self.sources.items()},
                       key_hex=self.workspace.key.hex())
