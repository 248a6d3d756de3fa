"""Declared per-dataset data fixes (``fixes:`` in a dataset YAML): validation and pure appliers.

A fix names a known defect of a dataset's files and how to undo it::

    fixes:
      intensity_offset: {value: -1000, when: "^(KiTS|Rider)/", reason: "stored with +1000"}
      label_rot90: {k: -1, axes: [0, 1], reason: "the .mat masks are rotated"}
      label_geometry: {from: image, reason: ".mat masks carry no geometry"}
      non_finite: {value: 0, when: "^registered/", reason: "NaN outside the registered field of view"}

Keys (all optional): ``when`` — a regex searched in the file's path relative to the source
root (the fix applies only to matching files); ``reason``; ``source`` — who documents the
defect (``dataset`` or ``SAT-DS``); ``verified`` — false when the defect is only known from
SAT-DS's code and has not been checked on the files.

Ingest applies the label fixes (``label_flip``, ``label_rot90``, ``label_geometry``) before it
compares a label with its image; ``intensity_offset`` and ``image_flip`` are for the stage that
writes image arrays (preprocess), via :func:`apply_array_fixes`. ``non_finite`` is for every
reader of the image (ingest, dedup, preprocess: :func:`non_finite_fill` to ``read_volume``),
since without it reading refuses the image. (There is no ``image_geometry``:
it was accepted and documented but nothing applied it; no dataset needs an image to take its
label's grid.)

>>> import numpy as np
>>> a = np.arange(4).reshape(2, 2, 1)
>>> apply_array_fixes(a, {"label_flip": {"axes": [0]}}, "label", "x.nii.gz")[:, :, 0].tolist()
[[2, 3], [0, 1]]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

COMMON = {"when", "reason", "source", "verified"}
FIX_KINDS: dict[str, dict[str, str]] = {
    # fix name -> {parameter: description}
    "intensity_offset": {"value": "number added to every image voxel (e.g. -1000)"},
    "image_flip": {"axes": "array axes of the image to reverse"},
    "label_flip": {"axes": "array axes of the label to reverse"},
    "label_rot90": {"k": "quarter turns (numpy.rot90 sense)", "axes": "the two array axes of the turn"},
    "label_geometry": {"from": "'image': the label takes the image's grid (same shape after array fixes)"},
    "non_finite": {"value": "what NaN and ±Inf image voxels become: a number (0 for MR/PET, -1024 for CT) or "
                            "'min', the image's smallest finite value"},
}
OPTIONAL: dict[str, dict[str, str]] = {
    "label_geometry": {"slices": "'image_file_names': a label stored as one image per slice (PNG) numbers its "
                                 "slices in the image series' file-name order, not by position (CHAOS)"},
}
SLICE_ORDERS = ("image_file_names",)
TARGET = {"intensity_offset": "image", "image_flip": "image", "label_flip": "label", "label_rot90": "label",
          "label_geometry": "label", "non_finite": "image"}


def validate_fixes(fixes: Any) -> list[tuple[str, str, str]]:
    """Every problem of a ``fixes:`` mapping as ``(location, kind, message)``."""
    if not isinstance(fixes, Mapping):
        return [("fixes", "type", "fixes must map a fix name to its parameters")]
    out: list[tuple[str, str, str]] = []
    for name, params in fixes.items():
        loc = f"fixes.{name}"
        if name not in FIX_KINDS:
            out.append((loc, "unknown_key", f"unknown fix {name!r} (known: {sorted(FIX_KINDS)})"))
            continue
        if not isinstance(params, Mapping):
            out.append((loc, "type", "a fix's parameters must be a mapping"))
            continue
        allowed = set(FIX_KINDS[name]) | set(OPTIONAL.get(name, {})) | COMMON
        for k in sorted(set(params) - allowed):
            out.append((f"{loc}.{k}", "unknown_key", f"unknown parameter {k!r} (known: {sorted(allowed)})"))
        for k in FIX_KINDS[name]:
            if k not in params:
                out.append((f"{loc}.{k}", "missing", f"{name} needs `{k}`: {FIX_KINDS[name][k]}"))
        if "when" in params:
            try:
                re.compile(str(params["when"]))
            except re.error as e:
                out.append((f"{loc}.when", "regex", f"invalid regular expression: {e}"))
        axes = params.get("axes")
        if axes is not None and (not isinstance(axes, list) or not all(a in (0, 1, 2) for a in axes)):
            out.append((f"{loc}.axes", "value", "axes must be a list of 0, 1, 2"))
        if name == "label_rot90" and (not isinstance(axes, list) or len(axes) != 2):
            out.append((f"{loc}.axes", "value", "label_rot90 needs exactly two axes"))
        if name == "intensity_offset" and not isinstance(params.get("value"), (int, float)):
            out.append((f"{loc}.value", "type", "value must be a number"))
        if name == "non_finite" and "value" in params and not _fill_ok(params["value"]):
            out.append((f"{loc}.value", "value", ("value must be a finite number (0 for MR/PET, -1024 for CT) or "
                                                  f"'min' (the image's smallest finite value), not {params['value']!r}")))
        if name == "label_geometry" and params.get("from") != "image":
            out.append((f"{loc}.from", "value", "label_geometry can only take its grid from the image"))
        if "slices" in params and params["slices"] not in SLICE_ORDERS:
            out.append((f"{loc}.slices", "value", f"slices must be one of {list(SLICE_ORDERS)}"))
    return out


def applies(params: Mapping[str, Any], rel_path: str) -> bool:
    """Whether a fix applies to the file at ``rel_path`` (relative to the source root)."""
    when = params.get("when")
    return when is None or re.search(str(when), rel_path) is not None


def for_files(fixes: Mapping[str, Any], rel_paths: Iterable[str | None], target: str | None = None
              ) -> dict[str, Any]:
    """The fixes that apply to at least one of a case's files ``rel_paths`` (relative to the
    source root; a fix without ``when`` applies to every file) — of ``target`` ('image' or
    'label') only when it is given, else whatever file each one targets.

    A stage puts this in a case's task instead of the whole ``fixes:`` mapping: the fixes left
    out do nothing to the files the task reads, and the task's cache key changes only for the
    cases an edited fix applies to, before or after the edit (a one-case ``when`` no longer
    re-runs the dataset; a fix without ``when`` still re-runs every case).

    >>> fx = {"intensity_offset": {"value": -1024, "when": "^a/"}, "label_flip": {"axes": [0]}}
    >>> sorted(for_files(fx, ["a/img.nii.gz"])), sorted(for_files(fx, ["b/img.nii.gz", None]))
    (['intensity_offset', 'label_flip'], ['label_flip'])
    >>> sorted(for_files(fx, ["a/seg.nii.gz"], target="label"))
    ['label_flip']
    """
    paths = [p for p in rel_paths if p is not None]
    return {k: v for k, v in (fixes or {}).items()
            if (target is None or TARGET.get(k) == target) and any(applies(v, p) for p in paths)}


def active(fixes: Mapping[str, Any], target: str, rel_path: str) -> dict[str, Mapping[str, Any]]:
    """The fixes of ``target`` ('image' or 'label') that apply to this file."""
    return {k: v for k, v in (fixes or {}).items() if TARGET.get(k) == target and applies(v, rel_path)}


def intensity_offset(fixes: Mapping[str, Any], rel_path: str) -> float:
    """The declared ``intensity_offset`` of the image at ``rel_path`` (0 when none applies)."""
    fx = active(fixes, "image", rel_path)
    return float(fx["intensity_offset"]["value"]) if "intensity_offset" in fx else 0.0


def _fill_ok(value: Any) -> bool:
    return value == "min" or (isinstance(value, (int, float)) and not isinstance(value, bool)
                              and bool(np.isfinite(value)))


def non_finite_fill(fixes: Mapping[str, Any], rel_path: str | None) -> float | str | None:
    """The declared ``non_finite`` value of the image at ``rel_path`` (a number or ``'min'``),
    ``None`` when no such fix applies: NaN/Inf voxels then reject the image."""
    if rel_path is None:
        return None
    fx = active(fixes, "image", rel_path).get("non_finite")
    if fx is None:
        return None
    return "min" if fx["value"] == "min" else float(fx["value"])


def apply_array_fixes(array: NDArray[Any], fixes: Mapping[str, Any], target: str, rel_path: str) -> NDArray[Any]:
    """Apply the array-level fixes of ``target`` (flip, rot90, intensity offset), in that order."""
    fx = active(fixes, target, rel_path)
    out = array
    flip = fx.get(f"{target}_flip")
    if flip:
        out = np.flip(out, axis=tuple(int(a) for a in flip["axes"]))
    rot = fx.get("label_rot90") if target == "label" else None
    if rot:
        a0, a1 = (int(a) for a in rot["axes"])
        out = np.rot90(out, k=int(rot["k"]), axes=(a0, a1))
    off = fx.get("intensity_offset") if target == "image" else None
    if off:
        value = off["value"]
        if out.dtype.kind == "f" or not float(value).is_integer():
            out = out.astype(np.float32) + np.float32(value)
        else:  # widen first: a uint16 image minus 1000 must not wrap around
            out = out.astype(np.int32) + np.int32(value)
    return np.ascontiguousarray(out) if out is not array else out


def apply_label_fixes(vol: Any, fixes: Mapping[str, Any], rel_path: str, image_geometry: Any = None,
                      image_path: Path | None = None) -> Any:
    """A label :class:`~curator.io.volume.Volume` with its declared fixes applied.

    A slice-image label (a PNG folder) under ``label_geometry: {slices: image_file_names}``
    first has its slices put in the order the image's DICOM series at ``image_path`` is
    stacked in (by position): slice image ``i`` annotates the series' ``i``-th file by name.
    Array fixes keep the label's affine (they undo an array stored the wrong way round);
    ``label_geometry: {from: image}`` then gives the label its image's grid, which must have
    the same shape (a :class:`~curator.errors.GeometryError` otherwise).
    """
    from curator.errors import GeometryError
    from curator.io.volume import Geometry, Volume

    fx = active(fixes, "label", rel_path)
    if not fx:
        return vol
    order = fx.get("label_geometry", {}).get("slices")
    if order and vol.meta.get("format") == "slices" and image_path is not None and Path(image_path).is_dir():
        from curator.io.dicom import slice_file_order

        ranks = slice_file_order(Path(image_path))
        if ranks is not None:
            if len(ranks) != vol.array.shape[2]:
                raise GeometryError("shape_mismatch", f"the label has {vol.array.shape[2]} slice images, the image "
                                    f"series {len(ranks)} files", path=rel_path,
                                    remedy="each slice image must annotate one file of the series; check both folders")
            vol = Volume(np.ascontiguousarray(vol.array[:, :, ranks]), vol.geometry, dict(vol.meta))
    arr = apply_array_fixes(vol.array, fixes, "label", rel_path)
    geom = vol.geometry if arr.shape == vol.array.shape else Geometry.from_affine(arr.shape, vol.geometry.matrix)
    if "label_geometry" in fx and image_geometry is not None:
        if tuple(arr.shape) != tuple(image_geometry.shape):
            raise GeometryError("shape_mismatch", f"after its declared fixes the label has shape {tuple(arr.shape)}, "
                                f"the image {tuple(image_geometry.shape)}", path=rel_path,
                                remedy="check the dataset YAML's label fixes against this file")
        geom = image_geometry
    return Volume(arr, geom, dict(vol.meta))
