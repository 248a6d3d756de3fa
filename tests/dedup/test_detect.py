"""Hashing, search and verification on synthetic patients and their perturbed copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.dedup.detect import DetectSettings, detect
from curator.dedup.features import HashSettings, scan_features
from curator.dedup.verify import VerifySettings, accepts, compare
from curator.io.volume import Geometry
from curator.testing import perturb as P
from curator.testing.convert import roundtrip
from curator.testing.dedup_suite import t2_of_phantom
from curator.testing.phantoms import binary_label


def ham(a: int, b: int) -> int:
    return (a ^ b).bit_count()


COPIES = {
    "resample_2mm": lambda g, a, t: P.resample(g, a, (2.0, 2.0, 3.0)),
    "resample_8mm": lambda g, a, t: P.resample(g, a, (8.0, 8.0, 8.0)),
    "offset_clip": lambda g, a, t: P.clip(*P.offset(g, a, 1024), 0, 2024),
    "noise_float": lambda g, a, t: P.add_noise(g, a, 25.0, seed=4),
    "crop_body": lambda g, a, t: P.crop_to_body(g, a, -500),
    "zcrop_25": lambda g, a, t: P.keep_fraction(g, a, 2, 0.25, 0.7),
    "flip_permute": lambda g, a, t: P.permute(*P.flip_axis(g, a, 0), (2, 1, 0)),
    "stale_origin": lambda g, a, t: P.stale_origin(g, a, (slice(4, 60), slice(3, 50), slice(5, 30))),
    "dicom_flip": lambda g, a, t: roundtrip(*P.flip_axis(g, a, 1), "dicom", t / "dicom"),
    # 3D-IRCADb inside LiTS: the same voxels, the spacing rewritten (only the exact hash can tell)
    "spacing_rewritten": lambda g, a, t: (Geometry.from_affine(a.shape, g.matrix @ np.diag([1.3, 1.3, 0.7, 1.0])), a),
}


@pytest.fixture(scope="module")
def pool(phantoms, tmp_path_factory):
    """Features of four phantoms, copies of p11, p11's label map and a T2-like twin of an MR phantom."""
    tmp: Path = tmp_path_factory.mktemp("copies")
    s = HashSettings()
    (g, a), lab = phantoms["p11"]
    out = {k: scan_features(aa, gg, s) for k, ((gg, aa), _) in phantoms.items()}
    for name, make in COPIES.items():
        g2, a2 = make(g, a, tmp)
        out[f"p11:{name}"] = scan_features(a2, g2, s)
    out["p11:labels"] = scan_features(binary_label(lab, ["liver", "spleen", "kidney_left", "kidney_right"]), g, s)
    return out


@pytest.fixture(scope="module")
def pairs(pool):
    return detect(pool, DetectSettings())


def groups_of(pairs):
    from curator.dedup.group import components

    nodes = sorted({x for p in pairs for x in (p.a, p.b)})
    return components(nodes, [(p.a, p.b) for p in pairs if p.accepted])


def test_every_copy_is_grouped_with_its_original(pairs):
    groups = groups_of(pairs)
    assert len(groups) == 1
    assert groups[0] == sorted(["p11", *(f"p11:{k}" for k in COPIES)])


def test_a_copy_with_rewritten_spacing_is_joined_by_the_exact_hash_alone(pairs):
    p = next(p for p in pairs if {p.a, p.b} == {"p11", "p11:spacing_rewritten"})
    assert p.accepted and "exact" in p.candidate.tiers
    assert p.match is None or not accepts(p.match, VerifySettings())  # millimetres no longer line up


def test_different_patients_of_one_protocol_and_a_label_map_stay_apart(pairs):
    grouped = set(groups_of(pairs)[0])
    assert not grouped & {"p12", "p13", "p14", "p11:labels"}


@pytest.mark.parametrize("name", ["resample_2mm", "offset_clip", "noise_float", "crop_body", "flip_permute",
                                  "stale_origin", "dicom_flip"])
def test_whole_volume_copies_keep_their_global_hash(pool, name):
    assert ham(pool["p11"].phash, pool[f"p11:{name}"].phash) <= DetectSettings().search.global_radius


def test_a_z_crop_shares_slab_hashes_at_one_offset(pool):
    full, crop = pool["p11"].slabs, pool["p11:zcrop_25"].slabs
    offsets = []
    for h, z in zip(crop.hashes, crop.z_mm, strict=True):
        d = [ham(h, x) for x in full.hashes]
        j = int(np.argmin(d))
        if d[j] <= 4:
            offsets.append(full.z_mm[j] - z)
    assert len(offsets) >= 2
    assert np.ptp(offsets) <= 7.5  # they agree on where the crop sits


def test_verification_recovers_a_stale_origin(pool):
    m = compare(pool["p11"].thumbnail, pool["p11:stale_origin"].thumbnail)
    assert accepts(m, VerifySettings())
    # the crop starts at voxel (4, 3, 5) of an LPS grid but kept the old origin: the header is off by that much
    assert np.allclose(np.abs(m.offset_mm), (20.0, 15.0, 35.0), atol=3.0)


def test_verification_rejects_a_second_sequence_of_one_patient(mr_phantom):
    (g, a), lab = mr_phantom
    s = HashSettings()
    t1, t2 = scan_features(a, g, s), scan_features(t2_of_phantom(a, lab), g, s)
    assert not accepts(compare(t1.thumbnail, t2.thumbnail), VerifySettings())
    pairs = detect({"t1": t1, "t2": t2}, DetectSettings())
    assert not any(p.accepted for p in pairs)


def test_verification_rejects_different_patients(pool):
    m = compare(pool["p11"].thumbnail, pool["p12"].thumbnail)
    assert not accepts(m, VerifySettings())
    assert m.detail < 0.3


def test_verification_compares_tissue_not_the_filled_outline(monkeypatch) -> None:
    """Two synthetic MR patients of the demo's follow-up protocol (DemoLiverMR): the hashes are
    framed on the body's filled outline, but verification must compare the tissue mask — over
    the outline these two different patients correlated like copies (score 0.55, detail 0.57)
    and were grouped."""
    from curator.dedup import features, thumbnail
    from curator.testing.phantoms import Subject, grid, render

    g = grid((64, 56, 32), (5.0, 5.0, 8.0), "RAS", center=(0.0, -10.0, 20.0))
    scans = [np.rint(render(Subject.random(760 + p, tumor=False, cyst=False), g, "MR", seed=770 + 10 * p)[0])
             .astype(np.int16) for p in (0, 4)]
    feats = [scan_features(a, g, HashSettings()) for a in scans]
    texture_only = VerifySettings(max_warp=float("inf"))  # the tissue mask must keep them apart by itself
    assert not accepts(compare(feats[0].thumbnail, feats[1].thumbnail), texture_only)
    monkeypatch.setattr(features, "make_thumbnail",
                        lambda c: thumbnail.Thumbnail(thumbnail.quantiles(c.array), c.outline.copy(), c.spacing, c.origin))
    outlined = [scan_features(a, g, HashSettings()) for a in scans]
    assert accepts(compare(outlined[0].thumbnail, outlined[1].thumbnail), texture_only), \
        "over the outline these two patients pass: the test no longer guards the tissue mask"


def test_near_twin_patients_pass_on_texture_but_their_parts_do_not_align() -> None:
    """Two synthetic MR patients the generator drew as near-twins (body axes 2–8 mm apart, liver
    centres 1–10 mm): on the coarse grid their organ edges coincide and the texture correlates
    like a copy's (detail 0.69). A copy is the same scan moved (and maybe rescaled), so all its
    parts agree on one alignment; these two need their parts moved apart by about a voxel."""
    from curator.testing.dedup_suite import phantom_patients

    (g1, a1), _ = next(iter(phantom_patients(1, "MR").values()))
    (g2, a2), _ = next(iter(phantom_patients(1, "MR", seed0=760, shape=(64, 56, 32), spacing=(5.0, 5.0, 8.0),
                                             orientation="RAS", lesions=False).values()))
    s = HashSettings()
    m = compare(scan_features(a1, g1, s).thumbnail, scan_features(np.rint(a2).astype(np.int16), g2, s).thumbnail)
    v = VerifySettings()
    assert m.score >= v.min_score and m.detail >= v.min_detail and m.coverage >= v.min_coverage, \
        "the twins no longer pass on texture: the test no longer shows what warp adds"
    assert m.warp is not None and m.warp > v.max_warp
    assert not accepts(m, v)


def test_warp_stays_small_for_a_moved_or_rescaled_copy_and_grows_with_a_deformation(phantoms) -> None:
    (g, a), _ = phantoms["p11"]
    s = HashSettings()
    ref = scan_features(a, g, s).thumbnail
    g2, a2 = P.crop(g, a, (slice(3, a.shape[0]), slice(0, a.shape[1] - 4), slice(2, a.shape[2])))
    rescaled = Geometry.from_affine(a2.shape, g2.matrix @ np.diag([0.98, 0.98, 0.98, 1.0]))
    moved = compare(ref, scan_features(a2, rescaled, s).thumbnail)
    assert moved.warp is not None and moved.warp <= 0.45
    # the same voxels, pushed by a smooth displacement of up to 2 voxels of the analysis grid
    grid_step = np.asarray(ref.spacing) / np.asarray(g.spacing)
    idx = np.indices(a.shape, dtype=np.float64)
    push = 2.0 * grid_step[:, None, None, None] * np.sin(2 * np.pi * idx[[1, 2, 0]] / np.asarray(a.shape)[[1, 2, 0], None, None, None])
    from scipy import ndimage

    warped = ndimage.map_coordinates(a.astype(np.float32), idx + push, order=1, mode="nearest")
    deformed = compare(ref, scan_features(warped, g, s).thumbnail)
    assert deformed.warp is not None and deformed.warp > VerifySettings().max_warp
