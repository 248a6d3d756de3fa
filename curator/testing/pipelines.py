"""Small helpers to run pipelines in tests and notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from curator.config import PipelineConfig
from curator.pipeline import PipelineResult, run_pipeline
from curator.workspace import Workspace


def make_pipeline(tmp: Path, sources: list[dict[str, Any]], *, registry: list[Path] | None = None,
                  stages: dict[str, Any] | None = None, workers: int = 1, executor: str = "local",
                  version: str = "0.1.0", collection: str = "test", key: bytes | None = None) -> Path:
    """Write ``pipeline.yaml`` under ``tmp`` (workspace + releases inside ``tmp``)."""
    cfg = {"workspace": str(tmp / "workspace"), "sources": sources,
           "registry": [str(p) for p in registry or []], "stages": stages or {},
           "executor": {"kind": executor, "workers": workers, "progress": False},
           "release": {"root": str(tmp / "releases"), "collection": collection, "version": version}}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if key is not None:
        Workspace(tmp / "workspace").init(key=key)
    return path


def write_dataset_yaml(tmp: Path, layout: list[dict[str, Any]], labels: dict[str, Any], name: str = "Toy",
                       modality: str = "CT", **kw: Any) -> Path:
    """A minimal dataset YAML ``<tmp>/<name>.yaml`` (licence and citation filled in); ``kw``: further keys."""
    d = {"name": name, "version": "1", "modality": modality, "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "layout": layout, "labels": labels, **kw}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def run(pipeline: Path, stages: list[str] | None = None, release: bool = False, **executor: Any) -> PipelineResult:
    cfg = PipelineConfig.load(pipeline)
    if executor:
        cfg = cfg.replace(executor=cfg.executor.replace(**executor))
    return run_pipeline(cfg, stages=stages, release=release)


def table(pipeline: Path, name: str) -> pa.Table:
    cfg = PipelineConfig.load(pipeline)
    t = Workspace(cfg.workspace).read_table(name)
    if t is None:
        raise FileNotFoundError(name)
    return t


def write_kits_cases(raw: Path, n: int) -> Path:
    """``n`` small KiTS23-layout phantom cases (``dataset/case_0000i/{imaging,segmentation}.nii.gz``)
    under ``raw``; returns ``raw``."""
    from curator.testing.layouts import save_nifti
    from curator.testing.phantoms import Subject, grid, remap, render

    for i in range(n):
        g = grid((16, 14, 8), (20.0, 20.0, 30.0), "LPS")
        img, lab = render(Subject.random(i), g)
        save_nifti(raw / "dataset" / f"case_{i:05d}" / "imaging.nii.gz", img.astype("int16"), g)
        save_nifti(raw / "dataset" / f"case_{i:05d}" / "segmentation.nii.gz",
                   remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2}), g)
    return raw
