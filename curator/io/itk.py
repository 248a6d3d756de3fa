"""NRRD / MHA / MHD reading through SimpleITK."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from curator.errors import InputError, ReadError
from curator.io.formats import check_memory, frames_of, scrub, squeeze_to_3d
from curator.io.volume import Geometry, Volume

# data whose size on disk says nothing of its voxel count: compressed, or NRRD's text encodings
_NOT_RAW = re.compile(rb"^\s*(encoding\s*:\s*(gz|gzip|bz2|bzip2|ascii|text|txt)\s*$|CompressedData\s*=\s*True)",
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


_DATA_FILE = re.compile(r"^[ \t]*(ElementDataFile|data[ \t]?file)[ \t]*[:=][ \t]*(.*?)[ \t]*$",
                        re.IGNORECASE | re.MULTILINE)
# NRRD `data file: <format> <min> <max> <step> [<subdim>]`, MetaImage `ElementDataFile = <format> <min> <max> <step>`
_NUMBERED = re.compile(r"(\S*%[0-9]*d\S*)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)(?:\s+\d+)?")
_MAX_DATA_FILES = 100_000


def _data_files(path: Path, head: str) -> list[Path] | None:
    """The separate data files of a .mhd/.nhdr header (None for single-file formats): one file,
    a ``LIST`` of files (the lines after the header's data-file line, one per slice or slab), or
    a numbered ``%d`` pattern with its first, last and step. ``head``: the header's text."""
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    m = _DATA_FILE.search(head)
    if not m or m.group(2).upper() == "LOCAL":
        return None
    value = m.group(2)
    if value.split()[:1] == ["LIST"]:  # `LIST` or `LIST 2D` (MetaImage), `LIST <subdim>` (NRRD)
        # the listed names end the header: NRRD's before its blank line, MetaImage's to the end of the file
        text = head if nrrd else _listing(path)
        names = [ln.strip() for ln in text[m.end():].splitlines() if ln.strip()]
    elif n := _NUMBERED.fullmatch(value):
        fmt, first, last, step = n.group(1), int(n.group(2)), int(n.group(3)), int(n.group(4))
        count = (last - first) // step + 1 if step and (last - first) * step >= 0 else 0
        if not 0 < count <= _MAX_DATA_FILES:
            # the pattern is not quoted: like the listed files', its name may be the patient's
            raise InputError("corrupt_file", f"the header's numbered data files name no file or too many ({count} files)",
                             path=str(path), remedy="check the header's data file line (format, first, last, step)")
        names = [fmt % (first + i * step) for i in range(count)]
    else:
        names = [value]
    if not names or len(names) > _MAX_DATA_FILES:
        raise InputError("corrupt_file", "the header lists no data file (or too many) after `LIST`", path=str(path),
                         remedy="list the data files, one per line, after the header's data file line")
    return [path.parent / name for name in names]


_NDIMS = re.compile(r"^[ \t]*NDims[ \t]*=[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def _check_ndims(path: Path, head: str) -> None:
    """Refuse a MetaImage header whose ``NDims`` no volume has, before SimpleITK reads it: ITK's
    MetaIO writes past its arrays on such a value (``NDims = 73`` aborts the process with
    "corrupted size vs. prev_size", ``-1`` or ``999999`` segfault — measured with SimpleITK 2.5),
    and a crash takes every case of an in-process run with it, not just this file."""
    if path.suffix.lower() not in (".mha", ".mhd"):
        return  # NRRD's reader (teem) refuses a bad `dimension:` with an error of its own
    m = _NDIMS.search(head)
    if m and not (m.group(1).isdigit() and 1 <= int(m.group(1)) <= 4):
        raise InputError("corrupt_file", f"the header declares NDims = {m.group(1)[:20]}: a volume has 3 "
                         "dimensions (4 with channels)", path=str(path),
                         remedy="download the file again or re-export it")


# NRRD spaces that name the patient's axes (with their time variants); scanner-xyz and
# 3D-right/left-handed are world spaces without an anatomical meaning
_ANATOMICAL_SPACES = {"right-anterior-superior", "ras", "left-anterior-superior", "las", "left-posterior-superior",
                      "lps", "right-anterior-superior-time", "rast", "left-anterior-superior-time", "last",
                      "left-posterior-superior-time", "lpst"}
_NRRD_SPACE = re.compile(r"^[ \t]*space[ \t]*:(?!=)[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_NRRD_DIRECTIONS = re.compile(r"^[ \t]*space[ \t]+directions[ \t]*:(?!=)", re.IGNORECASE | re.MULTILINE)
_MHA_DIRECTION = re.compile(r"^[ \t]*(TransformMatrix|Rotation|Orientation)[ \t]*=", re.IGNORECASE | re.MULTILINE)


def orientation_gap(path: Path, head: str) -> str | None:
    """What the header of a NRRD or MetaImage file lacks to place its axes in the patient (``None``
    when it states them): a NRRD without an anatomical ``space`` (none at all, only ``space
    dimension``, or ``scanner-xyz`` / ``3D-right-handed``) or without ``space directions``; a
    MetaImage without a ``TransformMatrix`` (ITK's own files always write one). SimpleITK reads
    such a file as LPS axes at the given origin (0 when none), and curator with it.

    >>> lps = "space: left-posterior-superior\\nspace directions: (1,0,0) (0,1,0) (0,0,1)\\n"
    >>> orientation_gap(Path("a.nrrd"), lps) is None
    True
    >>> orientation_gap(Path("a.nrrd"), lps.replace("left-posterior-superior", "scanner-xyz"))
    'a `space: scanner-xyz`, which names no patient axes'
    """
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        m = _NRRD_SPACE.search(head)
        if m is None:
            return "no `space:` field" + (" (only `space dimension`)" if "space dimension" in head.lower() else "")
        space = m.group(1).strip()
        if space.lower() not in _ANATOMICAL_SPACES:
            return f"a `space: {space[:40]}`, which names no patient axes"
        if not _NRRD_DIRECTIONS.search(head):
            return "no `space directions`"
        return None
    if path.suffix.lower() in (".mha", ".mhd") and not _MHA_DIRECTION.search(head):
        return "no `TransformMatrix`"
    return None


def _listing(path: Path) -> str:
    """A detached header's whole text (the file list after ``ElementDataFile = LIST``)."""
    with open(path, "rb") as f:
        return f.read(HEADER_CAP).decode("latin-1", "replace")


def header_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape (i, j, k[, t][, components]) a NRRD or MetaImage header declares, as
    :func:`read_itk` would read it (``None`` when the header cannot be read)."""
    try:
        _check_ndims(path, _header_bytes(path).decode("latin-1", "replace"))  # no NDims that crashes ITK
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except (OSError, InputError, RuntimeError):
        return None
    ncomp = int(reader.GetNumberOfComponents())
    return tuple(int(n) for n in reader.GetSize()) + ((ncomp,) if ncomp > 1 else ())


def read_itk(path: Path, *, channel: int | None, max_voxels: int, channels: int | None = None,
             label: bool = False) -> Volume:
    head = _header_bytes(path)  # read once: the data files, NDims and the data's size all come from it
    text = head.decode("latin-1", "replace")
    data_files = _data_files(path, text)
    folder = path.resolve().parent
    listed = data_files or []
    for k, data_file in enumerate(listed, start=1):
        if folder not in data_file.resolve().parents:  # its folder or one inside it; no `..`, no link out
            raise InputError("path_escape", "the header points to data outside its folder",
                             path=str(path), remedy="keep the .raw/.zraw file(s) in the header's folder or a folder "
                             "inside it")
        # by its rank, not its name: data files are often named after the patient (a header's own
        # name is the layout's; the files it lists are not)
        which = f"data file {k} of {len(listed)}" if len(listed) > 1 else "the data file"
        if data_file.exists() and not data_file.is_file():  # a FIFO, device or folder: never opened
            raise ReadError("not_a_regular_file", f"{which} named by the header (ElementDataFile / data file) is "
                            "a FIFO, socket, device or folder, not a file", path=str(path),
                            remedy="replace it with the .raw/.zraw file that belongs to this header")
        if not data_file.is_file():
            raise ReadError("file_not_found", f"{which} named by the header (ElementDataFile / data file) is "
                            "missing", path=str(path),
                            remedy="download the .raw/.zraw file(s) that belong to this header")
    _check_ndims(path, text)
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
    # a value's bytes from its type alone (a 2-D image of it: SimpleITK makes no 4-D one of every type);
    # 4-D files were counted at 4 bytes, so an int16 cine or uint8 label was "header_size_mismatch"
    itemsize = sitk.Image([1, 1], reader.GetPixelID(), ncomp).GetSizeOfPixelComponent()
    check_memory(n * itemsize, f"the header's {size} × {ncomp} volume", str(path))  # NRRD gzip/bz2: no size check
    if not _NOT_RAW.search(head):
        need = n * itemsize
        have = (sum(f.stat().st_size for f in data_files) if data_files is not None
                else path.stat().st_size - len(head))
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
    meta: dict[str, Any] = {"format": "itk"}
    gap = orientation_gap(path, text)
    if gap:
        meta["world_space_missing"] = gap
    return volume_from_sitk(img, str(path), channel, meta, channels, label=label)


def volume_from_sitk(img: sitk.Image, path: str, channel: int | None, meta: dict[str, Any],
                     channels: int | None = None, *, one_slice_ok: bool = False, label: bool = False) -> Volume:
    """Copy a SimpleITK image into a :class:`Volume` (array axes i, j, k; affine in RAS);
    ``one_slice_ok`` for a reader that refuses a single slice itself (DICOM); ``label``: see
    :func:`~curator.io.formats.squeeze_to_3d`."""
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
    frames = frames_of(arr) if label and channel is not None else None
    arr = squeeze_to_3d(arr, path, channel, channels, one_slice_ok=one_slice_ok, label=label)
    if frames is not None:  # a frame of a 4-D label (the image's channel)
        meta = {**meta, "label_frames": frames}
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
