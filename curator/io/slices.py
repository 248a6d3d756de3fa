"""2-D slice stacks: a folder of PNG files, one per slice (CHAOS ground truth), read as a volume.

Slices are stacked in natural file-name order (``liver_GT_2.png`` before ``liver_GT_10.png``);
the array axes follow DICOM's convention — i = image column, j = image row, k = slice — so a
stack lines up with the DICOM series it annotates. PNGs carry no geometry: the volume gets an
identity grid and ``meta["no_geometry"]``; the dataset YAML declares
``fixes: {label_geometry: {from: image}}`` to put it on its image's grid.

>>> natural_key("liver_GT_010.png") < natural_key("liver_GT_10a.png")
True
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import InputError
from curator.io.confined import folder_member
from curator.io.formats import check_memory
from curator.io.volume import Geometry, Volume

SLICE_EXT = (".png",)


def natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _named_slices(folder: Path) -> list[Path]:
    """The entries of ``folder`` named like slice images (sub-folders left out), unchecked."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in SLICE_EXT and not p.name.startswith(".")
                   and not p.is_dir()), key=lambda p: natural_key(p.name))


def slice_files(folder: Path) -> list[Path]:
    """The slice images of ``folder`` in natural name order, each checked before anything reads it
    (:func:`curator.io.confined.folder_member`): a link leading outside ``folder`` is a
    ``path_escape`` error, a FIFO, socket or device a ``not_a_regular_file`` error naming it."""
    files = _named_slices(folder)
    for p in files:
        folder_member(folder, p)
    return files


def is_slice_folder(folder: Path) -> bool:
    """True for a folder whose files are 2-D slice images (and nothing that looks like DICOM); by
    their names only, nothing is opened."""
    try:
        return folder.is_dir() and bool(_named_slices(folder))
    except OSError:
        return False


def read_slice_stack(folder: Path, max_voxels: int) -> Volume:
    from PIL import Image, UnidentifiedImageError

    files = slice_files(folder)
    if not files:
        raise InputError("file_not_found", "the folder holds no slice images", path=str(folder),
                         remedy="check the layout pattern of the slice folder")
    planes: list[NDArray[Any]] = []
    for f in files:
        try:
            with Image.open(f) as im:
                a = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "1") else im)
        except (UnidentifiedImageError, OSError) as e:
            raise InputError("corrupt_file", f"slice {f.name} cannot be decoded ({e})", path=str(f),
                             remedy="download the slice images again") from e
        if planes and a.shape != planes[0].shape:
            raise InputError("not_3d", f"slice {f.name} is {a.shape}, the first slice {planes[0].shape}",
                             path=str(folder), remedy="every slice of a stack must have the same size")
        planes.append(a)
        if len(planes) == 1:  # the stack's size from its first slice, before the others are decoded
            n = a.size * len(files)
            if n > max_voxels:
                raise InputError("too_large", f"{n} voxels exceed max_voxels={max_voxels}", path=str(folder),
                                 remedy="raise `max_voxels` in the ingest settings if the stack is genuine")
            check_memory(a.nbytes * len(files) * 2, f"the stack of {len(files)} slices", str(folder))  # + np.stack's copy
    arr = np.ascontiguousarray(np.stack(planes, axis=-1).transpose(1, 0, 2))  # (col, row, slice)
    vol = Volume(arr, Geometry.from_affine(arr.shape, np.eye(4)))
    vol.meta["no_geometry"] = True
    vol.meta["format"] = "slices"
    return vol
