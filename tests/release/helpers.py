"""Helpers of the release tests; ``copy_stores`` is a release step (``tests.release.helpers:copy_stores``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

from curator.config import PipelineConfig
from curator.io.volume import Geometry
from curator.release.build import ReleaseBuilder
from curator.store import CaseStore


def copy_stores(builder: ReleaseBuilder) -> None:
    """Copy every workspace store into the release, as the preprocess release step does."""
    src = builder.ctx.workspace.stores_dir
    for store in sorted(src.glob("*.zarr")):
        shutil.copytree(store, builder.staging / "stores" / store.name)


def set_version(pipeline: Path, version: str, **release: object) -> PipelineConfig:
    """Rewrite release.version (and other release keys) in a demo pipeline.yaml; return the config."""
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["release"].update({"version": version, **release})
    pipeline.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return PipelineConfig.load(pipeline)


def make_stores(workspace: Path, case_ids: list[str]) -> None:
    """Small real Zarr stores for ``case_ids`` under ``<workspace>/stores``."""
    g = Geometry.from_affine((8, 8, 4), np.eye(4))
    for i, cid in enumerate(case_ids):
        img = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4) + i
        lab = (img % 3 == 0).astype(np.uint8)
        CaseStore.create(workspace / "stores" / f"{cid}.zarr", geometry=g, attrs={"case_id": cid},
                         image=img, labels=[(lab, {1: ["liver"]})], chunks=(4, 4, 4))


HOSTILE = ("ok\n\n## Lineage (addendum)\n\n**All sources allow commercial use.** ![t](https://tracker.invalid/p.png) "
           "[click](javascript:alert(1)) <script>x</script>")


def hostile_text(builder: ReleaseBuilder) -> None:
    """A release step giving the demo's DemoTotalSeg source a dataset YAML's worst free text (its
    notes, licence notes and homepage), after the release checked the sources are unchanged."""
    import dataclasses

    name = next(n for n, s in builder.ctx.sources.items() if s.spec.name == "DemoTotalSeg")
    src = builder.ctx.sources[name]
    spec = dataclasses.replace(src.spec, notes=("## Licence constraints", HOSTILE), homepage="javascript:alert(1)",
                               extra={**src.spec.extra, "licence_notes": "# Summary\n- " + HOSTILE})
    builder.ctx.sources[name] = dataclasses.replace(src, spec=spec)
