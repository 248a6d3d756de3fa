"""DICOM Segmentation objects (SEG) read as label maps, placed on their image's grid.

A SEG (the form of most segmentations in TCIA's and NCI's Imaging Data Commons collections)
holds one binary (or fractional, or label-map) frame per segment and slice; frames without any
segment are usually left out, so a SEG covers only the slices its segments reach, and its
frames of one slice are stacked, not combined. Read as an ordinary multi-frame object it is a
stack of frames with a wrong geometry. :func:`read_seg` decodes it with highdicom into one label
map whose values are the segment numbers (the dataset YAML maps them: ``values: {1: liver}``),
on the grid its frames' positions span, then — given the image's grid — places it there by an
exact voxel correspondence (axes permuted or flipped, a sub-range of slices), never resampled.

Segments that overlap cannot share one label map: the read fails, naming them. Each segment's
own label (``SegmentLabel``) is kept in the volume's ``meta["segments"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray

from curator.errors import GeometryError, InputError, LabelError
from curator.io.formats import ITK_EXT, NIFTI_EXT
from curator.io.volume import LPS_TO_RAS, Geometry, Volume

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_TO_NIFTI = ("convert it to a label map on the image's grid (e.g. dcmqi's segimage2itkimage, or highdicom's "
             "Segmentation.get_volume) and point the label pattern at that")


def is_seg(header: pydicom.Dataset) -> bool:
    return str(header.get("Modality", "")) == "SEG" or str(header.get("SOPClassUID", "")) == SEG_SOP_CLASS


_NOT_DICOM = (*NIFTI_EXT, *ITK_EXT, ".npy", ".mat", ".png")


def dicom_header(path: Path) -> pydicom.Dataset | None:
    """The header (no pixel data) of the DICOM file at ``path``, or None for a folder, a file of
    another format (by name or content) or one that cannot be parsed."""
    from pydicom.errors import InvalidDicomError

    if not path.is_file() or path.name.lower().endswith(_NOT_DICOM):
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError, KeyError):
        return None


def referenced_series(ds: pydicom.Dataset) -> list[str]:
    """The SeriesInstanceUIDs a SEG or an RTSTRUCT says it was drawn on (in memory only: UIDs are
    never published)."""
    out = [str(r.get("SeriesInstanceUID", "")) for r in ds.get("ReferencedSeriesSequence", [])]  # SEG
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence", []):
            out += [str(s.get("SeriesInstanceUID", "")) for s in study.get("RTReferencedSeriesSequence", [])]
    return [u for u in out if u]


def segment_labels(path: Path) -> dict[int, str] | None:
    """``{segment number: SegmentLabel}`` of the DICOM SEG at ``path`` from its header, or None when
    the file is not a SEG (or not DICOM)."""
    ds = dicom_header(path)
    return None if ds is None or not is_seg(ds) else segments_of(ds)


def segments_of(ds: pydicom.Dataset) -> dict[int, str]:
    """``{segment number: SegmentLabel}`` of a SEG's header."""
    return {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])}


def open_seg(path: Path) -> Any:
    """The SEG at ``path`` parsed by highdicom; a file it cannot parse is a ``corrupt_file``."""
    import highdicom as hd

    try:
        return hd.seg.segread(path)
    except Exception as e:  # highdicom and pydicom fail on a damaged file in many ways
        raise InputError("corrupt_file", f"the DICOM SEG cannot be decoded ({type(e).__name__}: {str(e)[:160]})",
                         path=str(path), remedy="download it again; " + _TO_NIFTI) from e


def read_seg(path: Path, grid: Geometry | None, max_voxels: int, segment: int | None = None,
             seg: Any = None, tol_mm: float = 0.01) -> Volume:
    """The SEG at ``path`` (``seg``: already parsed by :func:`open_seg`) as a label map of segment
    numbers, or with ``segment`` that segment alone as a 0/1 mask (segments may then overlap); on
    ``grid`` when given (the image's), else on the grid its frames span."""
    where = str(path)
    seg = open_seg(path) if seg is None else seg
    segments = segments_of(seg)
    n = int(seg.Rows) * int(seg.Columns) * int(getattr(seg, "NumberOfFrames", 1) or 1)
    if n > max_voxels:
        raise InputError("too_large", f"{n:,} voxels in the SEG's frames exceed max_voxels", path=where,
                         remedy="raise `max_voxels` in the ingest settings")
    dtype = np.uint16 if max(segments, default=1) > 255 else np.uint8
    try:
        if segment is not None or str(seg.SegmentationType) == "FRACTIONAL":  # each segment apart; > 1/2 is in it
            numbers = [segment] if segment is not None else sorted(segments)
            vol = seg.get_volume(segment_numbers=numbers, combine_segments=False, rescale_fractional=True)
            inside = np.asarray(vol.array) >= 0.5
            if segment is None and (inside.sum(axis=-1) > 1).any():
                raise ValueError("segments overlap")
            array = (inside * np.asarray(numbers if segment is None else [1], dtype=dtype)).sum(axis=-1, dtype=dtype)
        else:
            vol = seg.get_volume(combine_segments=True, dtype=dtype)
            array = np.asarray(vol.array)
    except (ValueError, RuntimeError) as e:
        raise seg_error(e, segments, where) from e
    own = Geometry.from_affine(array.shape, LPS_TO_RAS @ np.asarray(vol.affine, dtype=np.float64))
    out = Volume(array, own, {"format": "dicom-seg", "segments": segments,
                              "segmentation_type": str(seg.SegmentationType), "references": referenced_series(seg)})
    return out if grid is None else onto(out, grid, tol_mm, where)


def seg_error(e: Exception, segments: dict[int, str], where: str) -> Exception:
    text = str(e)
    if "overlap" in text.lower():
        named = ", ".join(f"{k} ({v})" if v else str(k) for k, v in sorted(segments.items()))
        return LabelError("dicom_seg_overlap", f"segments of the SEG overlap (segments {named}): one label map "
                          "holds one segment per voxel", path=where,
                          remedy="if the overlap is meant (a tumour inside its organ), read the SEG per structure: "
                          "`labels.encoding: per_structure` with `structures: {segment label: term}` and the label "
                          "pattern as it is (docs/registry.md, 'Structures inside one file')")
    if any(w in text.lower() for w in ("spacing", "position", "regular", "orientation", "volume", "plane")):
        return GeometryError("dicom_seg_geometry", f"the SEG's frames do not form a regular volume ({text[:200]})",
                             path=where, remedy=_TO_NIFTI)
    return InputError("corrupt_file", f"the SEG's frames cannot be decoded ({type(e).__name__}: {text[:160]})",
                      path=where, remedy="download it again")


def onto(vol: Volume, grid: Geometry, tol_mm: float, where: str) -> Volume:
    """``vol`` placed on ``grid`` when every voxel centre of ``vol`` is one of ``grid``'s (axes
    permuted or flipped, any sub-box), the rest background; else a ``geometry_mismatch``."""
    m = np.linalg.solve(grid.matrix, vol.geometry.matrix)  # vol voxel index -> grid voxel index
    lin, shift = m[:3, :3], m[:3, 3]
    perm = np.abs(lin).argmax(axis=0)  # the grid axis each of vol's axes runs along
    signs = np.sign(lin[perm, [0, 1, 2]])
    exact = np.zeros((3, 3))
    exact[perm, [0, 1, 2]] = signs
    spacing = np.asarray(grid.spacing)
    if sorted(perm.tolist()) != [0, 1, 2] or np.abs((lin - exact) * spacing[:, None]).max() * max(vol.shape) > tol_mm \
            or np.abs((shift - np.rint(shift)) * spacing).max() > tol_mm:
        raise GeometryError("geometry_mismatch", f"the SEG's frames are not on the image's grid: "
                            f"{grid.mismatch(vol.geometry, tol_mm) or 'voxel centres differ'}", path=where,
                            remedy="check that the SEG belongs to this image series (its referenced series)")
    start = np.rint(shift).astype(int)  # grid index of vol's first voxel, per grid axis
    end = start.copy()
    end[perm] += (np.asarray(vol.shape) - 1) * signs.astype(int)  # vol axis i runs along grid axis perm[i]
    lo_g, hi_g = np.minimum(start, end), np.maximum(start, end)
    if (lo_g < 0).any() or (hi_g >= np.asarray(grid.shape)).any():
        raise GeometryError("geometry_mismatch", f"the SEG's frames reach outside the image (its voxels {lo_g.tolist()}"
                            f"..{hi_g.tolist()}, the image's shape {list(grid.shape)})", path=where,
                            remedy="check that the SEG belongs to this image series (its referenced series)")
    a: NDArray[Any] = vol.array
    a = np.flip(a, axis=tuple(i for i in range(3) if signs[i] < 0)) if (signs < 0).any() else a
    a = np.transpose(a, np.argsort(perm))  # grid axis g takes vol's axis along it
    out = np.zeros(grid.shape, dtype=vol.array.dtype)
    out[lo_g[0]:hi_g[0] + 1, lo_g[1]:hi_g[1] + 1, lo_g[2]:hi_g[2] + 1] = a
    return Volume(out, grid, dict(vol.meta))
