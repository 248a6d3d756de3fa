"""Dedup on the real samples (skips without ../shared/data/real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.dedup.detect import DetectSettings, detect
from curator.dedup.features import HashSettings, scan_features
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
