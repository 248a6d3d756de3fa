"""NSD and HD95 measure surfaces as the metric's authors do (surface elements weighted by area,
DeepMind's surface-distance / MONAI ``use_subvoxels=True``), and boundary voxels on request
(MONAI's default): checked against MONAI on anisotropic grids, and on balls of known radii."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_surface_dice
from monai.metrics.utils import (
    create_table_neighbour_code_to_surface_area,
    get_edge_surface_distance,
)
from scipy import ndimage

from curator.pseudolabel.evaluate import code_areas, evaluate_layers, hd95, nsd, surface_distances
from curator.testing.segmodels import phantom_truth, write_phantom_store

# MONAI's own call of its deprecated argument (MONAI 1.5)
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
SPACINGS = [(1.0, 1.0, 1.0), (0.8, 0.7, 2.5), (3.0, 0.5, 1.2)]


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid and a shifted, sometimes dilated, copy with a bite taken out."""
    rng = np.random.default_rng(seed)
    x, y, z = np.ogrid[:48, :56, :32]
    a = (x - 24) ** 2 / 180 + (y - 28) ** 2 / 260 + (z - 16) ** 2 / 70 < 1
    b = ndimage.shift(a.astype(np.float32), rng.normal(0, 1.5, 3), order=0) > 0.5
    if seed % 2:
        b = ndimage.binary_dilation(b, iterations=2)
    b[:, :, : 6 + seed % 5] = False
    return a, b


def _onehot(m: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_surface_element_areas_are_deepminds_table(spacing: tuple[float, float, float]) -> None:
    ours = code_areas(spacing)
    theirs = create_table_neighbour_code_to_surface_area(spacing)[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours[0] == ours[255] == 0 and (ours[1:255] > 0).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_nsd_agrees_with_monai_for_both_surface_measures(seed: int, spacing: tuple[float, float, float]) -> None:
    a, b = _pair(seed)
    for tol in (1.0, 2.5):
        for surface, subvoxels in (("surfels", True), ("voxels", False)):
            ref = compute_surface_dice(_onehot(b), _onehot(a), class_thresholds=[tol], include_background=False,
                                       spacing=list(spacing), use_subvoxels=subvoxels).item()
            assert nsd(b, a, spacing, tol, surface) == pytest.approx(ref, abs=1e-5), (surface, tol)


@pytest.mark.parametrize("spacing", SPACINGS[1:])
def test_hd95_weights_surface_elements_by_area(spacing: tuple[float, float, float]) -> None:
    """DeepMind's robust Hausdorff on MONAI's surface elements (areas and distances) equals ours."""
    a, b = _pair(1)
    (edges_b, edges_a), (d_ba, d_ab), (area_b, area_a) = get_edge_surface_distance(
        torch.from_numpy(b), torch.from_numpy(a), spacing=spacing, use_subvoxels=True, symmetric=True)

    def robust(dist: torch.Tensor, area: torch.Tensor) -> float:
        d, w = dist.numpy().astype(np.float64), area.numpy().astype(np.float64)
        order = np.argsort(d)
        cum = np.cumsum(w[order]) / w.sum()
        return float(d[order][min(np.searchsorted(cum, 0.95), len(d) - 1)])

    expected = max(robust(d_ba, area_b[edges_b]), robust(d_ab, area_a[edges_a]))
    assert hd95(a, b, spacing) == pytest.approx(expected, rel=1e-5)


def test_concentric_balls_are_their_radii_apart() -> None:
    """Balls of radius 12 and 15 mm: every surface point is ~3 mm from the other surface."""
    sp = (0.9, 0.9, 1.5)
    x, y, z = (np.arange(n) * s - 24 for n, s in zip((54, 54, 32), sp, strict=True))
    r2 = x[:, None, None] ** 2 + y[None, :, None] ** 2 + z[None, None, :] ** 2
    small, big = r2 < 12 ** 2, r2 < 15 ** 2
    for surface in ("surfels", "voxels"):
        d = surface_distances(small, big, sp, surface)  # type: ignore[arg-type]
        assert 2.2 < float(np.median(d.a_to_b)) < 3.8 and 2.2 < float(np.median(d.b_to_a)) < 3.8
        assert nsd(small, big, sp, 1.0, surface) < 0.1  # type: ignore[arg-type]
        assert nsd(small, big, sp, 5.0, surface) == 1.0  # type: ignore[arg-type]
        assert 2.5 < (hd95(small, big, sp, surface) or 0) < 4.5  # type: ignore[arg-type]
    assert hd95(small, np.zeros_like(small), sp) is None
    assert nsd(small, np.zeros_like(small), sp, 1.0) == 0.0
    assert nsd(np.zeros_like(small), np.zeros_like(small), sp, 1.0) == 1.0
    with pytest.raises(ValueError, match="surface must be one of"):
        nsd(small, big, sp, 1.0, "mesh")  # type: ignore[arg-type]


def test_evaluate_layers_reports_nsd_and_hd95_in_the_chosen_measure(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "stores").mkdir(parents=True)
    store = write_phantom_store(ws / "stores" / "MSD_Spleen__spleen_1.zarr", 300, {"spleen": 1})
    liver = phantom_truth(300, "liver")
    store.write_layer("pseudo", [(liver.astype(np.uint8), {1: ["liver"]})])
    store.write_layer("revised", [(ndimage.binary_dilation(liver, iterations=2).astype(np.uint8), {1: ["liver"]})])
    sp = store.geometry.spacing
    rows = {s: evaluate_layers(ws, "pseudo", "revised", tolerance_mm=1.0, surface=s)[0]  # type: ignore[arg-type]
            for s in ("surfels", "voxels")}
    a, b = store.mask("liver", "pseudo"), store.mask("liver", "revised")
    for s, row in rows.items():
        assert row["nsd"] == pytest.approx(nsd(a, b, sp, 1.0, s), abs=1e-6)  # type: ignore[arg-type]
        assert row["hd95_mm"] == pytest.approx(hd95(a, b, sp, s), abs=1e-4)  # type: ignore[arg-type]
        assert row["hd95_mm"] > 0 and row["dice"] < 1
    assert rows["surfels"]["nsd"] != rows["voxels"]["nsd"]
