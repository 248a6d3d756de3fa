"""DICOM series reading: pydicom validates headers, SimpleITK decodes pixels.

Headers are read, checked (one series, no gaps, even spacing, consistent slices) and
dropped: only the whitelisted technical facts of :func:`curator.io.deid.safe_metadata`
ever leave this module, so patient names, ids, dates and UIDs are never stored.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from curator.errors import InputError, ReadError
from curator.io.deid import safe_metadata
from curator.io.itk import _first_line, volume_from_sitk
from curator.io.volume import Volume

NON_IMAGE_SOP = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
}


def list_files(folder: Path) -> list[Path]:
    """Regular files under ``folder`` (recursively), without following links out of it."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not name.startswith("."):
                out.append(p)
    return out


def _read_header(p: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(p, defer_size=256, force=False)
    except InvalidDicomError:
        return None
    except PermissionError as e:
        raise ReadError("permission_denied", "cannot read the DICOM file", path=str(p),
                        remedy="make it readable by the user running curator") from e
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ReadError("truncated_file", f"a DICOM file cannot be parsed ({type(e).__name__})",
                        path=str(p.parent), remedy="download the series again") from e


def read_dicom(path: Path, *, files: list[Path] | None = None, max_voxels: int) -> Volume:
    """Read one DICOM series from a folder, a list of files, or a single (multi-frame) file."""
    candidates = files if files is not None else (list_files(path) if path.is_dir() else [path])
    headers: list[tuple[Path, pydicom.Dataset]] = []
    for f in candidates:
        ds = _read_header(f)
        if ds is None or str(getattr(ds, "SOPClassUID", "")) in NON_IMAGE_SOP:
            continue
        headers.append((f, ds))
    where = str(path)
    if not headers:
        raise InputError("unknown_format", "no DICOM file found", path=where,
                         remedy="check the layout pattern; the folder holds no readable DICOM files")
    with_pixels = [(f, ds) for f, ds in headers if "PixelData" in ds or "FloatPixelData" in ds]
    if not with_pixels:
        raise InputError("dicom_no_pixel_data", f"{len(headers)} DICOM file(s) but none holds pixel data",
                         path=where, remedy="remove non-image DICOM objects (SR, PR, KO) from the series folder")
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for f, ds in with_pixels:
        series[str(getattr(ds, "SeriesInstanceUID", "?"))].append((f, ds))
    if len(series) > 1:
        sizes = sorted((len(v) for v in series.values()), reverse=True)
        raise InputError("dicom_multiple_series",
                         f"the folder mixes {len(series)} DICOM series ({sizes} files)", path=where,
                         remedy="split the folder by SeriesInstanceUID or narrow the layout pattern")
    members = next(iter(series.values()))
    first = members[0][1]
    meta = safe_metadata(first)
    meta["format"] = "dicom"
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1 or len(members) == 1:
        if len(members) > 1:
            raise InputError("dicom_inconsistent", "multi-frame objects mixed with other files in one series",
                             path=where, remedy="keep one multi-frame object per folder")
        vol = _read_single(members[0][0], meta, max_voxels)
    else:
        ordered = _order_slices(members, where)
        rows, cols = int(first.Rows), int(first.Columns)
        if rows * cols * len(ordered) > max_voxels:
            raise InputError("too_large", f"{rows}×{cols}×{len(ordered)} voxels exceed max_voxels",
                             path=where, remedy="raise `max_voxels` in the ingest settings")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p in ordered])
        try:
            img = reader.Execute()
        except RuntimeError as e:
            raise ReadError("corrupt_file", f"the pixel data cannot be decoded: {_first_line(e)}",
                            path=where, remedy="download the series again") from e
        vol = volume_from_sitk(img, where, None, meta)
    vol.array = _cast_pixels(vol.array)
    if vol.array.size and not np.any(vol.array != vol.array.flat[0]):
        raise InputError("dicom_no_pixel_data",
                         f"the pixel data is blank (every voxel is {vol.array.flat[0]}); it was stripped",
                         path=where, remedy="download the series again with its pixel data")
    return vol


def _read_single(p: Path, meta: dict[str, Any], max_voxels: int) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
        n = int(np.prod(reader.GetSize(), dtype=np.float64))
        if n > max_voxels:
            raise InputError("too_large", f"{n:,} voxels exceed max_voxels", path=str(p),
                             remedy="raise `max_voxels` in the ingest settings")
        img = reader.Execute()
    except RuntimeError as e:
        raise ReadError("corrupt_file", f"the DICOM object cannot be decoded: {_first_line(e)}",
                        path=str(p), remedy="download it again or convert it with dcm2niix") from e
    return volume_from_sitk(img, str(p), None, meta)


def _order_slices(members: list[tuple[Path, pydicom.Dataset]], where: str) -> list[Path]:
    """Sort slices along their normal; refuse gaps, uneven spacing and mixed geometry."""
    first = members[0][1]
    try:
        iop = np.asarray([float(x) for x in first.ImageOrientationPatient]).reshape(2, 3)
    except (AttributeError, ValueError) as e:
        raise InputError("dicom_inconsistent", "slices lack ImageOrientationPatient", path=where,
                         remedy="the series has no geometry; convert it with dcm2niix and check the result") from e
    normal = np.cross(iop[0], iop[1])
    pos: list[tuple[float, Path]] = []
    # Slices are named by their position in the folder listing, never by file name: DICOM
    # files are often named after their SOP Instance UID, which must not reach any output.
    for n, (f, ds) in enumerate(members, start=1):
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise InputError("dicom_inconsistent", f"file {n} of {len(members)} has another size "
                             f"({ds.Rows}×{ds.Columns} vs {first.Rows}×{first.Columns})", path=where,
                             remedy="check that the folder holds one series of one acquisition")
        o = np.asarray([float(x) for x in ds.ImageOrientationPatient]).reshape(2, 3)
        if np.max(np.abs(o - iop)) > 1e-3:
            raise InputError("dicom_inconsistent", f"file {n} of {len(members)} has another orientation",
                             path=where, remedy="check that the folder holds one series of one acquisition")
        pos.append((float(np.dot(normal, [float(x) for x in ds.ImagePositionPatient])), f))
    pos.sort(key=lambda t: t[0])
    z = np.array([t[0] for t in pos])
    gaps = np.diff(z)
    if gaps.size:
        if np.any(gaps < 1e-4):
            raise InputError("dicom_inconsistent", "two slices share one position", path=where,
                             remedy="the folder holds duplicate slices or two acquisitions; keep one")
        step = float(np.median(gaps))
        worst = float(np.max(np.abs(gaps - step)))
        if worst > max(0.01, 0.1 * step):
            k = gaps / step
            if np.any(np.abs(k - np.round(k)) < 0.1) and np.any(np.round(k) >= 2):
                missing = int(np.sum(np.round(k[k >= 1.5]) - 1))
                raise InputError("dicom_missing_slice",
                                 f"{missing} slice(s) missing: positions jump by {float(np.max(gaps)):.3g} mm "
                                 f"where the step is {step:.3g} mm", path=where,
                                 remedy="download the series again; a slice is missing")
            raise InputError("dicom_uneven_spacing",
                             f"slice spacing varies from {float(gaps.min()):.3g} to {float(gaps.max()):.3g} mm",
                             path=where, remedy="resample the series onto an even grid before ingest")
    return [t[1] for t in pos]


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
