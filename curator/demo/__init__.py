"""``curator demo``: a small synthetic collection in native layouts, run end to end."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args, get_type_hints

import yaml

from curator.config import ExecutorConfig, PipelineConfig
from curator.demo.data import DemoData, build_demo_data
from curator.errors import ConfigError
from curator.io.fsutil import check_output_dir
from curator.pipeline import PipelineResult, run_pipeline
from curator.release.query import Release
from curator.workspace import Workspace

# The demo's data is synthetic, so its workspace takes a fixed, public pseudonym key: two demo
# builds then give the same patient ids, and their releases the same bytes. A real workspace's
# key is random and secret (copy ``secret/pseudonym.key`` to rebuild a release elsewhere).
DEMO_KEY = hashlib.sha256(b"curator demo pseudonym key (synthetic data only)").digest()
EXAMPLE_QUERY = "select dataset, modality, count(*) as cases from cases group by all order by dataset"


@dataclass
class DemoResult:
    folder: Path
    pipeline: Path
    data: DemoData
    result: PipelineResult
    seconds: float


def write_demo_pipeline(folder: Path, data: DemoData, workers: int = 2, executor: str = "local",
                        progress: bool = True, version: str = "0.1.0") -> Path:
    cfg = {
        "workspace": "workspace",
        "sources": data.sources,
        "registry": [str(p) for p in data.registry],
        "stages": {"ingest": {"on_bad_case": "warn"},
                   # the demo's 5 x 5 x 8 mm phantoms: 2 x 2 x 4 mm keeps the stores small and the run quick
                   "preprocess": {"target_spacing_mm": [2.0, 2.0, 4.0]},
                   "qc": {"min_cohort": 5},  # demo cohorts are a handful of cases
                   "pseudolabel": {"ensemble": "demo", "overlap": 0.25}},
        "executor": {"kind": executor, "workers": workers, "progress": progress},
        "release": {"root": "releases", "collection": "demo", "version": version},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_demo(out_dir: Path | None = None, *, workers: int = 2, executor: str = "local",
             progress: bool = True, seed: int = 7) -> DemoResult:
    """Write the demo downloads and pipeline.yaml into ``out_dir`` (new temp folder by default), run it."""
    t0 = time.perf_counter()
    kinds = get_args(get_type_hints(ExecutorConfig)["kind"])
    if executor not in kinds or workers < 1:  # before a file is written: the folder refused the retry
        raise ConfigError("config_error", f"--executor {executor}: give one of {', '.join(kinds)}" if executor
                          not in kinds else f"--workers {workers}: give 1 or more worker processes")
    folder = check_output_dir(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="curator-demo-"))
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError("config_error", f"{folder} is not empty", path=str(folder),
                          remedy="give --out a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        data = build_demo_data(folder / "raw", seed=seed)
        pipeline = write_demo_pipeline(folder, data, workers, executor, progress)
        config = PipelineConfig.load(pipeline)
        Workspace(config.workspace).init(key=DEMO_KEY)
        result = run_pipeline(config)
    except ConfigError:  # the folder was empty, so all in it is the demo's: the same --out takes the retry
        for p in folder.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        raise
    return DemoResult(folder, pipeline, data, result, time.perf_counter() - t0)


def outcome(release: Release) -> str:
    """What the broken inputs did, from the release's problems table: cases dropped (an error
    problem) and cases kept without their labels (a label_rejected problem on a kept case),
    e.g. ``"3 cases dropped, 1 label dropped (case kept: KiTS23__case_00006)"``."""
    dropped = {r[0] for r in release.sql("select distinct case_id from problems where severity = 'error'").fetchall()}
    unlabelled = sorted(r[0] for r in release.sql("select distinct case_id from problems where kind = "
                                                   "'label_rejected'").fetchall() if r[0] not in dropped)
    text = f"{len(dropped)} case{'s' * (len(dropped) != 1)} dropped"
    if unlabelled:
        text += (f", {len(unlabelled)} label{'s' * (len(unlabelled) != 1)} dropped "
                 f"(case{'s' * (len(unlabelled) != 1)} kept: {', '.join(unlabelled)})")
    return text
