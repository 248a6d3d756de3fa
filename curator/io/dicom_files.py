"""Which files and series under a DICOM folder are the scan: the folder's files (never following
links out of it), and the objects that are not slices of a scan — non-image objects (RTSTRUCT,
SEG, reports ...), localizers (scouts) and secondary captures (a dose report's screenshot) —
which layout discovery (several series folders of one case) and the series reader (a study in
one folder) pass over."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from curator.errors import CuratorError, ReadError
from curator.io.confined import folder_member
from curator.io.formats import DICOM_EXT

NON_IMAGE_SOP = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
}
# series that hold no image of the patient: structure sets, segmentations, plans, doses, reports,
# presentation states, key objects, registrations (TCIA studies keep them beside the CT series)
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SEG", "SR", "PR", "KO", "REG",
                                  "DOC"})


def list_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursively; hidden ones left out), never following links out of it.

    Every file listed is checked before anything reads it (:func:`curator.io.confined.folder_member`):
    a link leading outside ``folder`` is a ``path_escape`` error and a FIFO, socket or device a
    ``not_a_regular_file`` error naming the file; a series with such a file is not read at all.
    A folder that cannot be listed is a ``permission_denied`` error naming ``folder`` (never a
    silently empty listing, which would read as "no DICOM file found").
    """

    def refuse(e: OSError) -> None:
        if not isinstance(e, PermissionError):
            return  # e.g. a sub-folder removed while walking: the files that exist are listed
        sub = e.filename is not None and Path(e.filename) != folder
        raise ReadError("permission_denied", "a sub-folder of the folder cannot be listed" if sub
                        else "the folder cannot be listed", path=str(folder),
                        remedy="make the folder and its sub-folders readable and searchable by the user "
                        "running curator (e.g. chmod -R a+rX)") from e

    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=refuse, followlinks=False):
        dirnames.sort()
        out += [Path(dirpath) / name for name in sorted(filenames) if not name.startswith(".")]
    for k, p in enumerate(out, start=1):  # by rank: a DICOM file's name can be a UID
        folder_member(folder, p, f"file {k} of {len(out)} (sorted by file name)")
    return out


# what a DICOM folder holds on purpose beside its slices: an index, notes, previews (names are
# compared upper-case; hidden files are never listed)
_NOT_SLICE_NAMES = frozenset({"DICOMDIR", "README", "LICENSE", "LICENCE", "COPYING", "NOTICE", "VERSION",
                              "LOCKFILE", "AUTORUN.INF", "THUMBS.DB", "DESKTOP.INI"})


def may_be_slice(name: str) -> bool:
    """Whether a file of a DICOM series folder named ``name`` is meant to be DICOM: a DICOM extension
    (.dcm, .ima), no extension (``IM_0001``) or a numeric one (a UID, ``CT.1.3.12…16583``, ``I.001``).
    A file that is not readable DICOM under such a name is a slice lost to a broken copy; other
    names (README, DICOMDIR, .txt, .xml, .jpg thumbnails) are left unread without a word."""
    if name.upper() in _NOT_SLICE_NAMES:
        return False
    suffix = Path(name).suffix.lower()
    return suffix in ("", *DICOM_EXT) or suffix[1:].isdigit()


# SOP classes of screenshots and scanned documents (a dose report's screen capture beside the CT)
SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


def series_not_volume(folder: Path, max_files: int = 16) -> str | None:
    """Why the DICOM series under ``folder`` is not the scan to ingest — a non-image object
    (``"a RTSTRUCT object …"``), a localizer (scout) or a secondary capture — or None when it
    holds a slice of a scan among its first ``max_files`` files (headers only; a study exported
    into one folder keeps its localizer beside the scan), none of them is DICOM, or the folder
    cannot be read.

    Layout discovery asks it when one pattern matches several series folders of a case (a TCIA
    study: ``1.000000-SCOUT…``, ``2.000000-ABDOMEN…``, an RTSTRUCT), to take the scan over them."""
    try:
        files = list_files(folder)[:max_files]
    except CuratorError:  # its case's reading says why
        return None
    first: str | None = None
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality", "ImageType", "SOPClassUID"])
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            continue
        modality = str(ds.get("Modality", "") or "").upper()
        why = f"a {modality} object (no image of the patient)" if modality in NON_IMAGE_MODALITIES else not_a_scan(ds)
        if why is None:
            return None  # a slice of a scan
        if first is None:
            first = f"{why} series" if why.startswith("a localizer") else why
    return first


def not_a_scan(ds: pydicom.Dataset) -> str | None:
    """Why an object with pixel data is not a slice of the scan (a localizer, a secondary capture, a
    segmentation or dose object), or None."""
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:  # a SEG or an RTDOSE beside the slices of a study's folder
        return f"a {modality} object (no image of the patient)"
    image_type = ds.get("ImageType", None)
    types = [str(t).upper() for t in (image_type if isinstance(image_type, (list, tuple, MultiValue))
                                      else [image_type or ""])]
    if "LOCALIZER" in types:
        return f"a localizer (scout) {str(ds.get('Modality', '') or '').upper()}".rstrip()
    if str(ds.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE_SOP_PREFIX):
        return "a secondary capture (a screenshot, e.g. a dose report)"
    return None


def drop_copies(members: list[tuple[Path, pydicom.Dataset]], candidates: list[Path],
                ) -> tuple[list[tuple[Path, pydicom.Dataset]], list[str]]:
    """``members`` without the files that are byte-for-byte copies of another member (a repeated
    download's ``IM0005 (1).dcm``; the shortest name, the original's, is kept); and each copy
    dropped, said by its rank among ``candidates`` (file names may name the patient) and its
    position. Only files sharing a SOP instance UID, a position and a size are compared, so a
    series without copies reads no byte more."""
    from collections import defaultdict

    from curator.io.fsutil import sha256_file

    def key(ds: pydicom.Dataset, f: Path) -> tuple[str, str, int]:
        return (str(getattr(ds, "SOPInstanceUID", "") or ""), str(getattr(ds, "ImagePositionPatient", "")),
                f.stat().st_size)

    rank = {f: k for k, f in enumerate(candidates, start=1)}
    groups: dict[tuple[str, str, int], list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for f, ds in members:
        groups[key(ds, f)].append((f, ds))
    copies: set[Path] = set()
    said: list[str] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        seen: dict[str, Path] = {}
        for f, ds in sorted(group, key=lambda m: (len(m[0].name), rank.get(m[0], 0))):
            digest = sha256_file(f)
            if digest in seen:
                copies.add(f)
                at = ", ".join(f"{float(x):g}" for x in getattr(ds, "ImagePositionPatient", ()) or ())
                said.append(f"file {rank.get(f, 0)} of {len(candidates)} (sorted by file name), a copy of file "
                            f"{rank.get(seen[digest], 0)}" + (f" at ({at}) mm" if at else ""))
            else:
                seen[digest] = f
    return [(f, ds) for f, ds in members if f not in copies], said
