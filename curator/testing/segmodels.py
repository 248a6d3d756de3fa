"""Fast, deterministic stand-ins for segmentation models, and phantom case stores to run them on.

:class:`BandModel` "segments" a term wherever the (smoothed) input lies in the term's
intensity band — no training, so pseudolabel tests know what to expect. Members of a test
ensemble get slightly different bands and smoothing, so they disagree at boundaries like
real models do.

>>> import torch
>>> m = BandModel(bands=[[90.0, 130.0]])
>>> m(torch.full((1, 1, 8, 8, 8), 105.0)).argmax(1).unique().tolist()
[1]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from curator.io.volume import Geometry
from curator.store import CaseStore
from curator.testing.phantoms import STRUCTURES, Subject, grid, remap, render

BAND_TERMS = ["liver", "spleen", "pancreas", "aorta"]
BANDS = [[97.0, 112.0], [113.0, 135.0], [35.0, 60.0], [195.0, 250.0]]


class BandModel(nn.Module):
    """Logits: background 0, term k = sharpness × distance inside band k (negative outside)."""

    def __init__(self, bands: list[list[float]], smooth: int = 3, sharpness: float = 0.5) -> None:
        super().__init__()
        self.lo: torch.Tensor
        self.hi: torch.Tensor
        self.register_buffer("lo", torch.tensor([b[0] for b in bands]).view(1, -1, 1, 1, 1))
        self.register_buffer("hi", torch.tensor([b[1] for b in bands]).view(1, -1, 1, 1, 1))
        self.smooth, self.sharpness = smooth, sharpness
        self.norm = nn.GroupNorm(1, 1)  # a normalisation layer (unused in the output) for ETTA plumbing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth > 1:
            x = F.avg_pool3d(x, self.smooth, stride=1, padding=self.smooth // 2, count_include_pad=False)
        inside = torch.minimum(x - self.lo, self.hi - x) * self.sharpness
        return torch.cat([torch.zeros_like(x), inside], 1)


def band_specs(n: int = 3, patch: tuple[int, int, int] = (32, 32, 16)) -> list[dict[str, Any]]:
    """``n`` ensemble members (spec dicts) with jittered bands and smoothing."""
    out = []
    for i in range(n):
        jitter = [-3.0, 0.0, 3.0][i % 3]
        bands = [[lo + jitter, hi + jitter] for lo, hi in BANDS]
        out.append({"name": f"band{i}", "factory": "curator.testing.segmodels:BandModel",
                    "kwargs": {"bands": bands, "smooth": 1 + 2 * (i % 2)}, "terms": BAND_TERMS,
                    "patch": list(patch), "intensity": {"mean": 0.0, "std": 1.0}, "divisor": 1})
    return out


def write_phantom_store(path: Path, seed: int, annotated: dict[str, int], *, shape: tuple[int, int, int] = (40, 32, 20),
                        spacing: tuple[float, float, float] = (9.0, 9.0, 14.0), orientation: str = "RAS",
                        noise: float = 2.0, normalisation: dict[str, Any] | None = None) -> CaseStore:
    """A case store of a phantom: HU image and an original layer with ``annotated`` (term -> code)."""
    s = Subject.random(seed)
    g: Geometry = grid(shape, spacing, orientation, center=(0.0, -10.0, 20.0))
    img, lab = render(s, g, "CT", seed=seed, noise=noise)
    labels = [(remap(lab, annotated), {v: [k] for k, v in annotated.items()})] if annotated else None
    return CaseStore.create(path, geometry=g, attrs={"case_id": path.stem, "modality": "CT",
                                                     "normalisation": normalisation or {}},
                            image=np.rint(img).astype(np.int16), labels=labels)


def phantom_truth(seed: int, term: str, shape: tuple[int, int, int] = (40, 32, 20),
                  spacing: tuple[float, float, float] = (9.0, 9.0, 14.0), orientation: str = "RAS") -> Any:
    """The phantom's true mask of ``term`` on the grid :func:`write_phantom_store` uses."""
    g = grid(shape, spacing, orientation, center=(0.0, -10.0, 20.0))
    _, lab = render(Subject.random(seed), g, "CT", seed=seed, noise=0.0)
    return lab == STRUCTURES[term][0]
