"""A fifth demo dataset, added to make a second release of the demo.

``DemoLiverMR``: abdominal MR, one folder per visit (``pat01_v1/``), two patients scanned at two
visits (so patient-level splitting has something to do), licence CC-BY-4.0. Used by the
release tests, the docs and the query notebook::

    data = build_demo_data(folder / "raw"); pipeline = write_demo_pipeline(folder, data)
    run_pipeline(PipelineConfig.load(pipeline))                    # demo 0.1.0
    add_extra_dataset(pipeline, folder / "raw", version="0.2.0")
    run_pipeline(PipelineConfig.load(pipeline))                    # demo 0.2.0 (parent 0.1.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curator.testing.layouts import save_nifti
from curator.testing.phantoms import Subject, grid, remap, render

DEMO_MR_YAML = """\
name: DemoLiverMR
version: "1.0"
title: Demo MR dataset with follow-up visits (one folder per visit, <patient>_<visit>)
modality: MR
region: abdomen
licence: CC-BY-4.0
citation_key: curatordemomr
citation: |
  @misc{curatordemomr, title={curator demo MR phantoms}, year={2026}}
layout:
  - image: "{case}/t1.nii.gz"
    label: "{case}/seg.nii.gz"
patterns:
  case: "(?P<patient>pat\\\\d{2})_v\\\\d"
patient_id: "{patient}"
labels:
  encoding: label_map
  values:
    1: liver
    2: spleen
"""
VISITS = {"pat01": ("v1", "v2"), "pat02": ("v1",), "pat03": ("v1",), "pat04": ("v1", "v2"), "pat05": ("v1",)}


def build_extra_dataset(root: Path, seed: int = 7) -> tuple[dict[str, Any], Path]:
    """Write DemoLiverMR under ``root/LiverMR``; returns (pipeline source entry, dataset YAML path)."""
    folder = root / "LiverMR"
    for p, (patient, visits) in enumerate(sorted(VISITS.items())):
        subject = Subject.random(seed * 100 + 60 + p, tumor=False, cyst=False)
        for v, visit in enumerate(visits):
            g = grid((64, 56, 32), (5.0, 5.0, 8.0), "RAS", center=(float(3 * v), -10.0, 20.0))
            img, lab = render(subject, g, "MR", seed=seed * 100 + 70 + 10 * p + v)
            case = folder / f"{patient}_{visit}"
            save_nifti(case / "t1.nii.gz", np.rint(img).astype(np.int16), g, np.int16)
            save_nifti(case / "seg.nii.gz", remap(lab, {"liver": 1, "spleen": 2}), g, np.uint8)
    spec = root / "DemoLiverMR.yaml"
    spec.write_text(DEMO_MR_YAML)
    return {"dataset": str(spec), "root": str(folder)}, spec


def add_extra_dataset(pipeline: Path, raw: Path, *, version: str, seed: int = 7) -> Path:
    """Write DemoLiverMR under ``raw`` and add it to ``pipeline`` (a demo pipeline.yaml) as ``version``."""
    source, spec = build_extra_dataset(raw, seed)
    cfg = yaml.safe_load(pipeline.read_text(encoding="utf-8"))
    cfg["sources"].append(source)
    cfg["registry"] = [*cfg.get("registry", []), str(spec)]
    cfg["release"]["version"] = version
    pipeline.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return pipeline
