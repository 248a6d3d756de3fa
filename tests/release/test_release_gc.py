"""`curator gc --delete` after a case left its source: the workspace's store of it goes, the
release that hard-links it still verifies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import yaml
from typer.testing import CliRunner

from curator.cli import app
from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.release.integrity import verify_release


def test_gc_delete_leaves_a_release_holding_the_case_verifiable(demo: Path, demo_base: Path,
                                                                release_with: Callable[..., Path]) -> None:
    rel = release_with(demo, "0.2.0")  # its stores are hard links of the workspace's
    cid = "KiTS23__case_00003"
    ws_store = demo / "workspace" / "stores" / f"{cid}.zarr"
    assert (rel / "stores" / f"{cid}.zarr").is_dir() and ws_store.is_dir()
    cfg = yaml.safe_load((demo / "pipeline.yaml").read_text())
    for src in cfg["sources"]:  # the copy's own downloads (the demo's roots are absolute)
        src["root"] = str(demo / "raw" / Path(src["root"]).relative_to(demo_base / "raw"))
    (demo / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.rmtree(demo / "raw" / "kits23" / "dataset" / "case_00003")
    run_pipeline(PipelineConfig.load(demo / "pipeline.yaml"), release=False)
    pipe = str(demo / "pipeline.yaml")
    res = CliRunner().invoke(app, ["gc", pipe], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"stores/{cid}.zarr" in res.output and "hard-linked into releases" in res.output
    assert ws_store.is_dir()
    res = CliRunner().invoke(app, ["gc", pipe, "--delete"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "removed" in res.output, res.output
    assert not ws_store.exists() and not list((demo / "workspace").rglob(f"*{cid}*"))
    rep = verify_release(rel)
    assert rep.ok and rep.checked_stores > 0, rep.to_dict()
    assert "nothing to collect" in CliRunner().invoke(app, ["gc", pipe], env={"COLUMNS": "300"}).output
