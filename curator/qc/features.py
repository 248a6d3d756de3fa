"""Per-(case, term) features and measurements, every term of a case in one pass.

The label planes are scanned once (``scipy.ndimage.find_objects`` gives every code's
bounding box); each term is then measured inside its own bounding-box crop, so the
cost is one pass over the volume plus the terms' boxes, whatever the number of classes.

>>> import numpy as np
>>> from curator.testing.phantoms import grid
>>> lab = np.zeros((20, 20, 10), np.uint8); lab[5:15, 5:15, 3:7] = 1
>>> g = grid(lab.shape, spacing=(1.0, 1.0, 2.5))
>>> f = measure_label_map(lab, g, {1: "liver"})["liver"]
>>> f.voxels, round(f.volume_ml, 3), f.components, f.border_faces
(400, 1.0, 1, ())
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from curator.io.volume import Geometry
from curator.qc import shape
from curator.store import term_masks

Plane = tuple[NDArray[Any], Mapping[int, Sequence[str]]]
Sections = tuple[int, NDArray[np.float64]]  # (slice axis, body cross-section area in mm² per slice)
FACES = ("i-", "i+", "j-", "j+", "k-", "k+")


@dataclass(frozen=True)
class MeasureOptions:
    """What to measure: ``mesh`` adds the marching-cubes area (slower); ``border_margin`` is how
    close (voxels) to the field-of-view edge a label may come before it counts as cut."""

    mesh: bool = False
    border_margin: int = 1
    connectivity: Literal[6, 18, 26] = 26


@dataclass(frozen=True)
class LabelFeatures:
    """Features and measurements of one term's mask in one case (physical units)."""

    term_id: str
    voxels: int
    volume_ml: float
    surface_mm2: float
    sphericity: float | None
    surface_mesh_mm2: float | None
    sphericity_mesh: float | None
    eccentricity: float
    components: int
    largest_component_fraction: float
    border_faces: tuple[str, ...]
    extent_mm: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    mean_intensity: float | None
    sd_intensity: float | None
    body_size_ml: float | None = None

    @property
    def truncated(self) -> bool:
        return bool(self.border_faces)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["border_faces"] = list(self.border_faces)
        d["extent_mm"] = list(self.extent_mm)
        d["centroid_mm"] = list(self.centroid_mm)
        d["truncated"] = self.truncated
        return d


def field_of_view(geometry: Geometry, source_affine: Sequence[float] | None = None,
                  source_shape: Sequence[int] | None = None) -> NDArray[np.float64]:
    """(3, 2) low/high edges of the scanned field of view in this grid's index coordinates.

    Without a source grid the field of view is the grid itself (edges at −0.5 and n − 0.5).
    For a cropped or resampled store, the source scan's box is mapped into this grid, so a
    label is only called cut where the *scan* ended, not where preprocessing cropped.
    """
    shape_ = np.asarray(geometry.shape, dtype=np.float64)
    if source_affine is None or source_shape is None:
        return np.stack([np.full(3, -0.5), shape_ - 0.5], axis=1)
    src = np.asarray(source_affine, dtype=np.float64).reshape(4, 4)
    n = np.asarray(source_shape, dtype=np.float64)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5)
                        for c in (-0.5, n[2] - 0.5)])
    world = (src[:3, :3] @ corners.T).T + src[:3, 3]
    idx = geometry.world_to_voxel(world)
    return np.stack([idx.min(axis=0), idx.max(axis=0)], axis=1)


def body_sections(body: NDArray[np.bool_] | None, geometry: Geometry) -> Sections | None:
    """The body mask's cross-section area (mm²) in every slice across the grid axis closest to
    the patient's long (S-I) axis, or None without a body mask.

    A label's *body size* is the mean of these areas over the slices the label occupies,
    raised to 3/2 (:func:`body_size_ml`): a volume on the scale of the patient's trunk at
    the label's level that, unlike the body volume, does not grow with the scan's coverage.
    """
    if body is None or not np.any(body):
        return None
    m = geometry.matrix[:3, :3]
    axis = int(np.argmax(np.abs(m[2, :]) / np.linalg.norm(m, axis=0)))
    others = tuple(a for a in range(3) if a != axis)
    cross_mm2 = geometry.voxel_volume_mm3 / geometry.spacing[axis]
    counts = np.count_nonzero(body, axis=others)
    return axis, counts.astype(np.float64) * cross_mm2


def body_size_ml(sections: Sections, mask: NDArray[np.bool_], box: tuple[slice, ...]) -> float | None:
    """(mean body cross-section over the slices ``mask`` occupies)^(3/2), in ml; slices
    without body are left out; None when no occupied slice has body."""
    axis, areas = sections
    others = tuple(a for a in range(3) if a != axis)
    occupied = np.flatnonzero(np.any(mask, axis=others)) + box[axis].start
    a = areas[occupied[occupied < areas.size]]
    a = a[a > 0]
    return float(a.mean() ** 1.5 / 1000.0) if a.size else None


def measure_planes(planes: Sequence[Plane], geometry: Geometry, *, image: NDArray[Any] | None = None,
                   fov: NDArray[np.float64] | None = None, options: MeasureOptions | None = None,
                   sections: Sections | None = None) -> dict[str, LabelFeatures]:
    """Features of every term with at least one voxel; terms are the planes' ``values``.

    A term's mask is the union of every code mapping to it in every plane (the store contract).
    ``sections`` (:func:`body_sections`) adds each label's body size.
    """
    opts = options or MeasureOptions()
    fov = field_of_view(geometry) if fov is None else fov
    return {term: measure_mask(term, mask, box, geometry, image=image, fov=fov, options=opts, sections=sections)
            for term, box, mask in term_masks(planes)}


def measure_mask(term: str, mask: NDArray[np.bool_], box: tuple[slice, ...], geometry: Geometry, *,
                 image: NDArray[Any] | None = None, fov: NDArray[np.float64] | None = None,
                 options: MeasureOptions | None = None, sections: Sections | None = None) -> LabelFeatures:
    """Features of one mask cropped at ``box`` of ``geometry``'s grid."""
    import cc3d

    opts = options or MeasureOptions()
    fov = field_of_view(geometry) if fov is None else fov
    m = geometry.matrix
    spacing = geometry.spacing
    vox_mm3 = geometry.voxel_volume_mm3
    offset = np.array([s.start for s in box], dtype=np.float64)
    n, mean, cov_idx = shape.moments(mask)
    volume_mm3 = n * vox_mm3
    area = shape.face_area_mm2(mask, spacing)
    mesh = shape.mesh_measure(mask, spacing) if opts.mesh else None
    mesh_area = mesh[0] if mesh is not None else None
    cov = shape.solid_covariance(cov_idx, m)
    cc, ncomp = cc3d.connected_components(mask, connectivity=opts.connectivity, return_N=True)
    largest = 1.0
    if ncomp > 1:
        counts = np.bincount(cc.ravel())[1:]
        largest = float(counts.max() / n)
    mean_i = sd_i = None
    if image is not None:
        vals = np.asarray(image[box])[mask].astype(np.float64)
        mean_i, sd_i = float(vals.mean()), float(vals.std())
    centroid = m[:3, :3] @ (mean + offset) + m[:3, 3]
    ext = shape.principal_extents(mask, offset, m, cov)
    return LabelFeatures(
        term_id=term, voxels=n, volume_ml=volume_mm3 / 1000.0, surface_mm2=area,
        sphericity=shape.sphericity(volume_mm3, area),
        surface_mesh_mm2=mesh_area,
        sphericity_mesh=shape.sphericity(mesh[1], mesh[0]) if mesh is not None else None,
        eccentricity=shape.eccentricity(cov), components=int(ncomp), largest_component_fraction=largest,
        border_faces=_border_faces(box, fov, opts.border_margin),
        extent_mm=(ext[0], ext[1], ext[2]), centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        mean_intensity=mean_i, sd_intensity=sd_i,
        body_size_ml=body_size_ml(sections, mask, box) if sections is not None else None)


def _border_faces(box: tuple[slice, ...], fov: NDArray[np.float64], margin: int) -> tuple[str, ...]:
    """Faces of the field of view the box's voxels come within ``margin`` voxels of."""
    out = []
    for a, s in enumerate(box):
        lo_gap = (s.start - 0.5) - fov[a, 0]  # voxel edge to the field-of-view edge, in voxels
        hi_gap = fov[a, 1] - (s.stop - 0.5)
        if lo_gap < margin - 1e-6:
            out.append(FACES[2 * a])
        if hi_gap < margin - 1e-6:
            out.append(FACES[2 * a + 1])
    return tuple(out)


def measure_label_map(labels: NDArray[Any], geometry: Geometry, names: Mapping[int, str | Sequence[str]], *,
                      image: NDArray[Any] | None = None, options: MeasureOptions | None = None
                      ) -> dict[str, LabelFeatures]:
    """Features straight from a label map (no store): ``names`` maps code → term id(s)."""
    values = {int(c): ([t] if isinstance(t, str) else list(t)) for c, t in names.items()}
    return measure_planes([(labels, values)], geometry, image=image, options=options)
