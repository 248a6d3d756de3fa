"""``curator dedup report``: a copy is drawn like its original — its grey window (a copy clipped
to a window was drawn almost black) and the point its slices go through (a z-cropped copy was
shown 6 mm off although a slice common to all members existed): tester 28 #6 and #7."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.dedup.report import Shown, _slices, shown_point, window
from curator.io.volume import Geometry


def _black(brain: np.ndarray, lo: float) -> float:
    """The share of ``brain``'s values a window starting at ``lo`` draws black."""
    return float(np.mean(brain <= lo))


def _head(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A head-like MR: a large air background (0), a brain around 350 and a bright scalp
    (450-1150), as the pyradiomics brain MRs hold; and the brain's mask."""
    rng = np.random.default_rng(seed)
    shape = (128, 128, 8)
    x, y = np.meshgrid(np.arange(128) - 63.5, np.arange(128) - 63.5, indexing="ij")
    r = np.sqrt((x / 52) ** 2 + (y / 46) ** 2)
    brain = np.broadcast_to((r < 0.8)[..., None], shape)
    scalp = np.broadcast_to(((r >= 0.8) & (r < 1))[..., None], shape)
    img = np.zeros(shape)
    img[brain] = rng.normal(350, 40, int(brain.sum()))
    img[scalp] = rng.uniform(450, 1150, int(scalp.sum()))
    return np.clip(img, 0, None).astype(np.int16), brain


def test_a_copy_clipped_to_a_window_is_not_drawn_dark() -> None:
    """Cropped to the head and clipped to [0, 800]: 14 % of the copy's voxels sit at 800 and
    pulled Otsu's threshold (hence the window's low end) from ~270 to ~500, above the whole brain."""
    img, brain = _head()
    crop = (slice(14, 114), slice(18, 110))
    copy = np.clip(img[crop], 0, 800)
    assert float(np.mean(copy == 800)) > 0.1
    lo, _ = window(img)
    lo_copy, hi_copy = window(copy)
    assert _black(img[brain], lo) < 0.05
    assert _black(copy[brain[crop]], lo_copy) < 0.05  # the brain is grey, as in the original
    assert abs(lo_copy - lo) < 50 and hi_copy == 800.0
    # no pile at the maximum (a CT; a two-valued image, all of whose foreground is the maximum): as before
    ct = np.full((40, 40, 4), -1000, np.int16)
    ct[8:32, 8:32] = 40
    ct[18:22, 18:22] = 700
    assert window(ct) == (40.0, 700.0)
    two = np.zeros((40, 40, 4), np.int16)
    two[10:30, 10:30] = 1
    assert window(two) == (1.0, 2.0)


def test_a_real_mr_clipped_to_a_window_is_drawn_like_its_original(real_data: Path) -> None:
    import SimpleITK as sitk

    b2 = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data / "pyradiomics" / "brain2_image.nrrd")))
    copy = np.clip(b2[:, 30:230, 40:220], 0, 800)  # tester 28's Delta__d04
    lo, _ = window(b2)
    lo_copy, hi_copy = window(copy)
    tissue = b2[:, 30:230, 40:220]
    tissue = tissue[(tissue > lo) & (tissue < 800)]  # what the original draws grey, not clipped in the copy
    assert _black(tissue, lo_copy) < 0.05  # was 0.71: lo 473
    assert abs(lo_copy - lo) < 50 and hi_copy == 800.0


def _member(name: str, shape: tuple[int, int, int], z0: float, kept: bool = False,
            offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Shown:
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    aff[2, 3] = z0
    g = Geometry.from_affine(shape, aff)
    arr = np.broadcast_to(np.arange(shape[2], dtype=np.float32) * 2 + z0 + np.asarray(offset)[2], shape)
    return Shown(name, "D", kept, "", arr, g, np.asarray(offset, dtype=np.float64))


def test_the_shown_point_lies_where_every_member_reaches_it() -> None:
    """Kept: 30 slices (z 0-58 mm). A: its slices 5-13 (z 10-26), header right. B: slices 12-19
    (z 24-38) with a stale origin of 0 (offset_mm says +24). The smallest member's centre (B's,
    z 31) lies above A: A was shown 4 mm off at other anatomy, though z 24-26 is common to all."""
    members = [_member("K", (16, 16, 30), 0.0, kept=True), _member("A", (16, 16, 9), 10.0),
               _member("B", (16, 16, 8), 0.0, offset=(0.0, 0.0, 24.0))]
    p = shown_point(members)
    assert 24.0 <= p[2] <= 26.0
    shown = []
    for m in members:
        assert m.array is not None and m.geometry is not None
        axial, _, _, outside = _slices(m.array, m.geometry, m.offset, p)
        assert outside == 0.0, m.case_id
        shown.append(float(axial[0, 0]))  # the slice's z in the kept frame
    assert max(abs(z - p[2]) for z in shown) <= 1.0  # every member within half a slice of the point
    # no region common to all (A: z 0-8, B: z 40-46): the smallest member's centre, A says how far off
    members = [members[0], _member("A", (16, 16, 5), 0.0), _member("B", (16, 16, 4), 40.0)]
    p = shown_point(members)
    assert p[2] == pytest.approx(43.0)
    a = members[1]
    assert a.array is not None and a.geometry is not None and _slices(a.array, a.geometry, a.offset, p)[3] > 0
    assert np.array_equal(shown_point([Shown("X", "D", True, "", None, None, np.zeros(3), "unreadable")]), np.zeros(3))
