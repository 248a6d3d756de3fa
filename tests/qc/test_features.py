"""Analytic checks of the QC features on anisotropic and oblique grids."""

from __future__ import annotations

import numpy as np
import pytest

from curator.io.volume import Geometry
from curator.qc import shape
from curator.qc.features import (
    MeasureOptions,
    body_sections,
    field_of_view,
    measure_label_map,
    measure_planes,
)
from curator.testing.phantoms import grid, world_coords


def oblique_grid(shape_: tuple[int, int, int], spacing: tuple[float, float, float], angle: float) -> Geometry:
    """A grid rotated by ``angle`` about the RAS z axis and tilted about x, centred on the origin."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    t = angle / 2
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    a = np.eye(4)
    a[:3, :3] = rz @ rx @ np.diag(spacing)
    a[:3, 3] = -a[:3, :3] @ ((np.asarray(shape_) - 1) / 2)
    return Geometry.from_affine(shape_, a)


def ellipsoid(g: Geometry, radii: tuple[float, float, float], rot: np.ndarray | None = None,
              center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    xyz = world_coords(g).reshape(3, -1) - np.asarray(center)[:, None]
    if rot is not None:
        xyz = rot.T @ xyz
    q = sum((xyz[i] / radii[i]) ** 2 for i in range(3))
    return (q <= 1.0).reshape(g.shape)


GRIDS = [
    ("anisotropic", grid((100, 100, 36), spacing=(0.8, 0.8, 2.5))),
    ("oblique", oblique_grid((96, 110, 40), (0.9, 0.7, 2.2), 0.5)),
]


@pytest.mark.parametrize(("name", "g"), GRIDS)
def test_ball_sphericity_mesh_is_one_and_faces_is_two_thirds(name: str, g: Geometry) -> None:
    ball = ellipsoid(g, (30.0, 30.0, 30.0))
    f = measure_label_map(ball.astype(np.uint8), g, {1: "ball"}, options=MeasureOptions(mesh=True))["ball"]
    assert f.volume_ml == pytest.approx(4 / 3 * np.pi * 30.0**3 / 1000, rel=0.02)
    assert f.sphericity_mesh == pytest.approx(1.0, abs=0.05)
    # exposed faces count each surface element |n_x| + |n_y| + |n_z| times: 3/2 on average over
    # a sphere, so a large voxelised ball tends to 2/3 whatever the spacing
    assert f.sphericity == pytest.approx(2 / 3, abs=0.02)
    assert f.eccentricity < 0.2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (0.7, 0.7, 5.0), (1.5, 1.5, 5.0)])
def test_mesh_sphericity_of_small_labels_stays_at_most_one(spacing: tuple[float, float, float]) -> None:
    """The smoothed surface's area over the voxel count's volume put a 3 mm ball on 5 mm slices at
    2.2 and real vertebrae at 11; with the surface's own volume no ball exceeds 1, and balls of
    6 mm and more stay above 0.85 (a 3 mm ball cut into two 5 mm slices is no ball any more)."""
    g = grid((60, 60, 24), spacing=spacing)
    for r in (3.0, 6.0, 10.0):
        f = measure_label_map(ellipsoid(g, (r, r, r)).astype(np.uint8), g, {1: "b"},
                              options=MeasureOptions(mesh=True))["b"]
        assert f.sphericity_mesh is None or f.sphericity_mesh <= 1.0, (r, f.sphericity_mesh)
        assert r < 6 or (f.sphericity_mesh is not None and f.sphericity_mesh > 0.85), (r, f.sphericity_mesh)
    f = measure_label_map(ellipsoid(g, (30.0, 20.0, 10.0)).astype(np.uint8), g, {1: "e"},
                          options=MeasureOptions(mesh=True))["e"]
    assert f.sphericity_mesh == pytest.approx(0.847, abs=0.09)  # the analytic value of the ellipsoid


def test_face_sphericity_bias_converges_to_two_thirds() -> None:
    """The face-count bias approaches 2/3 as the ball grows relative to the voxel."""
    g = grid((90, 90, 40), spacing=(1.0, 1.0, 2.0))
    errs = []
    for r in (8.0, 16.0, 32.0):
        f = measure_label_map(ellipsoid(g, (r, r, r)).astype(np.uint8), g, {1: "b"})["b"]
        errs.append(abs(f.sphericity - 2 / 3))
    assert errs[-1] < 0.02
    assert errs[-1] < errs[0]


@pytest.mark.parametrize(("name", "g"), GRIDS)
def test_ellipsoid_eccentricity_extents_and_centroid(name: str, g: Geometry) -> None:
    a, b, c = 34.0, 20.0, 12.0
    ang = 0.7
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    centre = (3.0, -4.0, 5.0)
    m = ellipsoid(g, (a, b, c), rot, centre)
    f = measure_label_map(m.astype(np.uint8), g, {1: "e"})["e"]
    assert f.eccentricity == pytest.approx(np.sqrt(1 - c**2 / a**2), abs=0.02)
    assert f.centroid_mm == pytest.approx(centre, abs=0.5)
    worst = max(g.spacing)
    assert np.allclose(f.extent_mm, (2 * a, 2 * b, 2 * c), atol=1.5 * worst)
    assert f.components == 1 and f.largest_component_fraction == 1.0
    assert not f.truncated


def test_face_area_counts_array_edges_and_spacing() -> None:
    m = np.ones((2, 3, 4), dtype=bool)
    sp = (1.0, 2.0, 3.0)
    expect = 2 * (3 * 4 * (2 * 3) + 2 * 4 * (1 * 3) + 2 * 3 * (1 * 2))
    assert shape.face_area_mm2(m, sp) == pytest.approx(expect)


def test_moments_match_coordinates() -> None:
    rng = np.random.default_rng(1)
    m = rng.random((9, 7, 5)) < 0.3
    n, mean, cov = shape.moments(m)
    pts = np.argwhere(m).astype(float)
    assert n == len(pts)
    assert np.allclose(mean, pts.mean(axis=0))
    assert np.allclose(cov, np.cov(pts.T, bias=True))


def test_components_border_and_intensity() -> None:
    g = grid((40, 40, 20), spacing=(1.0, 1.0, 3.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[5:10, 5:10, 5:10] = 1
    lab[20:24, 20:24, 5:8] = 1  # a second piece
    lab[10:20, 10:20, 15:20] = 2  # touches the last slice (k+)
    img = np.zeros(g.shape, np.float32)
    img[lab == 1] = 100.0
    img[lab == 2] = np.tile([10.0, 30.0], 250)
    out = measure_label_map(lab, g, {1: "a", 2: "b"}, image=img)
    assert out["a"].components == 2
    assert out["a"].largest_component_fraction == pytest.approx(125 / (125 + 48))
    assert out["a"].border_faces == () and out["b"].border_faces == ("k+",)
    assert out["a"].mean_intensity == pytest.approx(100.0) and out["a"].sd_intensity == pytest.approx(0.0)
    assert out["b"].mean_intensity == pytest.approx(20.0) and out["b"].sd_intensity == pytest.approx(10.0)


def test_border_margin_and_source_field_of_view() -> None:
    g = grid((30, 30, 30), spacing=(1.0, 1.0, 1.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[2:8, 10:20, 10:20] = 1  # two voxels from the i- edge
    assert measure_label_map(lab, g, {1: "x"})["x"].border_faces == ()
    wide = MeasureOptions(border_margin=3)
    assert measure_label_map(lab, g, {1: "x"}, options=wide)["x"].border_faces == ("i-",)
    # a store cropped out of a larger scan: the crop edge is not the scan's edge
    src = np.asarray(g.affine).reshape(4, 4).copy()
    src[:3, 3] -= src[:3, :3] @ np.array([10.0, 0.0, 0.0])  # the scan starts 10 voxels earlier along i
    fov = field_of_view(g, list(src.ravel()), (50, 30, 30))
    assert fov[0, 0] == pytest.approx(-10.5) and fov[1, 1] == pytest.approx(29.5)
    lab[0:8] = 0
    lab[0:5, 10:20, 10:20] = 1
    f = measure_planes([(lab, {1: ["x"]})], g, fov=fov)["x"]
    assert f.border_faces == ()
    assert measure_planes([(lab, {1: ["x"]})], g)["x"].border_faces == ("i-",)


def test_term_is_union_of_codes_and_planes() -> None:
    g = grid((20, 20, 20), spacing=(1.0, 1.0, 2.0))
    p0 = np.zeros(g.shape, np.uint8)
    p1 = np.zeros(g.shape, np.uint8)
    p0[2:6, 2:6, 2:6] = 1  # kidney_left, also "kidney"
    p0[10:14, 2:6, 2:6] = 2  # kidney_right, also "kidney"
    p1[3:5, 3:5, 3:5] = 1  # a tumour overlapping the left kidney, in its own plane, also "kidney"
    planes = [(p0, {1: ["kidney_left", "kidney"], 2: ["kidney_right", "kidney"]}), (p1, {1: ["tumor", "kidney"]})]
    out = measure_planes(planes, g)
    assert set(out) == {"kidney_left", "kidney_right", "kidney", "tumor"}
    assert out["kidney"].voxels == 128
    assert out["kidney"].components == 2
    assert out["tumor"].voxels == 8
    assert out["kidney"].volume_ml == pytest.approx(128 * 2.0 / 1000)


def test_absent_codes_give_no_row() -> None:
    g = grid((10, 10, 10), spacing=(1.0, 1.0, 1.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[2:4, 2:4, 2:4] = 3
    out = measure_label_map(lab, g, {1: "a", 3: "c", 9: "z"})
    assert set(out) == {"c"}


def test_real_totalsegmentator_map(real_data) -> None:  # type: ignore[no-untyped-def]
    """Every class of a real 117-class prediction measured in one pass; organs cut by its 30-slice
    field of view are truncated along the slice axis only."""
    import json

    from curator.io.formats import read_volume

    ts = real_data / "totalsegmentator"
    v = read_volume(ts / "example_seg.nii.gz", role="label")
    classes = {int(k): name for k, name in json.loads((ts / "class_map.json").read_text())["total"].items()}
    out = measure_label_map(v.array, v.geometry, classes)
    present = {classes[int(c)] for c in np.unique(v.array) if c}
    assert set(out) == present
    assert sum(f.voxels for f in out.values()) == int(np.count_nonzero(v.array))
    vox_ml = v.geometry.voxel_volume_mm3 / 1000
    assert all(f.volume_ml == pytest.approx(f.voxels * vox_ml) for f in out.values())
    cut = [f for f in out.values() if f.truncated]
    assert cut and len(cut) < len(out)
    slice_axis = "ijk"[int(np.argmax(np.abs(v.geometry.direction[2, :])))]
    assert any(face[0] == slice_axis for f in cut for face in f.border_faces)


def _crop(g: Geometry, k0: int, k1: int) -> Geometry:
    """The grid of slices k0..k1-1 of ``g`` (same voxels, origin moved)."""
    a = g.matrix.copy()
    a[:3, 3] = a[:3, :3] @ np.array([0.0, 0.0, k0]) + a[:3, 3]
    return Geometry.from_affine((g.shape[0], g.shape[1], k1 - k0), a)


@pytest.mark.parametrize("name,g", GRIDS, ids=[n for n, _ in GRIDS])
def test_body_size_does_not_change_with_the_scans_coverage(name: str, g: Geometry) -> None:
    """The same trunk and organ scanned short and long: the body volume (and UKBOB's normalised
    volume) follows the coverage, the body size at the organ's level does not — and for a trunk
    of constant section it is that section's area^(3/2)."""
    xyz = world_coords(g)
    k = np.arange(g.shape[2])[None, None, :]
    trunk_a = np.where(np.abs(k - g.shape[2] / 2) < 8, 30.0, 30.0 + 0.6 * np.abs(k - g.shape[2] / 2))  # mm
    body = (xyz[0] / trunk_a) ** 2 + (xyz[1] / 24.0) ** 2 <= 1.0  # wider away from the organ's slices
    organ = ellipsoid(g, (12.0, 9.0, 7.0))
    lab = organ.astype(np.uint8)
    rows = {}
    mid = g.shape[2] // 2
    for span in (10, g.shape[2] // 2):
        k0, k1 = mid - span, mid + span
        gc = _crop(g, k0, k1)
        f = measure_planes([(lab[..., k0:k1], {1: ["organ"]})], gc,
                           sections=body_sections(body[..., k0:k1], gc))["organ"]
        body_ml = float(np.count_nonzero(body[..., k0:k1])) * gc.voxel_volume_mm3 / 1000
        assert not f.truncated and f.body_size_ml is not None
        rows[span] = (f.volume_ml / body_ml, f.body_size_ml, f.volume_ml)
    (nv_short, size_short, v1), (nv_long, size_long, v2) = rows.values()
    assert v1 == v2
    assert nv_short / nv_long > 1.5  # the paper's normalised volume measures the coverage
    assert size_short == pytest.approx(size_long, rel=1e-12)  # the body size does not
    # on the organ's slices the trunk is an ellipse of 30 x 24 mm semi-axes (the slice plane
    # of the oblique grid is tilted, so its section is a little larger)
    expected = (np.pi * 30.0 * 24.0) ** 1.5 / 1000
    assert expected * 0.97 < size_short < expected * (1.12 if name == "oblique" else 1.03)


def test_body_size_is_none_without_body() -> None:
    g = grid((10, 10, 10), spacing=(1.0, 1.0, 1.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[3:6, 3:6, 3:6] = 1
    assert body_sections(None, g) is None and body_sections(np.zeros(g.shape, bool), g) is None
    assert measure_planes([(lab, {1: ["x"]})], g)["x"].body_size_ml is None
    body = np.zeros(g.shape, bool)
    body[..., 7:] = True  # body only on slices the label does not reach
    assert measure_planes([(lab, {1: ["x"]})], g, sections=body_sections(body, g))["x"].body_size_ml is None


def test_real_scan_body_size_is_coverage_free(real_data) -> None:  # type: ignore[no-untyped-def]
    """The real TotalSegmentator CT cut to 18 of its 30 slices: the pancreas and gallbladder lie
    inside both; their body-normalised volumes change with the cut, their section-normalised do not."""
    import json

    from curator.io.formats import read_volume
    from curator.preprocess.body import body_mask

    ts = real_data / "totalsegmentator"
    img = read_volume(ts / "example_ct_sm.nii.gz", role="image")
    seg = read_volume(ts / "example_seg.nii.gz", role="label")
    classes = {int(k): [n] for k, n in json.loads((ts / "class_map.json").read_text())["total"].items()}
    body = body_mask(img.array, "CT")
    axis = int(np.argmax(np.abs(img.geometry.direction[2, :])))
    assert axis == 2
    out = {}
    for k0, k1 in ((0, img.geometry.shape[2]), (1, 21)):
        g = _crop(img.geometry, k0, k1)
        b = body[..., k0:k1]
        f = measure_planes([(seg.array[..., k0:k1], classes)], g, sections=body_sections(b, g))
        body_ml = float(np.count_nonzero(b)) * g.voxel_volume_mm3 / 1000
        out[(k0, k1)] = {t: (f[t].volume_ml / body_ml, f[t].volume_ml / f[t].body_size_ml)
                         for t in ("pancreas", "gallbladder") if not f[t].truncated}
    full, cut = out.values()
    assert set(full) == set(cut) == {"pancreas", "gallbladder"}
    for t in full:
        assert full[t][0] / cut[t][0] < 0.75  # 20 of 30 slices: the body volume shrank by a third
        assert full[t][1] == pytest.approx(cut[t][1], rel=1e-12)


def test_eccentricity_of_a_label_one_slice_thick_is_its_solids() -> None:
    """A flat 10×10-voxel square on 5 mm slices is a 10×10×5 mm slab: E = √(1 − 25/100), not the
    1 its voxel centres (no spread across the slice) would give; a cube of voxels on an
    isotropic grid is 0 however small."""
    g = grid((20, 20, 6), spacing=(1.0, 1.0, 5.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[5:15, 5:15, 2] = 1
    lab[0, 0, 0] = 2
    g1 = grid((5, 5, 5), spacing=(2.0, 2.0, 2.0))
    one = np.zeros(g1.shape, np.uint8)
    one[2, 2, 2] = 1
    out = measure_label_map(lab, g, {1: "flat", 2: "voxel"})
    assert out["flat"].eccentricity == pytest.approx(np.sqrt(1 - 25 / 100), abs=1e-9)
    assert out["voxel"].eccentricity == pytest.approx(np.sqrt(1 - 1 / 25), abs=1e-9)
    assert measure_label_map(one, g1, {1: "dot"})["dot"].eccentricity == pytest.approx(0.0, abs=1e-6)
