"""Physical-space fidelity checks shared by the geometry tests: centroids (world mm) and volumes (ml)."""

from __future__ import annotations

from typing import Any

import cc3d
import numpy as np
from numpy.typing import NDArray

from curator.io.volume import Geometry


def centroids_and_volumes(lab: NDArray[Any], g: Geometry) -> dict[int, tuple[NDArray[np.float64], float]]:
    """``{code: (centroid in RAS mm, volume in ml)}`` of every non-zero code."""
    st = cc3d.statistics(np.ascontiguousarray(lab))
    ml = g.voxel_volume_mm3 / 1000.0
    return {c: (g.voxel_to_world(st["centroids"][c])[0], float(st["voxel_counts"][c]) * ml)
            for c in range(1, len(st["voxel_counts"])) if st["voxel_counts"][c] > 0}


def fidelity(src: NDArray[Any], g_src: Geometry, out: NDArray[Any], g_out: Geometry,
             src_codes: dict[int, int] | None = None) -> list[dict[str, float]]:
    """Per structure: centroid shift in output voxels (worst axis) and relative volume change."""
    a = centroids_and_volumes(src, g_src)
    b = centroids_and_volumes(out, g_out)
    rows = []
    for code, (c_src, v_src) in a.items():
        oc = (src_codes or {}).get(code, code)
        if oc not in b:
            rows.append({"code": code, "ml": v_src, "shift_vox": float("inf"), "vol_err": 1.0})
            continue
        c_out, v_out = b[oc]
        # shift expressed along the output grid's axes, in voxels
        shift_vox = np.abs(g_out.world_to_voxel(c_out)[0] - g_out.world_to_voxel(c_src)[0])
        rows.append({"code": code, "ml": v_src, "shift_vox": float(shift_vox.max()),
                     "vol_err": abs(v_out - v_src) / v_src})
    return rows
