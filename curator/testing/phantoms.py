"""Synthetic abdominal phantoms defined in world space (RAS mm), voxelised onto any grid.

A :class:`Subject` is a seeded set of organ shapes; :func:`render` puts it on a grid of
any shape, spacing and orientation, so two renders of one subject agree in physical
space (what geometry tests need) and different subjects share anatomy and protocol but
not their scans (what duplicate detection must not confuse).

>>> s = Subject.random(seed=3)
>>> g = grid((48, 40, 24), spacing=(8.0, 8.0, 12.0), orientation="LPS")
>>> img, lab = render(s, g, modality="CT", seed=0)
>>> img.shape == lab.shape == (48, 40, 24) and bool(lab.max() > 0)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from curator.io.volume import Geometry

# structure name -> (label code in a "full" phantom map, CT HU, MR value)
STRUCTURES: dict[str, tuple[int, float, float]] = {
    "liver": (1, 105.0, 420.0),
    "spleen": (2, 120.0, 480.0),
    "kidney_right": (3, 160.0, 600.0),
    "kidney_left": (4, 160.0, 600.0),
    "pancreas": (5, 45.0, 380.0),
    "aorta": (6, 220.0, 150.0),
    "vertebrae": (7, 650.0, 90.0),
    "kidney_tumor": (8, 85.0, 700.0),
    "kidney_cyst": (9, 8.0, 900.0),
}
BODY_HU, FAT_HU, AIR_HU = 35.0, -100.0, -1000.0
BODY_MR, FAT_MR, AIR_MR = 250.0, 800.0, 5.0
_AXES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass(frozen=True)
class Shape:
    kind: str  # "ellipsoid" | "cylinder" (along z)
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float = 0.0  # rotation about z, radians


@dataclass(frozen=True)
class Subject:
    """One synthetic patient: body outline and organ shapes in RAS millimetres."""

    body: tuple[float, float]  # semi-axes (x, y) of the abdominal wall, mm
    fat: float
    shapes: dict[str, Shape] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def random(cls, seed: int, tumor: bool = True, cyst: bool = True) -> Subject:
        r = np.random.default_rng(seed)

        def j(v: float, s: float) -> float:
            return float(v + r.normal(0, s))

        shapes = {
            "liver": Shape("ellipsoid", (j(70, 6), j(15, 5), j(45, 8)), (j(75, 6), j(62, 5), j(58, 6)), j(0.3, 0.1)),
            "spleen": Shape("ellipsoid", (j(-88, 5), j(-25, 5), j(55, 8)), (j(30, 3), j(25, 3), j(45, 5)),
                            j(-0.4, 0.1)),
            "kidney_right": Shape("ellipsoid", (j(62, 4), j(-55, 4), j(-10, 6)), (j(26, 2), j(22, 2), j(48, 4)),
                                  j(0.3, 0.1)),
            "kidney_left": Shape("ellipsoid", (j(-62, 4), j(-55, 4), j(0, 6)), (j(26, 2), j(22, 2), j(48, 4)),
                                 j(-0.3, 0.1)),
            "pancreas": Shape("ellipsoid", (j(-12, 4), j(-8, 4), j(10, 5)), (j(55, 4), j(13, 2), j(16, 2)),
                              j(0.2, 0.1)),
            "aorta": Shape("cylinder", (j(-14, 2), j(-42, 2), 0.0), (j(11, 1), j(11, 1), 1e9)),
            "vertebrae": Shape("cylinder", (0.0, j(-78, 2), 0.0), (j(17, 1), j(15, 1), 1e9)),
        }
        side = "kidney_right" if r.random() < 0.5 else "kidney_left"
        k = shapes[side]
        if tumor:
            rad = float(r.uniform(9, 16))
            shapes["kidney_tumor"] = Shape("ellipsoid", (k.center[0] + np.sign(k.center[0]) * 12, k.center[1],
                                                         k.center[2] + 15), (rad, rad, rad))
        if cyst:
            rad = float(r.uniform(5, 8))
            shapes["kidney_cyst"] = Shape("ellipsoid", (k.center[0], k.center[1] - 6, k.center[2] - 25),
                                          (rad, rad, rad))
        return cls(body=(j(165, 10), j(115, 8)), fat=j(18, 3), shapes=shapes, seed=seed)


def grid(shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: str = "RAS",
         center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Geometry:
    """A grid of ``shape`` with axes along ``orientation`` (e.g. 'LPS', 'IPL'), centred on ``center``."""
    a = np.zeros((4, 4))
    a[3, 3] = 1.0
    for col, code in enumerate(orientation.upper()):
        world, sign = _AXES[code]
        a[world, col] = sign * spacing[col]
    half = (np.asarray(shape, dtype=np.float64) - 1) / 2
    a[:3, 3] = np.asarray(center) - a[:3, :3] @ half
    return Geometry.from_affine(shape, a)


def world_coords(g: Geometry) -> NDArray[np.float64]:
    """(3, *shape) world coordinates of every voxel centre."""
    idx = np.indices(g.shape, dtype=np.float64).reshape(3, -1)
    m = g.matrix
    return (m[:3, :3] @ idx + m[:3, 3:4]).reshape(3, *g.shape)


def _inside(s: Shape, xyz: NDArray[np.float64]) -> NDArray[np.bool_]:
    x, y, z = xyz[0] - s.center[0], xyz[1] - s.center[1], xyz[2] - s.center[2]
    c, sn = np.cos(s.angle), np.sin(s.angle)
    xr, yr = c * x + sn * y, -sn * x + c * y
    q = (xr / s.radii[0]) ** 2 + (yr / s.radii[1]) ** 2
    if s.kind == "ellipsoid":
        q = q + (z / s.radii[2]) ** 2
    return np.asarray(q <= 1.0)


def structure_masks(subject: Subject, g: Geometry) -> dict[str, NDArray[np.bool_]]:
    """Binary mask of every structure on grid ``g`` (tumour and cyst carved out of their kidney)."""
    xyz = world_coords(g)
    body = ((xyz[0] / subject.body[0]) ** 2 + (xyz[1] / subject.body[1]) ** 2) <= 1.0
    masks = {name: _inside(s, xyz) & body for name, s in subject.shapes.items()}
    for lesion in ("kidney_tumor", "kidney_cyst"):
        if lesion in masks:
            for k in ("kidney_left", "kidney_right"):
                masks[k] &= ~masks[lesion]
    masks["liver"] &= ~(masks["kidney_right"] | masks.get("kidney_tumor", False))
    return masks


def render(subject: Subject, g: Geometry, modality: str = "CT", seed: int = 0,
           noise: float = 12.0) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Image (HU for CT, arbitrary units for MR) and a label map with :data:`STRUCTURES` codes."""
    rng = np.random.default_rng(seed)
    xyz = world_coords(g)
    rr = (xyz[0] / subject.body[0]) ** 2 + (xyz[1] / subject.body[1]) ** 2
    inner = ((xyz[0] / (subject.body[0] - subject.fat)) ** 2 + (xyz[1] / (subject.body[1] - subject.fat)) ** 2)
    ct = modality.upper() == "CT"
    img = np.full(g.shape, AIR_HU if ct else AIR_MR, dtype=np.float32)
    img[rr <= 1.0] = FAT_HU if ct else FAT_MR
    img[inner <= 1.0] = BODY_HU if ct else BODY_MR
    lab = np.zeros(g.shape, dtype=np.uint8)
    masks = structure_masks(subject, g)
    for name in ("vertebrae", "aorta", "pancreas", "spleen", "liver", "kidney_right", "kidney_left",
                 "kidney_tumor", "kidney_cyst"):
        if name in masks:
            code, hu, mr = STRUCTURES[name]
            img[masks[name]] = hu if ct else mr
            lab[masks[name]] = code
    # texture: smooth field in world-ish units, then scanner noise
    tex = ndimage.gaussian_filter(rng.normal(0, 1, g.shape).astype(np.float32), sigma=1.5)
    tex *= (noise * 1.5) / max(float(tex.std()), 1e-6)
    body = rr <= 1.0
    img[body] += tex[body] + rng.normal(0, noise, int(body.sum())).astype(np.float32)
    if not ct:
        img = np.clip(img, 0, None)
        img *= np.float32(1.0 + 0.15 * (xyz[1] / subject.body[1]))  # bias field
    return img, lab


def binary_label(lab: NDArray[np.uint8], names: list[str]) -> NDArray[np.uint8]:
    """A label map 1..n for ``names`` (in order) from a full phantom map."""
    out = np.zeros_like(lab)
    for i, n in enumerate(names, start=1):
        out[lab == STRUCTURES[n][0]] = i
    return out


def remap(lab: NDArray[np.uint8], mapping: dict[str, int]) -> NDArray[Any]:
    """A label map with the caller's codes (structure name -> value; several names may share one)."""
    out = np.zeros(lab.shape, dtype=np.uint16 if max(mapping.values(), default=0) > 255 else np.uint8)
    for n, v in mapping.items():
        out[lab == STRUCTURES[n][0]] = v
    return out
