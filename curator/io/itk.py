"""NRRD / MHA / MHD reading through SimpleITK."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from curator.errors import InputError, ReadError
from curator.io.formats import scrub, squeeze_to_3d
from curator.io.volume import Geometry, Volume

_COMPRESSED = re.compile(rb"^\s*(encoding\s*:\s*(gz|gzip|bz2|bzip2)|CompressedData\s*=\s*True)",
                         re.IGNORECASE | re.MULTILINE)


HEADER_CAP = 1 << 20  # no real header is longer; a file without one is not read whole
_ELEMENT_DATA_FILE = re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[^\n]*(\n|$)", re.IGNORECASE | re.MULTILINE)


def _header_bytes(path: Path) -> bytes:
    """The text header of a NRRD (up to its blank line) or MetaImage file (up to its
    ``ElementDataFile`` line, which ends it), however long — Slicer and scanner exports
    write kilobytes of key/value tags."""
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    buf = b""
    with open(path, "rb") as f:
        while len(buf) < HEADER_CAP:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            if nrrd and b"\n\n" in buf:
                break
            if not nrrd and (m := _ELEMENT_DATA_FILE.search(buf)) and m.group(1):
                return buf[:m.end()]
    return buf.split(b"\n\n", 1)[0] if nrrd else buf


def _data_file(path: Path) -> Path | None:
    """The separate data file of a .mhd/.nhdr header (None for single-file formats)."""
    head = _header_bytes(path).decode("latin-1", "replace")
    m = re.search(r"^\s*(ElementDataFile|data file|datafile)\s*[:=]\s*(.+?)\s*$", head,
                  re.IGNORECASE | re.MULTILINE)
    if not m or m.group(2).strip().upper() == "LOCAL":
        return None
    return path.parent / m.group(2).strip()


def read_itk(path: Path, *, channel: int | None, max_voxels: int, channels: int | None = None) -> Volume:
    data_file = _data_file(path)
    if data_file is not None:
        if ".." in Path(data_file.name).parts or data_file.resolve().parent != path.resolve().parent:
            raise InputError("path_escape", "the header points to data outside its folder",
                             path=str(path), remedy="keep the .raw/.zraw file next to its header")
        if not data_file.exists():
            raise ReadError("file_not_found", "the data file named by the header (ElementDataFile / data file) is "
                            "missing", path=str(path), remedy="download the .raw/.zraw file that belongs to this header")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        cause = sitk_cause(e, {str(path): "the file"})
        raise InputError("corrupt_file", f"SimpleITK cannot parse the header: {cause}",
                         path=str(path), remedy="download the file again or re-export it") from e
    size = tuple(int(s) for s in reader.GetSize())
    ncomp = int(reader.GetNumberOfComponents())
    n = int(np.prod(size, dtype=np.float64)) * ncomp
    if n > max_voxels:
        raise InputError("too_large", f"header declares {size} × {ncomp} = {n:,} values, over max_voxels",
                         path=str(path), remedy="raise `max_voxels` in the ingest settings if the file is genuine")
    head = _header_bytes(path)
    itemsize = sitk.Image([1] * len(size), reader.GetPixelID(), ncomp).GetSizeOfPixelComponent() \
        if len(size) in (2, 3) else 4
    payload = data_file if data_file is not None else path
    if not _COMPRESSED.search(head):
        need = n * itemsize
        have = payload.stat().st_size - (0 if data_file is not None else len(head))
        if need > have + 4096:
            raise InputError("header_size_mismatch",
                             f"header declares {size} ({need:,} bytes) but the file holds about {have:,}",
                             path=str(path), remedy="download the file again; header and data disagree")
    try:
        img = reader.Execute()
    except RuntimeError as e:
        cause = sitk_cause(e, {str(path): "the file"})
        raise ReadError("truncated_file", f"SimpleITK cannot read the data: {cause}",
                        path=str(path), remedy="download the file again and compare its checksum") from e
    return volume_from_sitk(img, str(path), channel, {"format": "itk"}, channels)


def volume_from_sitk(img: sitk.Image, path: str, channel: int | None, meta: dict[str, Any],
                     channels: int | None = None) -> Volume:
    """Copy a SimpleITK image into a :class:`Volume` (array axes i, j, k; affine in RAS)."""
    dim = img.GetDimension()
    if dim < 2 or dim > 4:
        raise InputError("not_3d", f"a {dim}-D image is not a volume", path=path,
                         remedy="drop the file or convert it to 3-D")
    arr = sitk.GetArrayFromImage(img)  # a copy (never a view that outlives the image)
    # sitk arrays are [z, y, x] (+ components last); curator arrays are [i, j, k]: the transpose
    # is a Fortran-ordered view of that copy (consumers take any strides; no second copy).
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = np.moveaxis(arr, -1, 0)
    arr = arr.T  # [x, y, z] or [x, y, z, c]
    if dim == 4:
        spacing, origin = img.GetSpacing()[:3], img.GetOrigin()[:3]
        d4 = np.asarray(img.GetDirection()).reshape(4, 4)
        direction = tuple(d4[:3, :3].ravel())
    elif dim == 2:
        spacing, origin = (*img.GetSpacing(), 1.0), (*img.GetOrigin(), 0.0)
        d2 = np.asarray(img.GetDirection()).reshape(2, 2)
        d3 = np.eye(3)
        d3[:2, :2] = d2
        direction = tuple(d3.ravel())
    else:
        spacing, origin, direction = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    arr = squeeze_to_3d(arr, path, channel, channels)
    geom = Geometry.from_lps(arr.shape, spacing, origin, direction)
    return Volume(arr, geom, meta)


_SITK_LEVEL = re.compile(r"^(?:sitk::ERROR|ITK ERROR|ERROR):\s*")
_SITK_OBJECT = re.compile(r"^(\w+)\(0x[0-9a-fA-F]+\):")  # "GDCMImageIO(0x55a9...):"


def sitk_cause(e: BaseException, known: dict[str, str] | None = None) -> str:
    """What a SimpleITK exception says went wrong, without its source-file location
    ("Exception thrown in SimpleITK X: /tmp/SimpleITK-build/...cxx:468:") and with every
    file path replaced by a neutral label (``known``) or dropped."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    causes = [ln for ln in lines[1:] if not ln.startswith("Exception thrown in SimpleITK")]
    out = [_SITK_OBJECT.sub(r"\1:", _SITK_LEVEL.sub("", ln)) for ln in causes or lines[:1]]
    msg = scrub(" ".join(out), known).rstrip(" :")
    return (msg or "no cause given")[:200]
