"""Format detection and the one entry point for reading volumes: :func:`read_volume`.

Readers: nibabel for NIfTI, SimpleITK for NRRD/MHA/MHD and DICOM pixel data,
pydicom for DICOM headers (validated, then dropped: nothing identifying leaves here).
Every failure is a :class:`~curator.errors.InputError` with a problem kind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from curator.errors import CuratorError, InputError, LabelError, ReadError
from curator.io.volume import Geometry, Volume

Role = Literal["image", "label"]
DEFAULT_MAX_VOXELS = 2_000_000_000
# a volume's array may take this share of memory at most: reading it, and the copies a stage makes
# of it (a float version, a resampled grid), take several times its size
MEMORY_SHARE = 4

NIFTI_EXT = (".nii.gz", ".nii")
ITK_EXT = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_EXT = (".dcm", ".dicom", ".ima")


# an absolute path (a reader's message may quote the file, or its own source file): two or more
# components after the leading slash, up to a quote, blank or ``:line`` suffix
# not after a word, a dot, a `{placeholder}` or a glob: `{case}/ses-0001/x.nii.gz` in a layout
# pattern is relative, and was cut down to `{case}` in the problems a pattern is quoted in
_ABS_PATH = re.compile(r"""(?<![\w.}*])/(?:[^\s"':/]+/)+[^\s"':]*(?::\d+)*:?""")


def scrub(text: str, known: Mapping[str, str] | None = None) -> str:
    """A reader's message without file paths: each ``known`` path (as given, or resolved) is
    replaced by its neutral label, any other absolute path is dropped. The source root and
    DICOM file names (patient names, dates, UIDs) never reach a ``problems`` row.

    >>> scrub('Cannot work out file type of "/data/src/a/x.nii.gz"', {"/data/src/a/x.nii.gz": "the file"})
    'Cannot work out file type of the file'
    >>> scrub("Exception in Execute: /tmp/build/ITK/itkGDCMImageIO.cxx:468: cannot read")
    'Exception in Execute: cannot read'
    >>> scrub("the pattern 'rawdata/{case}/ses-0001/{case}_{sequence}.nii.gz' or '**/{case}/x/' (a .seg.nrrd)")
    "the pattern 'rawdata/{case}/ses-0001/{case}_{sequence}.nii.gz' or '**/{case}/x/' (a .seg.nrrd)"
    """
    for path, label in sorted((known or {}).items(), key=lambda kv: -len(kv[0])):
        for form in {path, str(Path(path).resolve())}:
            for quoted in (f'"{form}"', f"'{form}'", form):
                text = text.replace(quoted, label)
    text = _ABS_PATH.sub("", text)
    # the space a dropped path leaves before punctuation; not before a word starting with one (`.seg.nrrd`)
    return re.sub(r"\s+([.,;:)])(?![\w*])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or its control group's limit when lower (a container)."""
    total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


WORKERS: ContextVar[int] = ContextVar("curator_workers", default=1)
"""How many worker processes share this machine's memory while a case runs (the runner sets it
around each case from ``CaseEnv.workers``; 1 elsewhere)."""


def check_memory(nbytes: float, what: str, path: str) -> None:
    """Refuse, as ``too_large``, an array that would take more than 1/(:data:`MEMORY_SHARE` ×
    workers) of the memory (:func:`memory_bytes`), before it is allocated: a compressed file of
    a few megabytes can declare gigabytes of voxels, and the out-of-memory killer would end the
    whole run (every case of an in-process run), not just this case.

    A stage holds a few copies of a case's arrays at its peak (ingest of a NIfTI image and its
    label map: 2.1 times their bytes, 2.4-3.1 times the image's alone, measured with a 200 MiB
    image), and every worker process may hold such a case at once: the share per array is
    divided by the number of workers (:data:`WORKERS`), so that all of them together stay
    within about three quarters of the memory."""
    total, workers = memory_bytes(), max(1, WORKERS.get())
    share = MEMORY_SHARE * workers
    if nbytes > total // share:
        of = f" (one of {workers} worker processes)" if workers > 1 else ""
        raise InputError("too_large", f"{what} takes {nbytes / 2**30:.1f} GiB in memory, over 1/{share} of "
                         f"the {total / 2**30:.1f} GiB this machine has{of}: a stage works on copies of it",
                         path=path, remedy="if the file is genuine, process it with fewer workers (`--workers`, "
                         "`executor.workers`) or on a machine with more memory; a small file declaring this much "
                         "is damaged or crafted (a decompression bomb)")


def format_from_name(path: Path) -> str | None:
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(NIFTI_EXT):
        return "nifti"
    if name.endswith(ITK_EXT):
        return "itk"
    if name.endswith(DICOM_EXT):
        return "dicom"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".mat"):
        return "mat"
    return None


def sniff(path: Path) -> str | None:
    """The format a file's first bytes say it is (``None`` when unknown)."""
    try:
        with open(path, "rb") as f:
            head = f.read(352)
    except PermissionError as e:
        raise ReadError("permission_denied", "cannot open the file for reading", path=str(path),
                        remedy="make it readable by the user running curator") from e
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 348 and (head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00")
                             or head[4:8] in (b"n+2\x00",)):
        return "nifti"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") in (348, 540) or \
            int.from_bytes(head[:4], "big") in (348, 540):
        return "nifti"
    if head.startswith(b"NRRD"):
        return "itk"
    if head[:64].lstrip().startswith((b"ObjectType", b"NDims")):
        return "itk"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"MATLAB "):
        return "mat"
    return None


def check_file(path: Path) -> str:
    """Existence, readability, size and content-vs-extension checks; returns the format."""
    if not path.exists() and not path.is_symlink():
        raise ReadError("file_not_found", "the file does not exist", path=str(path),
                        remedy="check the source root and that the download is complete")
    if path.is_dir():
        from curator.io.slices import is_slice_folder

        return "slices" if is_slice_folder(path) else "dicom"
    if not path.is_file():
        raise ReadError("not_a_regular_file", "the path is a FIFO, socket or device, not a file", path=str(path),
                        remedy="replace it with the real file")
    if not os.access(path, os.R_OK):
        raise ReadError("permission_denied", "the file cannot be opened for reading", path=str(path),
                        remedy="make it readable by the user running curator")
    if path.stat().st_size == 0:
        raise ReadError("empty_file", "the file has zero bytes", path=str(path),
                        remedy="download the file again; the copy on disk is empty")
    by_name = format_from_name(path)
    by_content = sniff(path)
    lower = path.name.lower()
    if by_name is None:
        if by_content in ("dicom", "nifti", "itk", "npy"):
            return by_content  # extension-less DICOM slices are normal
        if by_content == "gzip":
            raise InputError("unknown_format", "a gzip-compressed file that is not a .nii.gz",
                             path=str(path), remedy="decompress it (gunzip) so its real format can be read")
        raise InputError("unknown_format", "the file's extension and content are not a supported format",
                         path=str(path), remedy="convert it to NIfTI, NRRD, MHA/MHD or DICOM")
    expected_content = {"nifti": "gzip" if lower.endswith(".gz") else "nifti"}.get(by_name, by_name)
    if by_name == "itk" and lower.endswith(".mhd"):
        return "itk"  # .mhd is a text header; content sniffing for 'ObjectType' covers it loosely
    if by_content is not None and by_content != expected_content:
        raise InputError("wrong_extension",
                         f"named like {by_name.upper()} but its content is {by_content.upper()}",
                         path=str(path), remedy="rename the file to match its real format or re-export it")
    if by_content is None and by_name in ("nifti", "dicom"):
        raise InputError("corrupt_file", f"the content is not valid {by_name.upper()}",
                         path=str(path), remedy="download the file again")
    return by_name


def read_volume(
    path: str | os.PathLike[str],
    *,
    role: Role = "image",
    channel: int | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    files: list[Path] | None = None,
    channels: int | None = None,
    grid: Geometry | None = None,
    structure: str | None = None,
    non_finite: float | str | None = None,
    declared: Collection[int] | None = None,
) -> Volume:
    """Read a 3-D volume from NIfTI, NRRD, MHA/MHD, a DICOM series (folder or ``files``) or .npy.

    ``role='label'`` checks that values are integers and returns an integer array;
    ``role='image'`` rejects NaN/Inf — unless ``non_finite`` (the dataset's ``fixes.non_finite``
    value: a number or ``'min'``, the smallest finite value) says what they become; then
    ``meta['non_finite_filled']`` is ``[voxels replaced, value]``. ``channel`` selects one channel of a 4-D file;
    ``channels`` (the number of channels the dataset declares) is checked against the file's. A
    label read with its image's ``channel`` takes that frame of a 4-D label (one frame per channel)
    and a 3-D label whole (every channel's).
    ``grid`` (a label's image grid) places a DICOM SEG, which covers only its segments' slices,
    on it (:mod:`curator.io.dicom_seg`); other formats carry their own grid and ignore it.
    ``structure`` (a per-structure label's key) picks one structure of a file holding several (a
    DICOM SEG's segment, an RTSTRUCT's ROI: :mod:`curator.io.structures`); other files ignore it.
    A NIfTI label map whose header scales its codes by whole numbers (an image's ``scl_inter``
    −1024 copied onto it) is read as its stored codes unless ``declared`` (the dataset's declared
    values) holds more of the scaled ones; ``meta['label_scaling']`` says which was read
    (:func:`curator.io.nifti.label_scaling_problem` words it).
    """
    p = Path(path)
    try:
        return _read_volume(p, role, channel, max_voxels, files, channels, grid, structure, non_finite, declared)
    except CuratorError:
        raise
    except MemoryError as e:
        raise InputError("too_large", "not enough memory to read the volume", path=str(p),
                         remedy="run with fewer workers or on a machine with more memory") from e
    except Exception as e:
        detail = scrub(str(e), {str(p): "the file"})[:160]
        raise InputError("corrupt_file", f"the file cannot be decoded ({type(e).__name__}: {detail})",
                         path=str(p), remedy="download the file again or re-export it") from e


def _read_volume(p: Path, role: Role, channel: int | None, max_voxels: int, files: list[Path] | None,
                 channels: int | None = None, grid: Geometry | None = None,
                 structure: str | None = None, non_finite: float | str | None = None,
                 declared: Collection[int] | None = None) -> Volume:
    fmt = "dicom" if files is not None else check_file(p)
    if fmt == "nifti":
        from curator.io.nifti import read_nifti

        vol = read_nifti(p, role=role, channel=channel, max_voxels=max_voxels, channels=channels, declared=declared)
    elif fmt == "itk":
        from curator.io.itk import read_itk

        vol = read_itk(p, channel=channel, max_voxels=max_voxels, channels=channels, label=role == "label")
    elif fmt == "dicom":
        from curator.io.dicom import read_dicom

        vol = read_dicom(p, files=files, max_voxels=max_voxels, role=role, grid=grid, structure=structure)
    elif fmt == "npy":
        vol = _read_npy(p, max_voxels)
    elif fmt == "slices":
        from curator.io.slices import read_slice_stack

        vol = read_slice_stack(p, max_voxels)
    elif fmt == "mat":
        from curator.io.matlab import read_mat

        vol = read_mat(p, max_voxels)
    else:  # pragma: no cover - check_file raises first
        raise InputError("unknown_format", f"unsupported format {fmt}", path=str(p))
    check_voxels(vol.array, str(p), role)
    vol.geometry.validate(str(p))
    if role == "label":
        vol.array = as_label_array(vol.array, str(p))
    else:
        vol.array, filled = check_finite(vol.array, str(p), non_finite)
        if filled is not None:
            vol.meta["non_finite_filled"] = list(filled)
        if vol.array.size and _is_blank(vol.array):
            raise InputError("blank_image", f"every voxel holds the same value ({vol.array.flat[0]})",
                             path=str(p), remedy="the pixel data was stripped or never written; "
                             "download the image again")
    return vol


def _is_blank(a: NDArray[Any]) -> bool:
    """Every voxel holds the same value (a strided sample settles almost every real image cheaply)."""
    first = a.flat[0]
    if np.any(a[(slice(None, None, 5),) * a.ndim] != first):
        return False
    return not np.any(a != first)


def check_voxels(a: NDArray[Any], path: str, role: Role) -> None:
    """Refuse a volume with no voxels, and voxel types that are neither intensities nor label
    codes: RGB or other structured types (NIfTI RGB24/RGBA32), complex numbers, text, objects."""
    if a.size == 0:
        raise InputError("empty_volume", f"the volume has no voxels (shape {tuple(int(n) for n in a.shape)})",
                         path=path, remedy="download the file again; a dimension of length 0 means the "
                         "export wrote no data")
    kind = a.dtype.kind
    if kind in "biuf":
        return
    what = ("RGB/colour (a structured type: " + ", ".join(a.dtype.names) + ")" if a.dtype.names
            else "complex" if kind == "c" else f"{a.dtype}")
    todo = ("re-export the label map as one integer code per voxel (not a colour image)" if role == "label"
            else "convert it to a single-channel grey-level volume (e.g. the magnitude of complex data, or "
            "one channel / the luminance of a colour image) before ingest")
    usable = "integer label codes" if role == "label" else "intensities"
    raise InputError("unsupported_dtype", f"the voxels are {what} values, not {usable}", path=path, remedy=todo)


NON_FINITE_REMEDY = ("re-export the image; NaN/Inf voxels cannot be normalised. If they only mark voxels "
                     "without data (outside a registered or resampled field of view), declare what they become "
                     "in the dataset YAML (docs/registry.md, `fixes`): `fixes: {non_finite: {value: 0, when: "
                     "'<regex of the files>'}}` — 0 for MR/PET, -1024 (air) for CT, or 'min' (the image's "
                     "smallest finite value)")


def check_finite(a: NDArray[Any], path: str, fill: float | str | None = None
                 ) -> tuple[NDArray[Any], tuple[int, float] | None]:
    """The image, with its NaN/±Inf voxels set to ``fill`` (a number or ``'min'``) when given —
    ``(image, (voxels replaced, value))`` — else refused (``non_finite_values``)."""
    if a.dtype.kind != "f":
        return a, None
    finite = np.isfinite(a)
    bad = int(a.size - np.count_nonzero(finite))
    if not bad:
        return a, None
    if fill is None:
        raise InputError("non_finite_values", f"{bad} of {a.size} voxels are NaN or infinite", path=path,
                         remedy=NON_FINITE_REMEDY)
    if bad == a.size:
        raise InputError("non_finite_values", f"all {a.size} voxels are NaN or infinite: no value to keep",
                         path=path, remedy="download the image again; the pixel data is missing")
    value = float(np.min(a, where=finite, initial=np.inf)) if fill == "min" else float(fill)
    out = a if a.flags.writeable else a.copy()  # a read-only memory map is never written
    out[~finite] = value
    return out, (bad, value)


def as_label_array(a: NDArray[Any], path: str) -> NDArray[Any]:
    """Integer label array (smallest unsigned/signed type that holds the values)."""
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise LabelError("label_not_integer", "the label map holds NaN or infinite values", path=path,
                             remedy="labels must hold integer codes; re-export the label map")
        r = np.rint(a)
        if np.max(np.abs(a - r), initial=0.0) > 1e-3:
            frac = int(np.count_nonzero(np.abs(a - r) > 1e-3))
            raise LabelError("label_not_integer",
                             f"{frac} voxels hold non-integer values (a float label map or an image?)",
                             path=path, remedy="labels must hold integer codes; re-export the label map")
        a = r.astype(np.int64)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for dt in (np.uint8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return a if a.dtype == dt else a.astype(dt)
    return a  # pragma: no cover


LABEL_4D_REMEDY = ("a 4-D label map is read frame by frame only beside a 4-D image whose channels (frames) the "
                   "dataset declares (`channels:` in the layout entry): each frame's case gets the label's frame of "
                   "the same number, so both files must hold as many frames. Otherwise split the label into 3-D "
                   "files, one per frame (e.g. nibabel's `nib.four_to_three`), and point the label pattern at them")


def frames_of(a: NDArray[Any]) -> int | None:
    """The frames of a 4-D array (trailing axes of length 1 left out), else ``None``: a label
    split with its image's channel is one frame of that many (``meta['label_frames']``)."""
    shape = list(a.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    return int(shape[3]) if len(shape) == 4 else None


def header_past_3d(path: Path) -> bool:
    """Whether a NIfTI, NRRD or MetaImage file's header declares more than three axes (trailing
    axes of length 1 left out, as the readers drop them): a 4-D label, which beside a channel's
    image is read by its frame since :func:`squeeze_to_3d` could (it was refused as ``not_3d``).
    ``False`` for other formats and for a header that cannot be read (reading the file says why).
    Reads the header only."""
    try:
        fmt = format_from_name(path) or sniff(path)
    except (OSError, CuratorError):
        return False
    if fmt == "nifti":
        from curator.io.nifti import header_shape
    elif fmt == "itk":
        from curator.io.itk import header_shape
    else:
        return False
    shape = list(header_shape(path) or ())
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    return len(shape) > 3


def squeeze_to_3d(a: NDArray[Any], path: str, channel: int | None, channels: int | None = None, *,
                  one_slice_ok: bool = False, label: bool = False) -> NDArray[Any]:
    """Drop trailing singleton axes; pick ``channel`` of a 4-D array; refuse anything else.

    A file read for a ``channel`` must have a channel axis, and as many channels as the
    dataset declares (``channels``, when given); a 2-D image is not a volume, nor is a 3-D one
    with a single slice along any axis (as a single DICOM slice is not; the DICOM reader, which
    says a stripped slice's blank pixel data first, checks that itself: ``one_slice_ok``).
    A ``label`` is read with its image's ``channel``: a 3-D label is every channel's, a 4-D one
    gives that frame (M&Ms' cine and its 4-D mask) and must hold the image's ``channels`` frames.
    """
    while a.ndim > 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 5 and a.shape[3] == 1:  # NIfTI vector: x, y, z, t=1, c
        a = a[:, :, :, 0, :]
    if label and a.ndim == 4:
        n = int(a.shape[3])
        if channel is None:
            raise InputError("not_3d", f"a 4-D label map {tuple(a.shape)} ({n} frames) beside a 3-D image (or "
                             "none)", path=path, remedy=LABEL_4D_REMEDY)
        if (channels is not None and n != channels) or not 0 <= channel < n:
            raise InputError("not_3d", f"the 4-D label map holds {n} frames where its image holds "
                             f"{channels if channels is not None else f'at least {channel + 1}'} (the dataset's "
                             f"channels): frame {channel} of the label may not be frame {channel} of the image",
                             path=path, remedy=LABEL_4D_REMEDY)
        return squeeze_to_3d(a[..., channel], path, None, one_slice_ok=one_slice_ok, label=True)
    if label and channel is not None:  # a 3-D label beside a 4-D image: every channel's label
        channel = None
    if channel is not None and a.ndim == 3:
        raise InputError("not_3d", f"the dataset declares channels (channel {channel} requested) but the file holds "
                         f"one 3-D volume {tuple(a.shape)}", path=path,
                         remedy="check the file (a channel may be missing from the export); if the dataset truly "
                         "has one sequence, drop `channels`/the index's extra `modality` entries")
    if a.ndim == 4 and channel is not None:
        n = int(a.shape[3])
        if channels is not None and n != channels:
            extra = f"; channels {list(range(channels, n))} are undeclared" if n > channels else ""
            raise InputError("not_3d", f"the file holds {n} channels where the dataset declares {channels}{extra}",
                             path=path, remedy="check the file against the dataset's channels (`channels:` or "
                             "the index's `modality`); declare every channel it holds, or drop the file")
        if not 0 <= channel < n:
            raise InputError("not_3d", f"channel {channel} requested but the file has {n}",
                             path=path, remedy="fix `channels` in the dataset YAML")
        a = a[..., channel]
    if a.ndim == 2:
        raise InputError("not_3d", f"a 2-D image {tuple(a.shape)}, not a volume", path=path,
                         remedy="drop the file; curator ingests 3-D volumes (a folder of 2-D slices is read as a "
                                "stack only for PNG slice folders, see docs/registry.md)")
    if a.ndim != 3:
        raise InputError("not_3d", f"expected a 3-D volume, found shape {tuple(a.shape)}", path=path,
                         remedy="declare the channels/sequences of 4-D files in the dataset YAML "
                                "(`channels:`), or drop the file")
    if 1 in a.shape and not one_slice_ok:  # one slice is a 2-D image however the file stores it (as a 2-D file or a DICOM slice is)
        raise InputError("not_3d", f"a single-slice image {tuple(a.shape)} (one slice along axis "
                         f"{a.shape.index(1)}), not a volume", path=path,
                         remedy="check that the file is complete (an export may have kept one slice); otherwise "
                         "drop it: curator ingests 3-D volumes (a folder of 2-D slices is read as a stack only "
                         "for PNG slice folders, see docs/registry.md)")
    return a


def _read_npy(p: Path, max_voxels: int) -> Volume:
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError("corrupt_file", f"not a plain numpy array ({e})", path=str(p),
                         remedy="re-export as a plain .npy array") from e
    if a.size > max_voxels:
        raise InputError("too_large", f"{a.size} voxels exceed max_voxels={max_voxels}", path=str(p),
                         remedy="raise `max_voxels` in the ingest settings if the file is genuine")
    check_memory(a.nbytes, f"the array {a.shape} {a.dtype}", str(p))
    arr = squeeze_to_3d(np.array(a), str(p), None)
    vol = Volume(arr, Geometry.from_affine(arr.shape, np.eye(4)))
    vol.meta["no_geometry"] = True
    return vol
