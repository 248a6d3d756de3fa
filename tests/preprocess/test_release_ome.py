"""OME-NGFF metadata through preprocessing and the release: a preprocessed store is an OME image
unless its grid stays oblique; a release of a workspace whose stores were written before curator
wrote the metadata carries it (nothing re-run), the workspace's files stay as they were, and the
released stores are byte for byte those a workspace written by this curator gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from ome_zarr_models.v05.image import Image

from curator.config import PipelineConfig
from curator.io.volume import Geometry
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.preprocess.labels import label_map_plane
from curator.release.build import build_release
from curator.release.integrity import verify_release
from curator.runner.context import Context
from curator.store import CaseStore
from curator.testing.phantoms import STRUCTURES, Subject, grid, render
from tests.preprocess.conftest import Tiny
from tests.store.test_ome import _strip_ome


def test_release_adds_ome_to_stores_that_predate_it(tiny: Tiny, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(tiny.workspace, project / "ws")
    cfg = yaml.safe_load((tiny.root / "pipeline.yaml").read_text())
    cfg["release"]["version"] = "0.2.0"
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    stores = sorted((project / "ws" / "stores").glob("*.zarr"))
    assert stores
    for s in stores:
        _strip_ome(s)
    before = {p: p.read_bytes() for s in stores for p in s.rglob("*") if p.is_file()}
    dest = build_release(Context(PipelineConfig.load(project / "pipeline.yaml")))
    assert {p: p.read_bytes() for s in stores for p in s.rglob("*") if p.is_file()} == before
    for s in stores:
        assert "ome" not in json.loads((s / "zarr.json").read_text())["attributes"]
        Image.from_zarr(zarr.open_group(str(dest / "stores" / s.name), mode="r"))
    assert verify_release(dest).ok
    now = json.loads((dest / "release.json").read_text())["stores"]
    first = json.loads((tiny.release / "release.json").read_text())["stores"]
    assert {c: m["sha256"] for c, m in now.items()} == {c: m["sha256"] for c, m in first.items()}


@pytest.mark.parametrize("deg", [0.0, 17.0])
def test_preprocessed_store_gets_ome_unless_oblique(tmp_path: Path, deg: float) -> None:
    """An LPS scan, reoriented to RAS, is an OME image placed as the affine says; the same scan
    tilted by 17° keeps its obliquity in the direction cosines, so no scale + translation can
    place it and the store has no OME metadata (curator's geometry as ever)."""
    g0 = grid((60, 50, 24), (3.1, 3.1, 4.5), "LPS", center=(0.0, -10.0, 20.0))
    rot = np.eye(4)
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    rot[:2, :2] = [[c, -s], [s, c]]
    g = Geometry.from_affine(g0.shape, rot @ g0.matrix)
    img, lab = render(Subject.random(8), g, "CT", seed=8)
    planes, _ = label_map_plane(lab, {str(v): [n] for n, (v, _, _) in STRUCTURES.items()})
    prep = preprocess_arrays(np.rint(img).astype(np.int16), g, planes, "CT", PreprocessConfig.from_dict({}))
    store = CaseStore.create(tmp_path / "c.zarr", geometry=prep.geometry, attrs={"case_id": "c"}, image=prep.image,
                             body=prep.body, labels=[(a, v) for a, v, _ in prep.planes])
    attrs = json.loads((store.path / "zarr.json").read_text())["attributes"]
    assert attrs["curator"]["affine"] == list(prep.geometry.affine)
    if deg:
        assert "ome" not in attrs
        return
    image = Image.from_zarr(zarr.open_group(str(store.path), mode="r"))
    scale, translation = image.ome_attributes.multiscales[0].datasets[0].coordinateTransformations
    far = np.asarray(prep.geometry.shape) - 1
    assert np.allclose(np.asarray(scale.scale) * far + translation.translation, prep.geometry.voxel_to_world(far)[0])
