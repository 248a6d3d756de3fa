"""The report's QC section as a reviewer reads it: pictures that go through the label."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def panels(uri: str) -> list[np.ndarray]:
    im = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")).astype(int)
    w = im.shape[1] // 3
    return [im[:, i * w:(i + 1) * w] for i in range(3)]


def red(a: np.ndarray) -> int:
    return int(((a[..., 0] > a[..., 1] + 60) & (a[..., 0] > a[..., 2] + 60)).sum())


def grey(a: np.ndarray) -> int:
    return int(((a.max(-1) - a.min(-1) < 8) & (a[..., 0] > 60) & (a[..., 0] < 200)).sum())


@pytest.mark.parametrize("with_image", [True, False])
def test_every_view_goes_through_a_label_in_pieces(tmp_path: Path, with_image: bool) -> None:
    """Slices went through the label's centroid: between a bilateral tumour's two halves the
    sagittal panel was empty. Without an image the label was red on plain black; the case's
    other labels are now the grey background."""
    from curator.report.gallery import label_figure
    from curator.store import CaseStore
    from curator.testing.phantoms import grid

    g = grid((40, 30, 20), spacing=(4.0, 4.0, 5.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[5:15, 8:22, 5:15] = lab[25:35, 8:22, 5:15] = 1  # two kidneys
    lab[6:12, 12:18, 8:12] = lab[28:33, 10:14, 6:10] = 2  # a tumour in each: the centroid lies between them
    image = np.where(lab > 0, 40, -100).astype(np.int16) if with_image else None
    CaseStore.create(tmp_path / "c.zarr", geometry=g, attrs={"case_id": "c", "modality": "CT"}, image=image,
                     body=None if image is None else image > -500, labels=[(lab, {1: ["kidney"], 2: ["kidney_tumor"]})])
    uri = label_figure(tmp_path / "c.zarr", "kidney_tumor", "original", "c · kidney_tumor")
    assert uri is not None
    views = panels(uri)
    assert all(red(v) > 20 for v in views), [red(v) for v in views]
    if not with_image:
        assert all(grey(v) > 20 for v in views), [grey(v) for v in views]
