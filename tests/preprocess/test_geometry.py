"""Geometry is exact: a structure's centroid (world mm) moves < 0.5 voxel, volumes stay within 2 %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import preprocess_arrays
from curator.preprocess.labels import label_map_plane
from curator.preprocess.resample import resample_image, target_grid
from curator.testing.phantoms import STRUCTURES, Subject, grid, render
from tests.preprocess.fidelity import fidelity

BIG_ML = 10.0


def _check(rows: list[dict[str, float]], vol_tol: float = 0.02, shift_min_ml: float = 0.0) -> None:
    assert rows, "no structure to check"
    for r in rows:
        if r["ml"] > shift_min_ml:
            assert r["shift_vox"] < 0.5, r
        if r["ml"] > BIG_ML:
            assert r["vol_err"] < vol_tol, r


def _run(img: np.ndarray, lab: np.ndarray, g: Geometry, modality: str, **cfg: object):
    planes, _ = label_map_plane(lab, {str(v): [n] for n, (v, _, _) in STRUCTURES.items()})
    prep = preprocess_arrays(img, g, planes, modality, PreprocessConfig.from_dict(cfg))
    out, _, raw = prep.planes[0]
    return prep, out, {int(r): c for c, r in raw.items()}


# At non-integer ratios any hard relabelling rounds each boundary to the output grid: nearest gives a
# source voxel 1 or 2 output voxels, so thin structures (aorta, pancreas: 20-25 mm across) drift by
# up to ~5 % in volume; smooth (one-hot linear + argmax) shrinks thin ones by as much. Over these
# four grids × 26 phantoms (structures > 10 ml): nearest mean 0.9 % (max 6.7 %), smooth mean 0.7 %
# (max 6.3 %); before the resampled extent was centred 0.9 % (5.4 %) and 0.7 % (5.0 %) — the
# sampling phase moves which phantom is worst, not the mean. The 2 % is held on the real
# samples (integer ratios) below; here 5 % on phantom 5.
@pytest.mark.parametrize(("orientation", "labels", "vol_tol"), [
    ("LPS", "nearest", 0.05), ("IPL", "nearest", 0.05), ("RAS", "nearest", 0.05), ("PIR", "nearest", 0.05),
    ("LPS", "smooth", 0.05), ("PIR", "smooth", 0.05)])
def test_phantom_any_orientation(orientation: str, labels: str, vol_tol: float) -> None:
    spacing = {"LPS": (2.3, 1.7, 4.1), "IPL": (4.1, 2.3, 1.7), "RAS": (1.9, 2.2, 3.7), "PIR": (2.1, 4.4, 1.6)}
    shape = tuple(int(300 / s) if s < 3 else int(200 / s) for s in spacing[orientation])
    g = grid(shape, spacing[orientation], orientation, center=(3.0, -12.0, 20.0))
    img, lab = render(Subject.random(5), g, "CT", seed=5)
    prep, out, codes = _run(np.rint(img).astype(np.int16), lab, g, "CT", label_interpolation=labels)
    assert prep.geometry.orientation == "RAS"
    assert np.allclose(prep.geometry.spacing, (1.0, 1.0, 3.0))
    _check(fidelity(lab, g, out, prep.geometry, codes), vol_tol)


def test_oblique_grid_keeps_its_direction() -> None:
    g0 = grid((90, 80, 40), (3.1, 3.1, 4.5), "LPS", center=(0.0, -10.0, 20.0))
    theta = np.deg2rad(17.0)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    g = Geometry.from_affine(g0.shape, rot @ g0.matrix)
    img, lab = render(Subject.random(8), g, "CT", seed=8)
    prep, out, codes = _run(np.rint(img).astype(np.int16), lab, g, "CT")
    d_in = np.abs(g.direction)
    assert np.allclose(np.sort(np.abs(prep.geometry.direction).ravel()), np.sort(d_in.ravel()), atol=1e-9)
    _check(fidelity(lab, g, out, prep.geometry, codes), 0.04)


def test_downsampling_thin_slices() -> None:
    g = grid((220, 180, 160), (0.9, 0.9, 1.0), "LPS", center=(0.0, -10.0, 30.0))
    img, lab = render(Subject.random(2), g, "CT", seed=2)
    prep, out, codes = _run(np.rint(img).astype(np.int16), lab, g, "CT")
    _check(fidelity(lab, g, out, prep.geometry, codes), 0.04)


# The samples are 3 mm isotropic: nearest (the default) is exact at these integer ratios. Smooth
# resampling rounds off small voxelised shapes (a 3.6 ml structure's centroid moves ~1.1 output
# voxel = 0.37 source voxel; a 13.8 ml one loses 2.1 %), so it is held to 0.5 voxel for > 10 ml
# structures and 2.5 %.
@pytest.mark.parametrize(("name", "labels"), [
    (("example_ct_sm", "example_seg", "CT"), "nearest"), (("example_mr_sm", "example_seg_mr", "MR"), "nearest"),
    (("example_ct_sm", "example_seg", "CT"), "smooth"), (("example_mr_sm", "example_seg_mr", "MR"), "smooth")])
def test_real_samples(real_data: Path, name: tuple[str, str, str], labels: str) -> None:
    img = read_volume(real_data / "totalsegmentator" / f"{name[0]}.nii.gz", role="image")
    lab = read_volume(real_data / "totalsegmentator" / f"{name[1]}.nii.gz", role="label")
    values = {str(v): [f"s{v}"] for v in np.unique(lab.array) if v}
    planes, _ = label_map_plane(lab.array, values)
    prep = preprocess_arrays(img.array, img.geometry, planes, name[2],
                             PreprocessConfig(label_interpolation=labels))  # type: ignore[arg-type]
    out, _, raw = prep.planes[0]
    rows = fidelity(lab.array, lab.geometry, out, prep.geometry, {int(r): c for c, r in raw.items()})
    assert sum(r["ml"] > BIG_ML for r in rows) >= 5
    if labels == "nearest":
        _check(rows)
    else:
        _check(rows, vol_tol=0.025, shift_min_ml=BIG_ML)
    assert prep.body_voxels and prep.body is not None and prep.body.sum() == prep.body_voxels
    assert prep.image is not None and prep.image.dtype == np.int16


def test_label_only_kits_case_keeps_grid(real_data: Path) -> None:
    lab = read_volume(real_data / "kits23" / "dataset" / "case_00008" / "segmentation.nii.gz", role="label")
    planes, _ = label_map_plane(lab.array, {"1": ["kidney"], "2": ["kidney_tumor"], "3": ["kidney_cyst"]})
    prep = preprocess_arrays(None, lab.geometry, planes, "CT", PreprocessConfig())
    assert prep.image is None and prep.body is None
    out, _, raw = prep.planes[0]
    assert out.dtype == np.uint8
    _check(fidelity(lab.array, lab.geometry, out, prep.geometry, {int(r): c for c, r in raw.items()}))


@pytest.mark.parametrize("order", ["C", "F"])
def test_body_mask_is_largest_component_with_slice_holes_filled(order: str) -> None:
    """body_mask equals the textbook definition (cc3d's largest component, then scipy's hole
    filling slice by slice) in either memory order, on noisy blobs with holes and islands."""
    import cc3d
    from scipy import ndimage

    from curator.preprocess.body import body_mask

    for seed in range(6):
        rng = np.random.default_rng(seed)
        img = np.asarray(ndimage.gaussian_filter(rng.normal(size=(40, 36, 9)), 1.5) * 1000, order=order)
        ref = cc3d.largest_k(img > 50.0, k=1, connectivity=6, binary_image=True) > 0
        for k in range(ref.shape[2]):
            ref[:, :, k] = ndimage.binary_fill_holes(ref[:, :, k])
        assert np.array_equal(body_mask(img, "CT", 50.0), ref)


@pytest.mark.parametrize("method", ["linear", "cubic", "nearest"])
def test_resampling_gives_the_same_voxels_in_either_memory_order(method: str) -> None:
    from curator.preprocess.resample import resample_image, resample_labels

    rng = np.random.default_rng(3)
    a = rng.integers(-1000, 1000, size=(37, 30, 14)).astype(np.int16)
    ratios, out = (1.3, 0.8, 1.0), (28, 38, 14)
    c = resample_image(a, ratios, out, method, np.dtype(np.int16))
    f = resample_image(np.asfortranarray(a), ratios, out, method, np.dtype(np.int16))
    assert np.array_equal(c, f) and f.flags.f_contiguous
    lab = rng.integers(0, 4, size=a.shape).astype(np.uint8)
    for m in ("nearest", "smooth"):
        assert np.array_equal(resample_labels(lab, ratios, out, m), resample_labels(np.asfortranarray(lab), ratios, out, m))


def test_a_label_resampling_erases_is_left_out_and_named() -> None:
    """A 1 mm tumour on one slice between the 3 mm output slices: its code must not stay in the
    plane's values (the store would list a term it has no voxel of, and training would read
    "annotated, no tumour")."""
    g = grid((40, 40, 30), (1.0, 1.0, 1.0), "RAS")
    img = np.full(g.shape, -1000, np.int16)
    img[5:35, 5:35, :] = 40
    lab = np.zeros(g.shape, np.uint8)
    lab[8:20, 8:20, 5:25] = 1
    lab[12:16, 12:16, 12] = 2
    planes, _ = label_map_plane(lab, {"1": ["liver"], "2": ["liver_tumor"]})
    prep = preprocess_arrays(img, g, planes, "CT", PreprocessConfig())
    ((out, values, raw),) = prep.planes
    assert values == {1: ["liver"]} and raw == {1: "1"} and set(np.unique(out)) == {0, 1}
    assert prep.lost == [("2", ["liver_tumor"])]
    fine = preprocess_arrays(img, g, planes, "CT", PreprocessConfig.from_dict({"target_spacing_mm": [1, 1, 1]}))
    assert fine.lost == [] and fine.planes[0][1] == {1: ["liver"], 2: ["liver_tumor"]}


@pytest.mark.parametrize(("n_in", "src", "dst"), [(1, 1.0, 3.0), (1, 5.0, 3.0), (2, 0.5, 3.0), (103, 1.0, 2.0),
                                                  (7, 2.5, 1.0), (30, 3.0, 1.0)])
def test_the_resampled_extent_is_centred_on_the_input(n_in: int, src: float, dst: float) -> None:
    """Where n_in · src is not a whole number of target voxels the remainder is split between both
    ends: the output's centre is the input's, and a z ramp resampled linearly reads the world z
    of every output voxel centre that lies inside the input's first and last voxel centres."""
    g = Geometry.from_affine((4, 4, n_in), np.diag([1.0, 1.0, src, 1.0]))
    z_in = g.voxel_to_world(np.stack([np.zeros(n_in), np.zeros(n_in), np.arange(n_in)], axis=1))[:, 2]
    ramp = np.broadcast_to(z_in.astype(np.float32), (4, 4, n_in)).copy()
    out_g, ratios = target_grid(g, (1.0, 1.0, dst))
    n_out = out_g.shape[2]
    z_out = out_g.voxel_to_world(np.stack([np.zeros(n_out), np.zeros(n_out), np.arange(n_out)], axis=1))[:, 2]
    assert z_out.mean() == pytest.approx(z_in.mean(), abs=1e-9)
    got = resample_image(ramp, ratios, out_g.shape, "linear", np.dtype(np.float32))[0, 0]
    inside = (z_out >= z_in[0] - 1e-6) & (z_out <= z_in[-1] + 1e-6)
    assert np.allclose(got[inside], z_out[inside], atol=1e-4)
    if n_in == 1:
        assert np.allclose(got, z_in[0])


def test_smooth_labels_do_not_shrink_balls_where_samples_tie() -> None:
    """At an even downsampling every boundary sample sits halfway between two source voxels; smooth
    gave each such tie to background, so a 5 mm ball at 0.5 → 1 mm lost 9 % (a 2.5 mm one 19 %)
    and over these grids smooth shrank balls by 5.8 % on average where nearest is unbiased. Ties
    now take the nearest source voxel."""
    from curator.preprocess.resample import resample_labels

    n = 100
    pts = np.indices((n,) * 3) * 0.5
    err: dict[str, list[float]] = {"nearest": [], "smooth": []}
    for radius in (5.0, 2.5):
        for shift in (0.0, 0.2):
            ball = (((pts - ((n - 1) * 0.25 + shift)) ** 2).sum(0) <= radius**2).astype(np.uint8)
            for ratios in ((2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (2.5, 3.5, 4.0)):
                out = tuple(int(n / q) for q in ratios)
                for m, errors in err.items():
                    got = resample_labels(ball, ratios, out, m).sum() * float(np.prod(ratios))
                    errors.append(got / ball.sum() - 1.0)
    assert abs(np.mean(err["smooth"]) - np.mean(err["nearest"])) < 0.02, err
    assert abs(err["smooth"][0]) < 0.03  # the 5 mm ball at 0.5 -> 1 mm
