"""Evaluation: DSC and NSD between label layers, and error detection by attention maps.

* :func:`dice`, :func:`nsd` (normalised surface Dice at a tolerance in mm, the metric
  AbdomenAtlas-8K reports with 1 mm) and :func:`hd95` (the 95th-percentile Hausdorff distance).
  Surfaces are measured as Nikolov et al. (2021) defined NSD and DeepMind's
  ``surface-distance`` package computes it (MONAI's ``use_subvoxels=True``): surface elements
  at the voxel corners, from marching cubes, each weighted by its area in mm². Counting
  boundary voxels instead (``surface="voxels"``, MONAI's default) gives other numbers —
  0.63 for 0.85 on a 0.8 × 0.8 × 2.5 mm grid at 1 mm — so results are comparable only
  within one definition.
* :func:`detection`: AbdomenAtlas-8K §4.1 evaluates attention "at the volume (a group of
  voxels) level": an error region (a connected component of prediction XOR reference,
  after removing one-voxel boundary jitter) counts as detected when the attention map
  touches it; an attention region is a true alarm when it touches an error region.
  Sensitivity = detected / errors, precision = true alarms / attention regions.

>>> import numpy as np
>>> a = np.zeros((10, 10, 10), bool); a[2:6, 2:6, 2:6] = True
>>> round(dice(a, a), 3), round(nsd(a, a, (1.0, 1.0, 1.0), 1.0), 3)
(1.0, 1.0)
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cc3d
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage.measure import marching_cubes

Bool = NDArray[np.bool_]


def dice(a: Bool, b: Bool) -> float:
    """Dice similarity; 1.0 when both masks are empty."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


Surface = Literal["surfels", "voxels"]
SURFACES: tuple[Surface, ...] = ("surfels", "voxels")

# bit of each corner of a 2×2×2 cube in the neighbour code (DeepMind's surface-distance, MONAI)
_CODE_BITS = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)


@functools.cache
def _code_area_vectors() -> NDArray[np.float64]:
    """(256, triangles, 3): each corner code's marching-cubes triangles as area vectors (unit spacing).

    A code with more than four corners inside takes its complement's triangles (the classic
    marching-cubes symmetry, as DeepMind's table): scikit-image's Lorensen tables triangulate
    some of those cases otherwise, with up to twice the area."""
    tris: list[NDArray[np.float64]] = [np.zeros((0, 3))]
    for code in range(1, 255):
        inside = (code & _CODE_BITS) > 0
        if inside.sum() > 4:
            inside = ~inside
        verts, faces, _, _ = marching_cubes(inside.astype(np.float32), 0.5, method="lorensen")
        t = verts[faces].astype(np.float64)
        tris.append(0.5 * np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))
    tris.append(np.zeros((0, 3)))
    out = np.zeros((256, max(len(t) for t in tris), 3))
    for code, t in enumerate(tris):
        out[code, :len(t)] = t
    return out


@functools.lru_cache(maxsize=64)
def code_areas(spacing: tuple[float, float, float]) -> NDArray[np.float64]:
    """Surface area (mm²) of each of the 256 corner codes on a grid of ``spacing`` (mm)."""
    sx, sy, sz = spacing
    scale = np.array([sy * sz, sx * sz, sx * sy])  # an area vector's components scale so
    return np.asarray(np.linalg.norm(_code_area_vectors() * scale, axis=-1).sum(axis=-1))


def _surfels(m: Bool, spacing: tuple[float, float, float]) -> tuple[Bool, NDArray[np.float64]]:
    """(surface corners, their areas) on the grid of ``m``'s voxel corners (one more per axis)."""
    p = np.pad(m, 1).view(np.uint8)
    n0, n1, n2 = (x + 1 for x in m.shape)
    code = np.zeros((n0, n1, n2), np.uint8)
    for (i, j, k), bit in np.ndenumerate(_CODE_BITS):
        code |= p[i:i + n0, j:j + n1, k:k + n2] * np.uint8(bit)
    on = (code != 0) & (code != 255)
    return on, code_areas(spacing)[code[on]]


@dataclass(frozen=True)
class SurfaceDistances:
    """Each surface element's distance (mm) to the other mask's surface, and its weight."""

    a_to_b: NDArray[np.float64]
    weight_a: NDArray[np.float64]
    b_to_a: NDArray[np.float64]
    weight_b: NDArray[np.float64]

    def nsd(self, tolerance_mm: float) -> float:
        """Normalised surface Dice: the weighted share of both surfaces within ``tolerance_mm``.

        A distance that equals the tolerance counts as within it even when rounding puts it a
        hair above (0.8 · 3 and 0.7 mm steps make 2.5000000000000004 mm, not 2.5)."""
        tol = tolerance_mm * (1 + 1e-9)
        close = self.weight_a[self.a_to_b <= tol].sum() + self.weight_b[self.b_to_a <= tol].sum()
        return float(close / (self.weight_a.sum() + self.weight_b.sum()))

    def hausdorff(self, percent: float = 95.0) -> float:
        """The larger of the two directions' ``percent``-th weighted percentile distance (mm), the
        rule of DeepMind's ``compute_robust_hausdorff`` (the first distance whose cumulative
        weight reaches ``percent`` %)."""
        return max(_weighted_percentile(self.a_to_b, self.weight_a, percent),
                   _weighted_percentile(self.b_to_a, self.weight_b, percent))


def _weighted_percentile(dist: NDArray[np.float64], weight: NDArray[np.float64], percent: float) -> float:
    order = np.argsort(dist, kind="stable")
    cum = np.cumsum(weight[order]) / weight.sum()
    return float(dist[order][min(int(np.searchsorted(cum, percent / 100.0)), len(dist) - 1)])


def surface_distances(a: Bool, b: Bool, spacing: Sequence[float], surface: Surface = "surfels") -> SurfaceDistances:
    """Distances between the surfaces of two non-empty masks: surface elements at the voxel
    corners weighted by area (``surfels``), or boundary voxels weighted 1 (``voxels``)."""
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {SURFACES}, not {surface!r}")
    sp = tuple(float(x) for x in spacing)
    a, b = _crop(a, b, 0)
    if surface == "voxels":
        sa, sb = _surface(a), _surface(b)
        wa, wb = np.ones(int(sa.sum())), np.ones(int(sb.sum()))
    else:
        (sa, wa), (sb, wb) = _surfels(a, sp), _surfels(b, sp)  # type: ignore[arg-type]
    da = ndimage.distance_transform_edt(~sa, sampling=sp)
    db = ndimage.distance_transform_edt(~sb, sampling=sp)
    return SurfaceDistances(np.asarray(db[sa], np.float64), wa, np.asarray(da[sb], np.float64), wb)


def _surface(m: Bool) -> Bool:
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def _crop(a: Bool, b: Bool, margin: int) -> tuple[Bool, Bool]:
    both = a | b
    if not both.any():
        return a, b
    idx = np.argwhere(both)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, both.shape)
    box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
    return a[box], b[box]


def nsd(a: Bool, b: Bool, spacing: Sequence[float], tolerance_mm: float, surface: Surface = "surfels") -> float:
    """Normalised surface Dice: the share of both surfaces within ``tolerance_mm`` of the other
    (1.0 when both masks are empty, 0.0 when one is)."""
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    return surface_distances(a, b, spacing, surface).nsd(tolerance_mm)


def hd95(a: Bool, b: Bool, spacing: Sequence[float], surface: Surface = "surfels") -> float | None:
    """Robust Hausdorff distance (mm), see :meth:`SurfaceDistances.hausdorff`; ``None`` when
    either mask is empty (undefined)."""
    if not a.any() or not b.any():
        return None
    return surface_distances(a, b, spacing, surface).hausdorff(95.0)


@dataclass
class Detection:
    """Volume-level error detection counts for one (case, term)."""

    errors: int = 0
    detected: int = 0
    alarms: int = 0
    true_alarms: int = 0
    error_labels: NDArray[np.int32] | None = field(default=None, repr=False)

    def add(self, other: Detection) -> None:
        self.errors += other.errors
        self.detected += other.detected
        self.alarms += other.alarms
        self.true_alarms += other.true_alarms

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.errors if self.errors else None

    @property
    def precision(self) -> float | None:
        return self.true_alarms / self.alarms if self.alarms else None


def error_regions(pred: Bool, ref: Bool, spacing: Sequence[float], min_ml: float) -> NDArray[np.int32]:
    """Connected error regions (26-connectivity) of ``pred XOR ref`` at least ``min_ml`` large,
    after an opening that removes one-voxel boundary disagreement."""
    xor = pred ^ ref
    opened = ndimage.binary_opening(xor, structure=ndimage.generate_binary_structure(3, 1))
    lab = cc3d.connected_components(opened, connectivity=26).astype(np.int32)
    if lab.max() == 0:
        return lab
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(lab.ravel())
    small = np.flatnonzero(counts * voxel_ml < min_ml)
    lab[np.isin(lab, small[small > 0])] = 0
    return lab


def detection(pred: Bool, ref: Bool, attention: Bool, spacing: Sequence[float], min_ml: float = 0.5) -> Detection:
    """Count errors the attention map detects and attention regions that are true alarms."""
    errs = error_regions(pred, ref, spacing, min_ml)
    err_ids = set(np.unique(errs).tolist()) - {0}
    hit = set(np.unique(errs[attention]).tolist()) - {0}
    alarms = cc3d.connected_components(attention, connectivity=26)
    n_alarms = int(alarms.max())
    true = set(np.unique(alarms[errs > 0]).tolist()) - {0}
    return Detection(len(err_ids), len(hit), n_alarms, len(true), errs)


def detection_case(pairs: Sequence[tuple[Bool, Bool]], attention: Sequence[Bool], spacing: Sequence[float],
                   min_ml: float = 0.5, min_alarm_ml: float = 0.0) -> tuple[Detection, list[NDArray[np.int32]]]:
    """Case level: every term's error regions against the union of the terms' attention maps
    (a reviewer looks at one map; an error found through a neighbour's attention is found).
    Attention regions smaller than ``min_alarm_ml`` are not counted as alarms (nor as hits)."""
    union = np.zeros(pairs[0][0].shape, dtype=bool) if pairs else np.zeros((1, 1, 1), bool)
    for a in attention:
        union |= a
    alarms = cc3d.connected_components(union, connectivity=26)
    if min_alarm_ml > 0 and alarms.max() > 0:
        counts = np.bincount(alarms.ravel())
        small = np.flatnonzero(counts * (float(np.prod(spacing)) / 1000.0) < min_alarm_ml)
        small = small[small > 0]
        if len(small):
            union &= ~np.isin(alarms, small)
            alarms = cc3d.connected_components(union, connectivity=26)
    det = Detection(alarms=int(alarms.max()))
    true: set[int] = set()
    labels = []
    for pred, ref in pairs:
        errs = error_regions(pred, ref, spacing, min_ml)
        labels.append(errs)
        det.errors += len(set(np.unique(errs).tolist()) - {0})
        det.detected += len(set(np.unique(errs[union]).tolist()) - {0})
        true |= set(np.unique(alarms[errs > 0]).tolist()) - {0}
    det.true_alarms = len(true)
    return det, labels


def check_request(pred: str, ref: str, terms: Sequence[str] = (), held: Collection[str] = ()) -> None:
    """Refuse label layers that are not :data:`curator.store.LAYERS` and term ids the taxonomy
    does not know (``held``: ids some store holds, accepted too), naming the close ones."""
    import difflib

    from curator.errors import ConfigError
    from curator.store import LAYERS
    from curator.taxonomy import load_taxonomy

    for flag, layer in (("--pred", pred), ("--ref", ref)):
        if layer not in LAYERS:
            close = difflib.get_close_matches(layer, LAYERS, n=1)
            raise ConfigError("config_error", f"{flag} {layer!r} is not a label layer",
                              remedy=(f"did you mean {close[0]!r}? " if close else "")
                              + f"the layers are {', '.join(LAYERS)}")
    tax = load_taxonomy()
    for t in terms:
        if t in held or tax.get(t) is not None:
            continue
        hint = tax.close_ids(t)
        some = sorted(held)[:20]
        raise ConfigError("config_error", f"--term {t!r} is not a term id",
                          remedy=(f"did you mean {', '.join(hint)}? " if hint else "")
                          + (f"the stores hold {', '.join(some)}{', …' if len(held) > len(some) else ''}; "
                             if some else "")
                          + "all term ids are listed by `curator labels tree`")


def _nothing_compared(pred: str, ref: str, terms: Sequence[str], held: dict[str, dict[str, set[str]]]) -> str:
    """Why no (case, term) holds both layers: which stores hold which layer and terms."""
    what = ", ".join(terms) if terms else "a term"
    n_pred, n_ref = sum(pred in ls for ls in held.values()), sum(ref in ls for ls in held.values())
    why = [(f"no case holds {what} in both the {pred!r} and the {ref!r} layer: of {len(held)} store(s), "
            f"{n_pred} hold {pred!r}, {n_ref} hold {ref!r}")]
    both = [ls for ls in held.values() if pred in ls and ref in ls]
    if both:
        def terms_of(layer: str) -> str:
            return ", ".join(sorted({t for ls in both for t in ls[layer]})) or "none"

        why.append(f"the {len(both)} holding both share {'none of these' if terms else 'no term'} ({pred}: {terms_of(pred)}; "
                   f"{ref}: {terms_of(ref)})")
    if {pred, ref} == {"pseudo", "original"}:
        why.append("the pseudolabel stage labels only the terms a dataset does not annotate, so a case's pseudo "
                   "and original labels never cover the same term")
    return "; ".join(why)


def evaluate_layers(workspace: Path, pred: str, ref: str, *, tolerance_mm: float = 2.0,
                    attention: bool = False, min_ml: float = 0.5, terms: Sequence[str] = (),
                    surface: Surface = "surfels") -> list[dict[str, Any]]:
    """DSC, NSD and HD95 (mm; None when either mask is empty) of layer ``pred`` against ``ref``
    per (case, term) present in both layers of each store, surfaces measured as ``surface``; with
    ``attention``, also the error detection counts of the pseudolabel attention map.

    Unknown layer names or term ids, and a request no (case, term) can answer (e.g. ``pseudo``
    against ``original``: pseudo labels exist only for terms a dataset does not annotate), are a
    :class:`~curator.errors.ConfigError` saying why, rather than an empty table."""
    from curator.errors import ConfigError
    from curator.pseudolabel.outputs import attention_path, read_attention
    from curator.store import CaseStore

    check_request(pred, ref)
    stores = {path: CaseStore(path) for path in sorted((workspace / "stores").glob("*.zarr"))}
    held = {path.stem: {layer: set(s.terms(layer)) for layer in s.layers()} for path, s in stores.items()}
    check_request(pred, ref, terms, {t for ls in held.values() for ts in ls.values() for t in ts})
    out = []
    for path, store in stores.items():
        ls = held[path.stem]
        if pred not in ls or ref not in ls:
            continue
        common = [t for t in store.terms(pred) if t in ls[ref] and (not terms or t in terms)]
        amap = (read_attention(attention_path(workspace, path.stem))
                if attention and common and attention_path(workspace, path.stem).exists() else None)
        sp = store.geometry.spacing
        for t in common:
            a, b = store.mask(t, pred), store.mask(t, ref)
            if a.any() and b.any():  # one distance computation for both surface metrics
                dist = surface_distances(a, b, sp, surface)
                n, hd = dist.nsd(tolerance_mm), round(dist.hausdorff(95.0), 4)
            else:
                n, hd = nsd(a, b, sp, tolerance_mm, surface), None
            row: dict[str, Any] = {"case_id": path.stem, "term_id": t, "dice": round(dice(a, b), 6),
                                   "nsd": round(n, 6), "hd95_mm": hd}
            if attention:
                att = amap.mask(t) if amap is not None and t in amap else np.zeros(a.shape, bool)
                d = detection(a, b, att, sp, min_ml)
                row.update({"errors": d.errors, "detected": d.detected, "alarms": d.alarms,
                            "true_alarms": d.true_alarms})
            out.append(row)
    if not out:
        n_revised = sum("revised" in ls for ls in held.values())
        shared = sorted({t for ls in held.values() if pred in ls and ref in ls for t in ls[pred] & ls[ref]})
        if terms and shared:
            remedy = f"the two layers share {', '.join(shared)}: give some of these with --term, or no --term"
        elif "pseudo" in (pred, ref) and "revised" not in (pred, ref):
            remedy = ("compare pseudo labels with a reviewer's revision: `curator eval pipeline.yaml --pred pseudo "
                      "--ref revised`" + (f" ({n_revised} store(s) hold a revised layer)" if n_revised else
                                          ", after `curator review export` and `curator review import`"))
        else:
            remedy = "pick two layers some case holds for the same term (`curator eval --pred pseudo --ref revised` " \
                     "after a review import)"
        raise ConfigError("config_error", _nothing_compared(pred, ref, terms, held), remedy=remedy)
    return out


def summarise_detection(rows: Sequence[dict[str, Any]]) -> Detection:
    total = Detection()
    for r in rows:
        total.add(Detection(r["errors"], r["detected"], r["alarms"], r["true_alarms"]))
    return total
