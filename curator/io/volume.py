"""Volumes and their geometry.

Convention used everywhere in curator: a volume's array is indexed ``[i, j, k]`` and its
``affine`` (4 × 4) maps voxel indices to **RAS+ world millimetres** (the NIfTI/nibabel
convention). Readers that use LPS (ITK, DICOM) convert on the way in, so geometry
compares across formats.

>>> import numpy as np
>>> g = Geometry.from_affine((4, 5, 6), np.diag([0.8, 0.8, 3.0, 1.0]))
>>> g.spacing, g.orientation
((0.8, 0.8, 3.0), 'RAS')
>>> Geometry.from_dict(g.to_dict()) == g
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import GeometryError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# voxel spacings (mm) outside this range are a unit error (metres, microns), not a scan
PLAUSIBLE_SPACING_MM = (0.01, 50.0)


def _num(v: Any) -> str:
    """Numbers as a reader writes them: ``(1.5, 1.5, 2.5)``, never ``np.float64(1.5)``."""
    return "(" + ", ".join(f"{float(x):.6g}" for x in v) + ")"


def _angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """The largest angle (degrees) between corresponding columns (axes) of two direction matrices."""
    cos = np.clip(np.sum(a * b, axis=0), -1.0, 1.0)
    return float(np.degrees(np.max(np.arccos(cos))))


def _axcodes(direction: NDArray[np.float64]) -> str:
    """Orientation code (e.g. 'RAS', 'LPS') from 3 × 3 direction cosines (columns = axes)."""
    labels = (("L", "R"), ("P", "A"), ("I", "S"))
    codes = []
    for col in range(3):
        v = direction[:, col]
        world = int(np.argmax(np.abs(v)))
        codes.append(labels[world][1] if v[world] > 0 else labels[world][0])
    return "".join(codes)


@dataclass(frozen=True)
class Geometry:
    """Shape and voxel-to-world (RAS mm) mapping of a 3-D grid."""

    shape: tuple[int, int, int]
    affine: tuple[float, ...]  # 16 numbers, row-major 4 × 4

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: NDArray[Any] | list[Any]) -> Geometry:
        a = np.asarray(affine, dtype=np.float64).reshape(4, 4)
        if len(shape) != 3:
            raise GeometryError("not_3d", f"a 3-D grid needs 3 dimensions, got shape {tuple(shape)}")
        return cls(tuple(int(s) for s in shape), tuple(float(x) for x in a.ravel()))  # type: ignore[arg-type]

    @classmethod
    def from_lps(
        cls,
        shape: tuple[int, ...],
        spacing: tuple[float, ...],
        origin: tuple[float, ...],
        direction: tuple[float, ...],
    ) -> Geometry:
        """From ITK-style LPS spacing/origin/direction (direction row-major, columns = axes)."""
        d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        a = np.eye(4)
        a[:3, :3] = d @ np.diag(np.asarray(spacing, dtype=np.float64))
        a[:3, 3] = np.asarray(origin, dtype=np.float64)
        return cls.from_affine(shape, LPS_TO_RAS @ a)

    @property
    def matrix(self) -> NDArray[np.float64]:
        return np.asarray(self.affine, dtype=np.float64).reshape(4, 4)

    @property
    def spacing(self) -> tuple[float, float, float]:
        s = np.linalg.norm(self.matrix[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def origin(self) -> tuple[float, float, float]:
        o = self.matrix[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    @property
    def direction(self) -> NDArray[np.float64]:
        """3 × 3 direction cosines, columns = array axes, in RAS."""
        m = self.matrix[:3, :3]
        s = np.linalg.norm(m, axis=0)
        s[s == 0] = 1.0
        return m / s

    @property
    def orientation(self) -> str:
        return _axcodes(self.direction)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.matrix[:3, :3])))

    def validate(self, path: str | None = None) -> None:
        """Raise :class:`GeometryError` for zero/negative or implausible spacing (outside
        ``PLAUSIBLE_SPACING_MM``: a header in metres or microns read as millimetres) or a
        non-orthonormal direction."""
        m = self.matrix
        if not np.all(np.isfinite(m)):
            raise GeometryError("invalid_spacing", "the affine holds NaN or infinite numbers",
                                path=path, remedy="fix the file's header (sform/qform or spacing)")
        sp = np.linalg.norm(m[:3, :3], axis=0)
        if np.any(sp <= 1e-6):
            raise GeometryError("invalid_spacing", f"voxel spacing {_num(np.round(sp, 6))} has a zero axis",
                                path=path, remedy="fix the header's pixdim/spacing")
        lo, hi = PLAUSIBLE_SPACING_MM
        if np.any(sp < lo) or np.any(sp > hi):
            raise GeometryError("implausible_spacing", f"voxel spacing {_num(sp)} mm lies outside {lo:g}..{hi:g} mm "
                                "per axis: no CT/MR/PET scan has such voxels (a header whose units are not "
                                "millimetres?)", path=path,
                                remedy="fix the spacing (and its units) in the file's header, or declare a spacing "
                                "fix in the dataset YAML")
        d = self.direction
        err = float(np.max(np.abs(d.T @ d - np.eye(3))))
        if err > 1e-3:
            raise GeometryError("bad_direction",
                                f"direction cosines are not orthonormal (max |DᵀD − I| = {err:.3g})",
                                path=path, remedy="fix the header's orientation or resample the file")

    def world_to_voxel(self, points_mm: NDArray[Any]) -> NDArray[np.float64]:
        pts = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        inv = np.linalg.inv(self.matrix)
        return (inv[:3, :3] @ pts.T).T + inv[:3, 3]

    def voxel_to_world(self, idx: NDArray[Any]) -> NDArray[np.float64]:
        ijk = np.atleast_2d(np.asarray(idx, dtype=np.float64))
        m = self.matrix
        return (m[:3, :3] @ ijk.T).T + m[:3, 3]

    def mismatch(self, other: Geometry, tol_mm: float = 1e-3, tol_dir: float = 1e-4) -> str | None:
        """A description of how ``other`` differs from this grid, or ``None`` when they agree.

        Origins and voxel corners are compared in millimetres with ``tol_mm``; direction
        cosines with ``tol_dir``, except that a rotation moving no corner voxel of the grid by
        more than ``tol_mm`` agrees (headers written by two tools differ by such rounding).
        """
        if self.shape != other.shape:
            return f"shape {self.shape} vs {other.shape}"
        sa, sb = np.array(self.spacing), np.array(other.spacing)
        if np.max(np.abs(sa - sb)) > tol_mm:
            return f"spacing {_num(np.round(sa, 5))} vs {_num(np.round(sb, 5))} mm"
        if np.max(np.abs(self.direction - other.direction)) > tol_dir and (
                self.orientation != other.orientation or self.corner_shift(other) > tol_mm):
            return self._direction_difference(other, tol_mm, tol_dir)
        # Corners: catch small spacing differences (and rotations) that add up over the grid.
        for p in self._corners():
            d = float(np.linalg.norm(self.voxel_to_world(p) - other.voxel_to_world(p)))
            if d > tol_mm:
                return f"voxel {tuple(int(x) for x in p)} lies {d:.4g} mm apart"
        return None

    def _corners(self) -> NDArray[np.float64]:
        """The 8 corner voxels' indices (8 × 3)."""
        far = np.array(self.shape, dtype=np.float64) - 1
        return np.array([[far[0] * i, far[1] * j, far[2] * k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])

    def corner_shift(self, other: Geometry) -> float:
        """The largest distance (mm) between the same corner voxel on the two grids."""
        c = self._corners()
        return float(np.max(np.linalg.norm(self.voxel_to_world(c) - other.voxel_to_world(c), axis=1)))

    def _direction_difference(self, other: Geometry, tol_mm: float, tol_dir: float) -> str:
        """How two grids' direction cosines differ: the axes' orientation codes when they do,
        otherwise the rotation in degrees and how far it moves the grid's far corner."""
        if self.orientation != other.orientation:
            return f"direction {self.orientation} vs {other.orientation}"
        deg = _angle_deg(self.direction, other.direction)
        return (f"direction cosines differ by {deg:.2g}° (both {self.orientation}; a corner voxel lies "
                f"{self.corner_shift(other):.2g} mm apart)")

    def axis_map(self, other: Geometry, tol_mm: float = 1e-3, tol_dir: float = 1e-4,
                 ) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]] | None:
        """How ``other`` indexes the *same voxel centres* as this grid, or ``None``.

        The permuted/flipped axes must agree with this grid's within ``tol_dir``, or move no
        corner voxel by more than ``tol_mm`` (as in :meth:`mismatch`): a rotated grid is not a
        re-indexing of this one.

        Returns ``(perm, flips)`` such that ``np.flip(other_array.transpose(perm), flipped axes)``
        lies on this grid — e.g. a label saved by dcm2niix (LAS) for a DICOM image (LPS).
        """
        d_self, d_other = self.direction, other.direction
        perm: list[int] = []
        flips: list[bool] = []
        for ax in range(3):
            dots = d_other.T @ d_self[:, ax]
            j = int(np.argmax(np.abs(dots)))
            if abs(abs(dots[j]) - 1.0) > 1e-4 or j in perm:
                return None
            perm.append(j)
            flips.append(bool(dots[j] < 0))
        if tuple(other.shape[j] for j in perm) != self.shape:
            return None
        if max(abs(other.spacing[j] - self.spacing[ax]) for ax, j in enumerate(perm)) > tol_mm:
            return None
        # every corner voxel where the re-indexing puts it (a rotation beyond tol_mm moves one)
        for corner in (tuple(int(x) for x in c) for c in self._corners()):
            idx = np.zeros(3)
            for ax, j in enumerate(perm):
                idx[j] = (other.shape[j] - 1 - corner[ax]) if flips[ax] else corner[ax]
            if float(np.linalg.norm(self.voxel_to_world(np.array(corner)) - other.voxel_to_world(idx))) > tol_mm:
                return None
        return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "affine": list(self.affine)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls.from_affine(tuple(d["shape"]), d["affine"])


@dataclass(eq=False)
class Volume:
    """A 3-D array with its geometry. The array is owned (never a view into a reader)."""

    array: NDArray[Any]
    geometry: Geometry
    meta: dict[str, Any] = field(default_factory=dict)  # non-identifying facts only

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape:
            raise GeometryError("shape_mismatch",
                                f"array shape {self.array.shape} differs from geometry {self.geometry.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    def on_grid(self, target: Geometry, tol_mm: float = 1e-2) -> Volume:
        """This volume re-indexed onto ``target`` when both cover the same voxel centres
        (axes permuted or flipped, e.g. dcm2niix's LAS copy of an LPS DICOM); no resampling."""
        if self.geometry.mismatch(target, tol_mm=tol_mm) is None:
            return self
        m = target.axis_map(self.geometry, tol_mm=tol_mm)
        if m is None:
            raise GeometryError("geometry_mismatch", f"not on the grid: {target.mismatch(self.geometry, tol_mm)}",
                                remedy="resample the volume onto the target grid")
        perm, flips = m
        a = np.transpose(self.array, perm)
        a = np.flip(a, axis=tuple(i for i, f in enumerate(flips) if f))
        return Volume(np.ascontiguousarray(a), target, dict(self.meta))
