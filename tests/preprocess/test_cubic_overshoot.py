"""Cubic (B-spline) resampling overshoots next to metal; an int16 store clips the overshoot, and
says how many voxels it clipped instead of doing it silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.io.volume import Geometry
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.release.query import Release
from curator.testing.layouts import write_kits_case
from tests.preprocess.conftest import KITS_YAML, SPACING, _ingest_and_preprocess


def _metal_ct(g: Geometry) -> np.ndarray:
    hu = np.full(g.shape, -1000, np.int16)
    hu[4:36, 4:36, :] = 40
    hu[18:21, 18:21, 5:8] = 30000  # a metal implant near int16's limit
    return hu


@pytest.mark.parametrize("method", ["cubic", "linear"])
def test_cubic_overshoot_clipped_by_an_int16_store_is_counted(method: str) -> None:
    g = Geometry.from_affine((40, 40, 12), np.diag([2.0, 2.0, 3.0, 1.0]))
    hu = _metal_ct(g)
    cfg = PreprocessConfig.from_dict({"crop": "none", "image_interpolation": method, "target_spacing_mm": [0.7, 0.7, 1.1]})
    prep = preprocess_arrays(hu, g, [], "CT", cfg)
    assert prep.image is not None and prep.image.dtype == np.int16
    at_limit = int(np.count_nonzero(prep.image == 32767))
    if method == "linear":  # a convex blend never leaves the source's range
        assert prep.saturated == 0 and int(prep.image.max()) == 30000
    else:
        assert prep.saturated > 0 and prep.saturated == at_limit + int(np.count_nonzero(prep.image == -32768))
        assert int(prep.image.min()) < -1024  # the undershoot the docs warn of (kept: int16 holds it)


def test_the_clipped_voxels_are_an_info_row_naming_the_case(tmp_path: Path) -> None:
    g = Geometry.from_affine((40, 40, 12), np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0]))
    seg = np.zeros(g.shape, np.uint8)
    seg[8:14, 8:14, 3:9] = 1
    write_kits_case(tmp_path / "src", "case_00000", _metal_ct(g) + 1024, seg, g)  # the YAML declares -1024
    release = _ingest_and_preprocess(tmp_path, {"src": KITS_YAML}, "t", {
        "image_interpolation": "cubic", "target_spacing_mm": [s / 3 for s in SPACING]})
    rows = Release(release).sql("select case_id, kind, severity, message from problems "
                                "where stage = 'preprocess'").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("TinyKits__case_00000", "interpolation_clipped", "info")], rows
    assert "int16 store [-32768, 32767]" in rows[0][3] and "image_interpolation: linear" in rows[0][3]
