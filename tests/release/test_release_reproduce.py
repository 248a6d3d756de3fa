"""What a rebuild and an audit of a release rely on: release.json counts only the release's own cases."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

Build = Callable[..., Path]


def _info(rel: Path) -> dict:
    return json.loads((rel / "release.json").read_text())


def test_inference_counts_only_the_stores_the_release_holds(demo: Path, release_with: Build) -> None:
    """release.json's inference counted every store of the workspace with a pseudo layer — those of
    cases gone from their source (or failed since) too, which the release does not hold."""
    stores = demo / "workspace" / "stores"
    labelled = next(s for s in sorted(stores.glob("*.zarr")) if (s / "labels" / "pseudo").is_dir())
    shutil.copytree(labelled, stores / "Gone__x.zarr")  # a case removed from its source keeps its store
    rel = release_with(demo, "0.2.0")
    released = sum(1 for s in (rel / "stores").glob("*.zarr") if (s / "labels" / "pseudo").is_dir())
    assert released >= 1 and not (rel / "stores" / "Gone__x.zarr").exists()
    assert sum(e["cases"] for e in _info(rel)["inference"]) == released
