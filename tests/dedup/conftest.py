"""Small synthetic scans for the dedup tests: phantoms of one protocol, rendered once per session."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from curator.io.volume import Geometry
from curator.testing.phantoms import Subject, grid, render

Scan = tuple[Geometry, Any]


@pytest.fixture(scope="session")
def phantoms() -> dict[str, tuple[Scan, Any]]:
    """Four different synthetic patients, one CT protocol: {name: ((geometry, int16 image), labels)}."""
    g = grid((64, 52, 32), (5.0, 5.0, 7.0), "LPS", center=(0.0, -10.0, 20.0))
    out = {}
    for seed in (11, 12, 13, 14):
        img, lab = render(Subject.random(seed), g, "CT", seed=seed)
        out[f"p{seed}"] = ((g, np.rint(img).astype(np.int16)), lab)
    return out


@pytest.fixture(scope="session")
def mr_phantom() -> tuple[Scan, Any]:
    g = grid((64, 52, 32), (5.0, 5.0, 7.0), "RAS", center=(0.0, -10.0, 20.0))
    img, lab = render(Subject.random(21), g, "MR", seed=21)
    return (g, img), lab
