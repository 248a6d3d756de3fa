"""Running the whole pipeline (``curator run pipeline.yaml``) or a subset of its stages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from curator.config import PipelineConfig
from curator.release.build import build_release
from curator.runner.context import Context
from curator.runner.executors import make_executor
from curator.runner.run import StageReport, run_stage
from curator.runner.stage import load_stage_class
from curator.stages import available

log = logging.getLogger("curator")


@dataclass
class PipelineResult:
    reports: list[StageReport] = field(default_factory=list)
    release: Path | None = None


def run_pipeline(config: PipelineConfig, *, stages: list[str] | None = None,
                 release: bool = True) -> PipelineResult:
    """Run ``stages`` (default: every installed, enabled stage, in order), then write the release."""
    ctx = Context(config)
    result = PipelineResult()
    with ctx.workspace.locked("run"):
        ctx.sources  # noqa: B018 - validate the sources before any work starts
        executor = make_executor(config.executor)
        try:
            for name, ref in available().items():
                if stages is not None and name not in stages:
                    continue
                cls = load_stage_class(ref)
                cfg = ctx.stage_config(cls.config_class, name)
                if not cfg.enabled:
                    log.info("%s: disabled in pipeline.yaml", name)
                    continue
                result.reports.append(run_stage(ctx, cls, executor))
        finally:
            executor.close()
        if release:
            result.release = build_release(ctx)
    return result
