"""Dedup on the real samples (skips without ../shared/data/real)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.dedup.detect import DetectSettings, detect
from curator.dedup.features import HashSettings, scan_features
from curator.dedup.search import SearchSettings
from curator.dedup.verify import VerifySettings, accepts, compare
from curator.io.formats import read_volume
from curator.testing import perturb as P

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real(real_data: Path) -> dict:
    s = HashSettings()
    out = {}
    for name, rel, role in [("ct_sm", "totalsegmentator/example_ct_sm.nii.gz", "image"),
                            ("ct_dicom", "totalsegmentator/example_ct_dicom", "image"),
                            ("mr_sm", "totalsegmentator/example_mr_sm.nii.gz", "image"),
                            ("seg_ct_sm", "totalsegmentator/example_seg.nii.gz", "label"),
                            ("brain1", "pyradiomics/brain1_image.nrrd", "image"),
                            ("brain2", "pyradiomics/brain2_image.nrrd", "image")]:
        v = read_volume(real_data / rel, role=role)
        out[name] = (v.geometry, v.array, scan_features(v.array, v.geometry, s))
    g, a, _ = out["ct_sm"]
    g2, a2 = P.offset(*P.resample(*P.keep_fraction(g, a, 2, 0.5, 0.8), (1.5, 1.5, 5.0)), 1024)
    out["ct_sm_copy"] = (g2, a2, scan_features(a2, g2, s))
    return out


def test_example_ct_dicom_and_example_ct_sm_are_not_paired(real: dict) -> None:
    m = compare(real["ct_sm"][2].thumbnail, real["ct_dicom"][2].thumbnail)
    assert not accepts(m, VerifySettings())
    pairs = detect({k: real[k][2] for k in ("ct_sm", "ct_dicom")}, DetectSettings())
    assert not any(p.accepted for p in pairs)


def test_real_distinct_scans_stay_apart_and_a_real_copy_is_found(real: dict) -> None:
    pairs = detect({k: v[2] for k, v in real.items()}, DetectSettings())
    accepted = sorted((p.a, p.b) for p in pairs if p.accepted)
    assert accepted == [("ct_sm", "ct_sm_copy")]  # brain1/brain2 (same protocol) and the label map are apart


def test_small_crops_are_found_and_their_label_maps_stay_apart(real_data: Path) -> None:
    """Crops of an organ (a 41×34×39 mm prostate phantom, a 30×80×44 mm breast MR) hold too few
    voxels for the 64-bit hashes once resampled or z-cropped: the small-scan tier proposes them,
    verification confirms; each crop's own label map is never joined (few levels vs many)."""
    s = HashSettings()
    feats, scans = {}, {}
    for name, rel, role in [("prostate", "pyradiomics/prostate_phantom_subvolume.nrrd", "image"),
                            ("prostate_label", "pyradiomics/prostate_phantom_subvolume-label.nrrd", "label"),
                            ("breast1", "pyradiomics/breast1_image.nrrd", "image"),
                            ("breast1_label", "pyradiomics/breast1_label.nrrd", "label")]:
        v = read_volume(real_data / rel, role=role)
        scans[name] = (v.geometry, v.array)
        feats[name] = scan_features(v.array, v.geometry, s)
    copies = {"prostate": {"r3": lambda g, a: P.resample(g, a, (3.0, 3.0, 3.0)),
                           "z25": lambda g, a: P.keep_fraction(g, a, 2, 0.25, 0.5)},
              "breast1": {"r2": lambda g, a: P.resample(g, a, (2.0, 2.0, 2.0)),
                          "z25": lambda g, a: P.keep_fraction(g, a, 2, 0.25, 0.5)}}
    for src, made in copies.items():
        for name, make in made.items():
            g2, a2 = make(*scans[src])
            feats[f"{src}:{name}"] = scan_features(a2, g2, s)
    pairs = detect(feats, DetectSettings())
    groups = {frozenset(c) for c in _components(feats, pairs)}
    assert frozenset({"prostate", "prostate:r3", "prostate:z25"}) in groups
    assert frozenset({"breast1", "breast1:r2", "breast1:z25"}) in groups
    assert not any(n.endswith("_label") for g in groups for n in g)
    assert any("small" in p.candidate.tiers and p.accepted for p in pairs)
    without = detect(feats, DetectSettings(search=SearchSettings(small_neighbours=0)))
    assert {frozenset(c) for c in _components(feats, without)} != groups, \
        "the hash tiers alone find these copies: the test no longer exercises the small-scan tier"


@pytest.mark.parametrize("copy", ["resample_5mm", "resample_0.7x0.7x5mm", "clip_p1_p99", "clip_p10_p90"])
def test_real_mr_copies_are_proposed_by_the_hashes_each_alone_with_its_original(real: dict, copy: str) -> None:
    """The real abdominal MR's body threshold falls between its dark and bright tissues: a copy
    resampled to 5 mm or clipped moves it and once reshaped the body mask enough to move the
    hashes beyond the search radii (no candidate at all). The hashes are now framed on the body's
    filled outline (verification still compares the tissue)."""
    g, a, f = real["mr_sm"]
    lo1, lo10, hi90, hi99 = (float(x) for x in np.percentile(a, [1, 10, 90, 99]))
    made = {"resample_5mm": lambda: P.resample(g, a, (5.0, 5.0, 5.0)),
            "resample_0.7x0.7x5mm": lambda: P.resample(g, a, (0.7, 0.7, 5.0)),
            "clip_p1_p99": lambda: P.clip(g, a, lo1, hi99), "clip_p10_p90": lambda: P.clip(g, a, lo10, hi90)}
    g2, a2 = made[copy]()
    pairs = detect({"mr_sm": f, "copy": scan_features(a2, g2, HashSettings())}, DetectSettings())
    assert [p.accepted for p in pairs] == [True]
    assert pairs[0].candidate.tiers & {"global", "slab"}


@pytest.mark.parametrize("scan", ["ct_sm", "ct_dicom"])
@pytest.mark.parametrize("width", ["quarter", "10 voxels"])
def test_real_ct_padded_with_zero_is_found_alone_with_its_original(real: dict, scan: str, width: str) -> None:
    """np.pad / MONAI SpatialPad / SimpleITK resampling pad with 0 — water in HU, above the body
    threshold: the ring joined the body (and, filled, the whole field of view) and moved every
    body-framed hash; it is now recognised as padding and left out of the body."""
    from curator.dedup.canonical import canonicalize, padding_mask
    from curator.io.volume import Geometry

    g, a, f = real[scan]
    px, py = (a.shape[0] // 4, a.shape[1] // 4) if width == "quarter" else (10, 10)
    b = np.pad(a, ((px, px), (py, py), (0, 0)), constant_values=0)
    m = g.matrix.copy()
    m[:3, 3] = g.voxel_to_world(np.array([-px, -py, 0.0]))[0]
    gb = Geometry.from_affine(b.shape, m)
    c = canonicalize(b, gb)
    assert padding_mask(c.array, c.threshold).any()
    assert not padding_mask(canonicalize(a, g).array, c.threshold).any()
    pairs = detect({scan: f, "padded": scan_features(b, gb, HashSettings())}, DetectSettings())
    assert [p.accepted for p in pairs] == [True]
    assert pairs[0].candidate.tiers & {"global", "slab"}


def test_a_clipping_bound_on_the_border_is_not_padding(real: dict) -> None:
    """Fat clipped to a narrow window's lower bound, touching the field of view's edge, is one
    exact value on the border too — but it is the range's end, so it stays body."""
    from curator.dedup.canonical import canonicalize, padding_mask

    g, a, _ = real["ct_sm"]
    g2, a2 = P.clip(g, a, -160, 240)
    c = canonicalize(a2, g2)
    assert not padding_mask(c.array, -700.0).any()
    lifted = c.array.copy()
    lifted[lifted <= -160] = 0.0  # the same region, now strictly inside the range: padding
    lifted[0, 0, 0] = -1000.0
    assert padding_mask(lifted, -700.0).any()


def _components(feats: dict, pairs: list) -> list[set[str]]:
    from curator.dedup.group import components

    return [set(c) for c in components(sorted(feats), [(p.a, p.b) for p in pairs if p.accepted])]


def test_a_label_map_is_told_from_its_scan_by_its_few_levels(real_data: Path, monkeypatch) -> None:
    """Resampled to 3 mm, the prostate phantom is smooth enough that its label map correlates
    with it like a copy would. The level count is what keeps them apart."""
    from curator.dedup import verify

    s = HashSettings()
    img = read_volume(real_data / "pyradiomics/prostate_phantom_subvolume.nrrd", role="image")
    lab = read_volume(real_data / "pyradiomics/prostate_phantom_subvolume-label.nrrd", role="label")
    g3, a3 = P.resample(img.geometry, img.array, (3.0, 3.0, 3.0))
    ta = scan_features(a3, g3, s).thumbnail
    tb = scan_features(lab.array, lab.geometry, s).thumbnail
    assert verify.levels(tb) < verify.MIN_LEVEL_RATIO * verify.levels(ta)
    assert not accepts(compare(ta, tb), VerifySettings())
    monkeypatch.setattr(verify, "MIN_LEVEL_RATIO", 0.0)
    assert accepts(compare(ta, tb), VerifySettings()), "without the level check the label map passes as a copy"


@pytest.mark.parametrize("name", ["brain1", "brain2"])
def test_a_defaced_real_brain_is_still_found_though_its_face_parts_do_not_align(real: dict, name: str) -> None:
    """Defacing zeroes an anterior-inferior block (here ≈ 10 % of the head): the parts holding the
    face find no shared alignment, the rest agree, so ``warp`` (a median over the parts) stays
    small. Each part's own shift is noise there; the largest of them is several voxels."""
    from curator.dedup.canonical import body_threshold, ras_view

    g, a, f = real[name]
    view, gv = ras_view(a, g)
    v = np.array(view)
    idx = np.nonzero(v > body_threshold(v))
    y0, y1, z0, z1 = idx[1].min(), idx[1].max(), idx[2].min(), idx[2].max()
    v[:, int(y1 - 0.25 * (y1 - y0)):, : int(z0 + 0.3 * (z1 - z0)) + 1] = 0
    m = compare(f.thumbnail, scan_features(v, gv, HashSettings()).thumbnail)
    assert m.warp is not None and accepts(m, VerifySettings())
