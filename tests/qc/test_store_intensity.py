"""QC measures label intensities in physical units, whatever the store's storage scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curator.io.volume import Geometry
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.qc.features import MeasureOptions
from curator.qc.store_io import measure_store
from curator.store import CaseStore
from curator.testing.phantoms import STRUCTURES, Subject, grid, remap, render


def _store(path: Path, image: np.ndarray, lab: np.ndarray, g: Geometry) -> CaseStore:
    planes = [(remap(lab, {"liver": 1, "spleen": 2}), {1: ["liver"], 2: ["spleen"]}, {1: "1", 2: "2"})]
    cfg = PreprocessConfig.from_dict({"crop": "none", "target_spacing_mm": list(g.spacing)})
    prep = preprocess_arrays(image, g, planes, "CT", cfg)
    return CaseStore.create(path, geometry=prep.geometry, attrs={"case_id": path.stem, **prep.attrs},
                            image=prep.image, body=prep.body, labels=[(a, v) for a, v, _ in prep.planes])


def test_a_float_ct_stored_with_a_scale_is_measured_in_hu(tmp_path: Path) -> None:
    """A float32 CT with a metal implant above float16's range (40 000 HU) is stored as float16 with
    normalisation.scale 2: the stored values are HU ÷ 2, and QC averaged them as they were, so the
    liver read half its HU. The liver's mean and sd must be those of the same scan stored as int16."""
    g = grid((48, 40, 12), (8.0, 8.0, 12.0), "RAS")
    hu, lab = render(Subject.random(seed=2), g, modality="CT", seed=2)
    hu = np.round(hu)
    far = np.argwhere(lab == 0)[0]
    metal = hu.astype(np.float32)
    metal[tuple(far)] = 40000.0  # one voxel of metal, outside every label
    ref = _store(tmp_path / "ref.zarr", hu.astype(np.int16), lab, g)
    scaled = _store(tmp_path / "metal.zarr", metal, lab, g)
    assert ref.attrs["normalisation"]["scale"] == 1.0 and scaled.attrs["normalisation"]["scale"] == 2.0
    assert scaled.read("image").dtype == np.float16
    got = {}
    for name in ("ref", "metal"):
        rows = measure_store(tmp_path / f"{name}.zarr", layers=("original",), options=MeasureOptions())
        got[name] = {r["term_id"]: (r["mean_intensity"], r["sd_intensity"]) for r in rows}
    liver = lab == STRUCTURES["liver"][0]
    assert abs(got["ref"]["liver"][0] - float(hu[liver].astype(np.float64).mean())) < 1e-6
    for term in ("liver", "spleen"):
        (m_ref, s_ref), (m, s) = got["ref"][term], got["metal"][term]
        assert abs(m - m_ref) < 0.05 * max(1.0, abs(m_ref)) and abs(s - s_ref) < 0.05 * max(1.0, s_ref), (term, m, m_ref)
