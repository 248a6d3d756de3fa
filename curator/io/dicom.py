"""DICOM series reading: pydicom validates headers, SimpleITK decodes pixels.

Headers are read, checked (one series, no gaps, even spacing, consistent slices) and
dropped: only the whitelisted technical facts of :func:`curator.io.deid.safe_metadata`
ever leave this module, so patient names, ids, dates and UIDs are never stored.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from numpy.typing import NDArray
from pydicom.errors import InvalidDicomError

from curator.errors import InputError, ReadError
from curator.io.deid import safe_metadata
from curator.io.dicom_files import NON_IMAGE_SOP, drop_copies, list_files, may_be_slice, not_a_scan
from curator.io.dicom_seg import is_seg, read_seg
from curator.io.formats import check_memory, scrub
from curator.io.itk import sitk_cause, volume_from_sitk
from curator.io.volume import Geometry, Volume


# DICOM files are often named after the patient (Siemens exports: NAME.CT.STUDY...DATE...IMA) or
# their SOP Instance UID: an error about one slice names the series folder (which the layout
# exposes) and the slice's rank, never the file name.
def _listed(k: int, n: int) -> str:
    return f"file {k} of {n} (sorted by file name)"


def _ranked(k: int, n: int) -> str:
    return f"slice {k} of {n} (sorted by position)"


def _read_header(p: Path, ref: str, where: str) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(p, defer_size=256, force=False)
    except InvalidDicomError:
        return None
    except PermissionError as e:
        raise ReadError("permission_denied", f"{ref} of the DICOM series cannot be read", path=where,
                        remedy="make every file of the series readable by the user running curator") from e
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ReadError("truncated_file", f"{ref} cannot be parsed as DICOM ({type(e).__name__})",
                        path=where, remedy="download the series again") from e


Unread = list[tuple[int, str]]  # (rank by file name, why): files of a series folder that are not DICOM


def _series(candidates: list[Path], path: Path, where: str) -> tuple[list[tuple[Path, pydicom.Dataset]], Unread]:
    """The image files of the one series among ``candidates``, with their headers; and the files
    named like slices (:func:`may_be_slice`) that are empty or not DICOM, by rank."""
    headers: list[tuple[Path, pydicom.Dataset]] = []
    unread: Unread = []
    for k, f in enumerate(candidates, start=1):
        ref = _listed(k, len(candidates)) if len(candidates) > 1 or f != path else "the file"
        ds = _read_header(f, ref, where)
        if ds is None:
            if len(candidates) > 1 and may_be_slice(f.name):
                unread.append((k, "is empty (0 bytes)" if _empty(f) else "is not DICOM"))
            continue
        if str(getattr(ds, "SOPClassUID", "")) in NON_IMAGE_SOP:
            continue
        headers.append((f, ds))
    if not headers:
        raise InputError("unknown_format", "no DICOM file found", path=where,
                         remedy="check the layout pattern; the folder holds no readable DICOM files")
    with_pixels = [(f, ds) for f, ds in headers if "PixelData" in ds or "FloatPixelData" in ds]
    if not with_pixels:
        raise InputError("dicom_no_pixel_data", f"{len(headers)} DICOM file(s) but none holds pixel data",
                         path=where, remedy="remove non-image DICOM objects (SR, PR, KO) from the series folder")
    scans = [(f, ds) for f, ds in with_pixels if not_a_scan(ds) is None]
    if scans:  # a study exported into one folder: its localizer and dose screenshots are not the scan
        with_pixels = scans
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for f, ds in with_pixels:
        series[str(getattr(ds, "SeriesInstanceUID", "?"))].append((f, ds))
    if len(series) > 1:
        sizes = sorted((len(v) for v in series.values()), reverse=True)
        raise InputError("dicom_multiple_series",
                         f"the folder mixes {len(series)} DICOM series ({sizes} files)", path=where,
                         remedy="split the folder by SeriesInstanceUID or narrow the layout pattern")
    return next(iter(series.values())), unread


def _empty(f: Path) -> bool:
    try:
        return f.stat().st_size == 0
    except OSError:
        return False


def unread_text(unread: Unread, n: int) -> str:
    """``unread`` of a folder of ``n`` files, for a message: "file 3 of 36 (sorted by file name) is empty (0 bytes)"."""
    said = [f"{_listed(k, n)} {why}" for k, why in unread[:4]]
    more = f" and {len(unread) - 4} more file(s) are empty or not DICOM" if len(unread) > 4 else ""
    return ", ".join(said) + more


def unread_kind(unread: Unread) -> str:
    return "empty_file" if all(why.startswith("is empty") for _, why in unread) else "corrupt_file"


def _lost_slices(unread: Unread, n: int, err: InputError, where: str) -> ReadError:
    """A series missing slices (a gap, or one slice left) whose folder holds files named like slices
    that cannot be read: they are the lost slices, and that is what to fix."""
    return ReadError(unread_kind(unread), f"{unread_text(unread, n)}, and the series is short of "
                     f"slices ({err.detail})", path=where,
                     remedy="download the series again; the slice file(s) on disk are broken")


def slice_file_order(path: Path) -> list[int] | None:
    """For each slice of the series at ``path`` as :func:`read_dicom` stacks it (sorted by
    position), the index of its file in natural file-name order; ``None`` for a single file.

    Ground truth stored as one image file per DICOM file (CHAOS' PNG slices) is numbered in
    the DICOM files' name order, which need not be the order of their positions.
    """
    from curator.io.slices import natural_key

    where = str(path)
    candidates = list_files(path) if path.is_dir() else [path]
    members, _ = _series(candidates, path, where)
    members = drop_copies(members, candidates)[0]  # as read_dicom leaves them out
    if len(members) < 2:
        return None
    by_name = sorted((f for f, _ in members), key=lambda f: natural_key(f.relative_to(path).as_posix()))
    rank = {f: i for i, f in enumerate(by_name)}
    return [rank[f] for f in _order_slices(members, where)]


def read_dicom(path: Path, *, files: list[Path] | None = None, max_voxels: int, role: str = "image",
               grid: Geometry | None = None, structure: str | None = None) -> Volume:
    """Read one DICOM series from a folder, a list of files, or a single (multi-frame) file; a
    segmentation object (SEG) as a label map, placed on ``grid`` (its image's) when given; one
    ``structure`` of a SEG or an RTSTRUCT as its mask (:mod:`curator.io.structures`)."""
    if role == "label" and files is None and path.is_file():
        held = _structure_file(path, structure, grid, max_voxels)
        if held is not None:
            return held
    candidates = files if files is not None else (list_files(path) if path.is_dir() else [path])
    where = str(path)
    members, unread = _series(candidates, path, where)
    members, copies = drop_copies(members, candidates) if len(members) > 1 else (members, [])
    first = members[0][1]
    if is_seg(first):
        if role != "label":
            raise InputError("dicom_seg_as_image", "the object is a DICOM segmentation (SEG), not an image of the "
                             "patient", path=where, remedy="point the image pattern at the scan's series; a SEG "
                             "belongs in the label pattern (its segment numbers are the raw values)")
        if len(members) > 1:
            raise InputError("dicom_inconsistent", f"a DICOM SEG with {len(members) - 1} other file(s) of its series",
                             path=where, remedy="point the label pattern at the SEG file itself")
        return read_seg(members[0][0], grid, max_voxels)
    meta = safe_metadata(first)
    meta["format"] = "dicom"
    if copies:  # ingest says which files were left out
        meta["duplicate_files"] = copies
    # in memory only (ingest's columns take named facts, never this): to check a SEG/RTSTRUCT's reference
    meta["series_uid"] = str(getattr(first, "SeriesInstanceUID", "") or "")
    frames = int(getattr(first, "NumberOfFrames", 1) or 1)
    if frames > 1 or len(members) == 1:
        if len(members) > 1:
            raise InputError("dicom_inconsistent", "multi-frame objects mixed with other files in one series",
                             path=where, remedy="keep one multi-frame object per folder")
        vol = _read_single(members[0][0], meta, max_voxels, where)
        fgeo = _frame_geometry(first) if frames > 1 else None
        if fgeo is not None:
            vol = _restack(vol, fgeo, where)
    else:
        try:
            ordered = _order_slices(members, where)
        except InputError as e:
            if unread and e.kind == "dicom_missing_slice":  # an unreadable file sits in the gap
                raise _lost_slices(unread, len(candidates), e, where) from e
            raise
        rows, cols = int(first.Rows), int(first.Columns)
        if rows * cols * len(ordered) > max_voxels:
            raise InputError("too_large", f"{rows}×{cols}×{len(ordered)} voxels exceed max_voxels",
                             path=where, remedy="raise `max_voxels` in the ingest settings")
        # 4 bytes: slices of mixed rescaling are read as float32
        check_memory(rows * cols * len(ordered) * 4, f"the series' {rows}×{cols}×{len(ordered)} volume", where)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p in ordered])
        if _mixed_rescale([ds for _, ds in members]):
            reader.SetOutputPixelType(sitk.sitkFloat32)  # else the first slice's integer type truncates the rest
        try:
            img = reader.Execute()
        except RuntimeError as e:
            raise _undecodable(ordered, where, e) from e
        vol = volume_from_sitk(img, where, None, meta, one_slice_ok=True)
    vol.array = _cast_pixels(vol.array)
    if vol.array.size and not np.any(vol.array != vol.array.flat[0]):
        raise InputError("dicom_no_pixel_data",
                         f"the pixel data is blank (every voxel is {vol.array.flat[0]}); it was stripped",
                         path=where, remedy="download the series again with its pixel data")
    gaps = _geometry_gaps(first)
    if gaps:  # ITK then falls back to 1 mm voxels and an identity orientation, without a word
        vol.meta["geometry_missing"] = ", ".join(gaps)
        stated = _slice_spacing(first)
        if stated:
            vol.meta["header_slice_spacing"] = stated
    if len(members) == 1 and frames <= 1:  # after the blank check: a stripped slice says so first
        single = InputError("not_3d", "the series is a single 2-D slice (one single-frame DICOM image), "
                            "not a volume", path=where,
                            remedy="check that the download is complete (the other slices may be missing); "
                            "otherwise drop the series: curator ingests 3-D volumes")
        raise _lost_slices(unread, len(candidates), single, where) if unread else single
    if unread:  # beside a complete volume, or lost past either end of it: the caller warns
        vol.meta["unread_files"] = (unread_kind(unread), unread_text(unread, len(candidates)), len(unread))
    return vol


def _structure_file(path: Path, structure: str | None, grid: Geometry | None, max_voxels: int) -> Volume | None:
    """A label file holding named structures (SEG, RTSTRUCT) read as asked, or None for another file."""
    from curator.io.rtstruct import is_rtstruct
    from curator.io.structures import read_structure

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError, KeyError):
        return None
    if structure is not None and (is_seg(ds) or is_rtstruct(ds)):
        return read_structure(path, structure, grid, max_voxels)
    if is_seg(ds):  # a label map of segment numbers
        return read_seg(path, grid, max_voxels)
    if is_rtstruct(ds):
        raise InputError("rtstruct_label_map", "an RTSTRUCT's structures (ROIs) overlap by design and cannot be one "
                         "label map", path=str(path), remedy="declare `labels.encoding: per_structure` with "
                         "`structures: {ROI name: term}` and a label pattern without {structure} (the ROIs are "
                         "inside the file; `curator sources check` lists them)")
    return None


def _read_single(p: Path, meta: dict[str, Any], max_voxels: int, where: str) -> Volume:
    """A multi-frame object; errors name ``where`` (the folder or the file the layout gave)."""
    ref = "the file" if str(p) == where else "the DICOM file of the folder"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
        n = int(np.prod(reader.GetSize(), dtype=np.float64))
        if n > max_voxels:
            raise InputError("too_large", f"{n:,} voxels exceed max_voxels", path=where,
                             remedy="raise `max_voxels` in the ingest settings")
        check_memory(n * int(reader.GetNumberOfComponents()) * 8, f"the object's {reader.GetSize()} volume", where)
        img = reader.Execute()
    except RuntimeError as e:
        cause = _pixel_cause(p) or sitk_cause(e, {str(p): ref})
        raise ReadError("corrupt_file", f"{ref} cannot be decoded: {cause}", path=where,
                        remedy="download it again or convert it with dcm2niix") from e
    return volume_from_sitk(img, where, None, meta, one_slice_ok=True)


def _restack(vol: Volume, fgeo: list[Geo], where: str) -> Volume:
    """A multi-frame object's frames in position order on the grid its per-frame positions
    give. GDCM stacks frames in file order and, when they are not evenly spaced, falls back to
    1 mm voxels without a word; the frames are checked as a series' slices are (gaps, uneven
    spacing, tilt, size, orientation) and placed from their own headers."""
    if vol.shape[2] != len(fgeo):
        raise InputError("dicom_inconsistent", f"the header places {len(fgeo)} frames but the pixel data holds "
                         f"{vol.shape[2]}", path=where, remedy="download the object again")
    ordered, step = _stack(fgeo, where, frames=True)
    iop, ps = ordered[0][2], ordered[0][4]
    sx, sy = (ps[1], ps[0]) if ps is not None else vol.geometry.spacing[:2]
    normal = np.cross(iop[0], iop[1])
    direction = tuple(np.column_stack([iop[0], iop[1], normal]).ravel())
    order = [g[0] for g in ordered]
    arr = vol.array if order == sorted(order) else np.asarray(vol.array[:, :, order], order="F")
    geom = Geometry.from_lps(vol.shape, (float(sx), float(sy), step), tuple(ordered[0][3]), direction)
    return Volume(arr, geom, vol.meta)


GEOMETRY_TAGS = (("PixelSpacing", "PixelMeasuresSequence"), ("ImageOrientationPatient", "PlaneOrientationSequence"),
                 ("ImagePositionPatient", "PlanePositionSequence"))


def _attribute(ds: pydicom.Dataset, keyword: str, macro: str) -> Any:
    """``keyword``'s value at ``ds``'s top level or in its (enhanced, multi-frame) shared or first
    per-frame functional group's ``macro``; ``None`` when it holds none."""
    if keyword in ds:
        return ds.get(keyword)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(groups)
        inner = seq[0].get(macro) if seq else None
        if inner and keyword in inner[0]:
            return inner[0].get(keyword)
    return None


def _geometry_gaps(ds: pydicom.Dataset) -> list[str]:
    """The geometry attributes ``ds`` holds neither at its top level nor in its (enhanced,
    multi-frame) shared or first per-frame functional group."""
    return [keyword for keyword, macro in GEOMETRY_TAGS if _attribute(ds, keyword, macro) is None]


def _slice_spacing(ds: pydicom.Dataset) -> tuple[str, float] | None:
    """The slice spacing the header states beside missing geometry (``("SpacingBetweenSlices",
    1.2)``, else its SliceThickness), for the warning to point at; ``None`` when it states neither."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _attribute(ds, keyword, "PixelMeasuresSequence")
        try:
            mm = float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            mm = None
        if mm is not None and np.isfinite(mm) and mm > 0:
            return keyword, mm
    return None


def _pixel_cause(p: Path) -> str | None:
    """Why pydicom cannot decode a file's pixel data (``None`` when it can)."""
    try:
        pydicom.dcmread(p).pixel_array  # noqa: B018 - decoding is the check
    except Exception as e:  # noqa: BLE001 - any failure is the cause being reported
        text = scrub(str(e), {str(p): "the file"}).split(" - ")[0]
        if "dependenc" in text:  # pydicom lacks a decoder for this transfer syntax: says nothing of the file
            return None
        return f"{text} ({type(e).__name__})" if text else type(e).__name__
    return None


def _undecodable(ordered: list[Path], where: str, e: RuntimeError) -> ReadError:
    """The series read failed: find the slice that cannot be decoded (read one by one) and say why."""
    n = len(ordered)
    for k, f in enumerate(ordered, start=1):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        try:
            reader.Execute()
        except RuntimeError as one:
            cause = _pixel_cause(f) or sitk_cause(one, {str(f): _ranked(k, n)})
            return ReadError("corrupt_file", f"{_ranked(k, n)} cannot be decoded: {cause}", path=where,
                             remedy="download the series again; if that slice stays broken, the series "
                             "cannot be used as it is")
    paths = {str(f): _ranked(k, n) for k, f in enumerate(ordered, start=1)}
    return ReadError("corrupt_file", f"every slice decodes alone but not the series as a whole: "
                     f"{sitk_cause(e, paths)}", path=where,
                     remedy="check that the slices share one pixel type and size; convert the series with "
                     "dcm2niix and ingest the result")


def _vector(ds: pydicom.Dataset, tag: str, n: int) -> tuple[float, ...] | None:
    try:
        v = tuple(float(x) for x in getattr(ds, tag))
    except (AttributeError, TypeError, ValueError):
        return None
    return v if len(v) == n else None


Geo = tuple[Any, tuple[int, int], NDArray[np.float64], NDArray[np.float64], tuple[float, ...] | None]


def _order_slices(members: list[tuple[Path, pydicom.Dataset]], where: str) -> list[Path]:
    """Sort slices along their normal; refuse gaps, uneven spacing, sheared (gantry-tilted)
    positions and slices that disagree with the others on size, orientation or pixel spacing."""
    n = len(members)
    geo: list[Geo] = []
    for k, (f, ds) in enumerate(members, start=1):
        iop, ipp = _vector(ds, "ImageOrientationPatient", 6), _vector(ds, "ImagePositionPatient", 3)
        if iop is None or ipp is None:
            tag = "ImageOrientationPatient" if iop is None else "ImagePositionPatient"
            raise InputError("dicom_inconsistent", f"{_listed(k, n)} has no valid {tag}", path=where,
                             remedy="without it the slices cannot be placed; download the series again, or "
                             "convert it with dcm2niix and check the result")
        size = (int(ds.Rows), int(ds.Columns))
        geo.append((f, size, np.asarray(iop).reshape(2, 3), np.asarray(ipp), _vector(ds, "PixelSpacing", 2)))
    return [g[0] for g in _stack(geo, where)[0]]


def _frame_geometry(ds: pydicom.Dataset) -> list[Geo] | None:
    """Each frame of an enhanced (multi-frame) object as (frame index, size, orientation,
    position, pixel spacing), from its per-frame or the shared functional groups; ``None`` when
    some frame has no position or orientation (the object cannot be checked frame by frame)."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if not per:
        return None

    def value(group: pydicom.Dataset, macro: str, keyword: str, n: int) -> tuple[float, ...] | None:
        for g in (group, shared):
            seq = g.get(macro) if g is not None else None
            if seq and keyword in seq[0]:
                return _vector(seq[0], keyword, n)
        return _vector(ds, keyword, n)

    size = (int(ds.Rows), int(ds.Columns))
    geo: list[Geo] = []
    for k, group in enumerate(per):
        iop = value(group, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        ipp = value(group, "PlanePositionSequence", "ImagePositionPatient", 3)
        if iop is None or ipp is None:
            return None
        geo.append((k, size, np.asarray(iop).reshape(2, 3), np.asarray(ipp),
                    value(group, "PixelMeasuresSequence", "PixelSpacing", 2)))
    return geo


def _frame_ranked(k: int, n: int) -> str:
    return f"frame {k} of {n} (sorted by position)"


def _stack(geo: list[Geo], where: str, frames: bool = False) -> tuple[list[Geo], float]:
    """``geo`` sorted along the slices' normal, and the step between slices; refuses gaps,
    uneven spacing, sheared (gantry-tilted) positions and slices (or, with ``frames``, the
    frames of one multi-frame object) that disagree with the others on size, orientation or
    pixel spacing."""
    n = len(geo)
    ranked = _frame_ranked if frames else _ranked
    same = ("check that the object holds one stack of frames (not several temporal positions, echoes or "
            "stacks); split it with dcm2niix" if frames else
            "check that the folder holds one series of one acquisition")
    # the series' orientation is the one most slices share (an odd slice may come first)
    votes = Counter(tuple(np.round(g[2].ravel(), 3)) for g in geo)
    iop_ref = next(g[2] for g in geo if tuple(np.round(g[2].ravel(), 3)) == votes.most_common(1)[0][0])
    normal = np.cross(iop_ref[0], iop_ref[1])
    geo = sorted(geo, key=lambda g: float(np.dot(normal, g[3])))
    size_ref = Counter(g[1] for g in geo).most_common(1)[0][0]
    spacing_ref = Counter(g[4] for g in geo).most_common(1)[0][0]
    for k, (_, size, orient, _, spacing) in enumerate(geo, start=1):
        if size != size_ref:
            raise InputError("dicom_inconsistent", f"{ranked(k, n)} has another size ({size[0]}×{size[1]} where "
                             f"the others have {size_ref[0]}×{size_ref[1]})", path=where, remedy=same)
        if np.max(np.abs(orient - iop_ref)) > 1e-3:
            raise InputError("dicom_inconsistent", f"{ranked(k, n)} has another orientation", path=where,
                             remedy=same)
        if (spacing is None) != (spacing_ref is None) or spacing is not None and spacing_ref is not None and \
                max(abs(a - b) for a, b in zip(spacing, spacing_ref, strict=True)) > 1e-4 * max(spacing_ref):
            def mm(v: tuple[float, ...] | None) -> str:
                return "none" if v is None else " × ".join(f"{x:g}" for x in v) + " mm"
            raise InputError("dicom_inconsistent", f"{ranked(k, n)} has another pixel spacing ({mm(spacing)} "
                             f"where the others have {mm(spacing_ref)})", path=where, remedy=same)
    pos = np.array([g[3] for g in geo])
    z = pos @ normal
    gaps = np.diff(z)
    step = 0.0
    what = "frames" if frames else "slices"
    if gaps.size:
        if np.any(gaps < 1e-4):
            at = np.flatnonzero(gaps < 1e-4)
            pairs = "; ".join(f"{ranked(int(i) + 1, n)} and {int(i) + 2} at {float(z[i]):.6g} mm along the normal"
                              for i in at[:3]) + (f"; and {at.size - 3} more" if at.size > 3 else "")
            raise InputError("dicom_inconsistent", f"{at.size} pair(s) of {what} share one position: {pairs}",
                             path=where, remedy=same if frames else
                             "the folder holds slices of two acquisitions (or two reconstructions) at one position, "
                             "which differ (exact copies of a file are left out); keep one series")
        _check_shear(pos, z, normal, spacing_ref, where)
        step = float(np.median(gaps))
        worst = float(np.max(np.abs(gaps - step)))
        if worst > max(0.01, 0.1 * step):
            # a missing slice makes some gaps whole multiples of the true step, which is then the
            # smallest gap (the median of a short series may sit between the two, 3 and 6 → 4.5)
            step = float(gaps.min())
            ratio = gaps / step
            if np.all(np.abs(ratio - np.round(ratio)) < 0.1) and np.any(np.round(ratio) >= 2):  # every gap k steps
                missing = int(np.sum(np.round(ratio[ratio >= 1.5]) - 1))
                raise InputError("dicom_missing_slice",
                                 f"{missing} {what[:-1]}(s) missing: positions jump by {float(np.max(gaps)):.3g} mm "
                                 f"where the step is {step:.3g} mm", path=where,
                                 remedy=f"download the {'object' if frames else 'series'} again; "
                                 f"a {what[:-1]} is missing")
            raise InputError("dicom_uneven_spacing",
                             f"{what[:-1]} spacing varies from {float(gaps.min()):.3g} to {float(gaps.max()):.3g} mm",
                             path=where, remedy=f"resample the {'object' if frames else 'series'} onto an even "
                             "grid before ingest")
        step = float(np.mean(gaps))
    return geo, step


def _check_shear(pos: NDArray[np.float64], z: NDArray[np.float64], normal: NDArray[np.float64],
                 spacing: tuple[float, ...] | None, where: str) -> None:
    """Slices must be stacked along their normal: positions that also move within the slice
    plane (a tilted gantry, or a sheared stack) cannot be described by a voxel grid's affine."""
    inplane = pos - np.outer(z, normal)
    drift = np.linalg.norm(inplane - inplane[0], axis=1)
    tol = max(0.02, 0.1 * min(spacing)) if spacing else 0.02  # a tenth of a pixel
    worst = float(np.max(drift))
    if worst <= tol:
        return
    span = float(z[-1] - z[0])
    angle = float(np.degrees(np.arctan2(float(drift[-1]), span)))
    raise InputError("dicom_gantry_tilt",
                     f"the slice positions move within the slice plane by up to {worst:.3g} mm over {span:.3g} mm "
                     f"of slices (a gantry tilt or shear of about {angle:.2g}°): read as a stack of slices the "
                     "volume would be sheared", path=where,
                     remedy="resample the series with a tilt correction (dcm2niix corrects CT gantry tilt and "
                     "writes a *_Tilt_* NIfTI; ingest that file instead), or exclude the series")


def _mixed_rescale(headers: list[pydicom.Dataset]) -> bool:
    """Slices whose RescaleSlope/Intercept differ, or are not whole numbers (e.g. PET, or one
    slice rescaled by 0.5): their values need a float type, not the first slice's integer one."""
    pairs = {(float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0))
             for ds in headers}
    return len(pairs) > 1 or any(not float(v).is_integer() for pair in pairs for v in pair)


def _cast_pixels(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Readers decode to int16, int32 or float; settle on int16 when the values allow it."""
    if a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if -32768 <= lo and hi <= 32767:
            return a.astype(np.int16, copy=False)
        return a.astype(np.int32, copy=False)
    if a.dtype.kind == "f":
        r = np.rint(a)
        if np.array_equal(r, a) and r.min() >= -32768 and r.max() <= 32767:
            return r.astype(np.int16)
        return a.astype(np.float32, copy=False)
    return a
