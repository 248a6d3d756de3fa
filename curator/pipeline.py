"""Running the whole pipeline (``curator run pipeline.yaml``) or a subset of its stages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from curator.config import PipelineConfig
from curator.errors import ConfigError, ReleaseError
from curator.release.build import (
    build_release,
    check_cases,
    check_writable,
    release_dir,
)
from curator.runner.context import Context
from curator.runner.executors import make_executor
from curator.runner.freshness import stale_reasons
from curator.runner.run import StageReport, run_stage
from curator.runner.stage import Stage
from curator.stages import available, configured, refuse_unknown

log = logging.getLogger("curator")


@dataclass
class PipelineResult:
    reports: list[StageReport] = field(default_factory=list)
    release: Path | None = None


def check_plan(ctx: Context, stages: list[str] | None, release: bool) -> list[tuple[str, type[Stage]]]:
    """Everything a run can know is wrong before it starts, refused before any work: unknown
    stage names (``--stages``, ``stages:`` keys), every chosen stage's settings, the release
    settings, and a release version that already exists. Returns the enabled stages to run."""
    config = ctx.config
    config.check_stage_names()  # done by PipelineConfig.load too: for a config built in code
    refuse_unknown("--stages", stages or [], available())
    if not config.sources and (stages is None or "ingest" in stages):
        log.warning("%s lists no sources: ingest has nothing to read (add `sources:`, see the README)",
                    config.file_name)
    chosen = []
    for name, cls, enabled in configured(ctx, stages):  # a typo in a late stage fails now, not hours in
        if not enabled:
            log.info("%s: disabled in %s", name, config.file_name)
            continue
        missing = cls.settings_files_missing(ctx, ctx.stage_config(cls.config_class, name))
        if missing:  # a model or overrides file: found now, not when the stage starts hours later
            raise ConfigError("config_error", f"stages.{name} names file(s) that do not exist: "
                              + "; ".join(missing[:5]), remedy="fix the path where it is given (a relative path is "
                              f"relative to the folder of the file giving it: {config.file_name}'s for its own settings, "
                              "an ensemble file's for the models it lists), or restore the file")
        chosen.append((name, cls))
    if release:
        from curator.release.splits import SplitConfig

        SplitConfig.from_dict(config.stage("splits"), where="stages.splits")
        dest = release_dir(ctx)
        check_writable(dest, config.file_name)  # found now, not after hours of stages
        if dest.exists():  # compared when built: the same content keeps it, other content is refused
            log.warning("release %s %s exists: this run's release is compared with it (the same "
                        "content_sha256 keeps it; other content is refused after the stages ran: bump "
                        "`release.version`, or pass --overwrite)", config.release.collection,
                        config.release.version)
        if stages is not None:  # a subset: the stages left out must be current after it
            reasons = stale_reasons(ctx, will_run={name for name, _ in chosen})
            if reasons:
                raise ReleaseError("release_stale", f"--stages {','.join(stages)} would release out-of-date "
                                   "tables: " + "; ".join(reasons),
                                   remedy=f"add those stages to --stages, run every stage (`curator run "
                                   f"{config.file_name}`: cached cases are not redone), or run with --no-release")
    return chosen


def run_pipeline(config: PipelineConfig, *, stages: list[str] | None = None,
                 release: bool = True, overwrite: bool = False) -> PipelineResult:
    """Run ``stages`` (default: every installed, enabled stage, in order), then write the release
    (``overwrite``: replace the version when it exists with other content, :func:`build_release`)."""
    ctx = Context(config)
    result = PipelineResult()
    # the holder a second command is told about: `curator preprocess`, not `curator run`
    with ctx.workspace.locked(stages[0] if stages and len(stages) == 1 else "run"):
        ctx.sources  # noqa: B018 - validate the sources before any work starts
        chosen = check_plan(ctx, stages, release)
        executor = make_executor(config.executor)
        try:
            for name, cls in chosen:
                result.reports.append(run_stage(ctx, cls, executor))
                if release and name == "ingest" and not config.release.allow_missing_sources:
                    check_cases(ctx)  # a source that gave no case refuses the release: said now, not hours later
        finally:
            executor.close()
        if release:
            result.release = build_release(ctx, overwrite=overwrite)
    return result
