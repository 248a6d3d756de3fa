"""Shape primitives on one binary mask (a bounding-box crop), in physical units.

Every function takes a boolean array and the grid's voxel→world matrix (or its spacing),
so anisotropic and oblique grids give millimetres, not voxel counts.

Voxel-face area (UKBOB's definition) over-counts a smooth surface: a face perpendicular
to axis *x* stands for the surface's projection on *x*, so a large digitised surface of
normal *n* is counted as ``|n_x| + |n_y| + |n_z|`` times its true area. Averaged over a
sphere that factor is ``3 · E|n_x| = 3/2`` on any grid, so the face sphericity of a
large voxelised ball tends to ``2/3`` (≈ 0.667), not 1. The mesh area (marching cubes)
does not have this bias.

>>> import numpy as np
>>> m = np.zeros((5, 5, 5), bool); m[1:4, 1:4, 1:4] = True
>>> face_area_mm2(m, (1.0, 1.0, 2.0))  # 3×3×3 voxels of 1×1×2 mm: 2·(9·2 + 9·2 + 9·1)
90.0
>>> round(sphericity(27 * 2.0, 90.0), 3)
0.768
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def face_area_mm2(mask: NDArray[np.bool_], spacing: tuple[float, float, float]) -> float:
    """Area of the exposed voxel faces of ``mask`` in mm² (faces on the array's edge count)."""
    sx, sy, sz = spacing
    per_axis = (sy * sz, sx * sz, sx * sy)
    total = 0.0
    for axis in range(3):
        m = np.moveaxis(mask, axis, 0)
        n = int(np.count_nonzero(m[1:] != m[:-1])) + int(np.count_nonzero(m[0])) + int(np.count_nonzero(m[-1]))
        total += n * per_axis[axis]
    return float(total)


def mesh_measure(mask: NDArray[np.bool_], spacing: tuple[float, float, float], sigma: float = 1.0,
                 ) -> tuple[float, float] | None:
    """Area (mm²) and enclosed volume (mm³) of the marching-cubes surface at level 0.5 of ``mask``
    smoothed by a Gaussian of ``sigma`` voxels along each axis; None for a structure thinner than
    the smoothing (the smoothed mask never reaches 0.5).

    Marching cubes on the raw binary mask keeps the staircase (a ball measures 0.86-0.92);
    smoothing by one voxel removes it but also shrinks small and thin structures, so sphericity
    takes the volume of the same smoothed surface (divergence theorem), not the voxel count —
    a surface and a volume of two different objects put small labels far above 1 (a 3 mm ball
    on 5 mm slices: 2.2). Voxelised balls of 3-25 mm then measure 0.89-1.0 on grids from 1 to
    5 mm, a (30, 20, 10) mm ellipsoid 0.80-0.85 (analytic 0.847).
    """
    from scipy import ndimage
    from skimage.measure import marching_cubes, mesh_surface_area

    if not mask.any():
        return None
    pad = int(np.ceil(3 * sigma)) + 1
    field = np.pad(mask, pad).astype(np.float32)
    if sigma > 0:
        field = ndimage.gaussian_filter(field, sigma, mode="constant")
    if field.max() <= 0.5:
        return None
    verts, faces, _, _ = marching_cubes(field, level=0.5, spacing=tuple(float(s) for s in spacing),
                                        allow_degenerate=False)
    tri = verts[faces].astype(np.float64)
    volume = abs(float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum())) / 6.0
    return float(mesh_surface_area(verts, faces)), volume


def sphericity(volume_mm3: float, area_mm2: float) -> float | None:
    """Φ = π^{1/3} (6V)^{2/3} / A (1 for a ball); None when the area is zero."""
    if area_mm2 <= 0:
        return None
    return float(np.pi ** (1 / 3) * (6.0 * volume_mm3) ** (2 / 3) / area_mm2)


def moments(mask: NDArray[np.bool_]) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
    """Voxel count, mean index (3,) and index covariance (3, 3) of ``mask``, from 1-D/2-D projections
    (no coordinate arrays, so memory stays O(crop area))."""
    n = int(np.count_nonzero(mask))
    if n == 0:
        return 0, np.zeros(3), np.zeros((3, 3))
    idx = [np.arange(s, dtype=np.float64) for s in mask.shape]
    p01 = mask.sum(axis=2, dtype=np.int64).astype(np.float64)  # (i, j)
    p02 = mask.sum(axis=1, dtype=np.int64).astype(np.float64)  # (i, k)
    p1 = p01.sum(axis=0)
    p0 = p01.sum(axis=1)
    p2 = p02.sum(axis=0)
    mean = np.array([p0 @ idx[0], p1 @ idx[1], p2 @ idx[2]]) / n
    second = np.empty((3, 3))
    second[0, 0] = p0 @ idx[0] ** 2
    second[1, 1] = p1 @ idx[1] ** 2
    second[2, 2] = p2 @ idx[2] ** 2
    second[0, 1] = second[1, 0] = idx[0] @ p01 @ idx[1]
    second[0, 2] = second[2, 0] = idx[0] @ p02 @ idx[2]
    p12 = mask.sum(axis=0, dtype=np.int64).astype(np.float64)  # (j, k)
    second[1, 2] = second[2, 1] = idx[1] @ p12 @ idx[2]
    cov = second / n - np.outer(mean, mean)
    return n, mean, cov


def physical_covariance(cov_index: NDArray[np.float64], matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Index covariance → covariance of RAS-mm coordinates (``A Σ Aᵀ``, A the 3×3 of the affine)."""
    a = np.asarray(matrix, dtype=np.float64)[:3, :3]
    return np.asarray(a @ cov_index @ a.T, dtype=np.float64)


def solid_covariance(cov_index: NDArray[np.float64], matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Covariance (RAS mm) of the solid the voxels fill — each voxel a uniform box — rather than of
    their centres: ``A (Σ + I/12) Aᵀ``. The centres' covariance has no spread across a label one
    slice thick (eccentricity 1 whatever its shape) and under-counts every axis by a voxel's
    own variance; the solid's gives a single 1×1×5 mm voxel E = 0.98 and a flat 10×10-voxel
    square on 5 mm slices E = √(1 − 25/100) = 0.87, its true shape."""
    return physical_covariance(np.asarray(cov_index, dtype=np.float64) + np.eye(3) / 12.0, matrix)


def eccentricity(cov_mm: NDArray[np.float64]) -> float:
    """E = √(1 − λ_min/λ_max) of the coordinate covariance; 0 for a ball, → 1 for a needle.

    A solid ellipsoid with semi-axes a ≥ b ≥ c has eigenvalues a²/5, b²/5, c²/5,
    so E = √(1 − c²/a²).
    """
    lam = np.linalg.eigvalsh(cov_mm)
    lmax = float(lam[-1])
    if lmax <= 0:
        return 0.0
    return float(np.sqrt(max(0.0, 1.0 - max(float(lam[0]), 0.0) / lmax)))


def principal_extents(mask: NDArray[np.bool_], offset: NDArray[Any], matrix: NDArray[np.float64],
                      cov_mm: NDArray[np.float64]) -> list[float]:
    """The three orthogonal extents (mm) along the principal axes, largest first.

    Each extent is max − min of the voxel centres projected on the axis, plus the voxel's
    own width along that axis (so a single voxel measures its size, not zero). Only the
    first and last voxel of every column along the last axis can be extreme (a linear
    function is monotone along a column), so only those are projected.
    """
    a = np.asarray(matrix, dtype=np.float64)[:3, :3]
    _, vecs = np.linalg.eigh(cov_mm)
    cols = mask.any(axis=2)
    ii, jj = np.nonzero(cols)
    first = np.argmax(mask[ii, jj, :], axis=1)
    last = mask.shape[2] - 1 - np.argmax(mask[ii, jj, ::-1], axis=1)
    pts = np.concatenate([np.stack([ii, jj, first]), np.stack([ii, jj, last])], axis=1).astype(np.float64)
    world = a @ (pts + np.asarray(offset, dtype=np.float64)[:, None])
    proj = vecs.T @ world  # (3 axes, n points)
    width = np.abs(vecs.T @ a).sum(axis=1)  # a voxel's extent along each principal axis
    ext = proj.max(axis=1) - proj.min(axis=1) + width
    return sorted((float(x) for x in ext), reverse=True)
