"""Writers for the native file formats of public datasets (beyond NIfTI/DICOM in ``layouts``):
NRRD / MetaImage through SimpleITK, PNG slice folders, MATLAB masks and NumPy arrays, plus
:func:`write_tree`, which writes a whole fake download from a list of file specs.

A file spec is ``(relative path, kind, values)``: kind ``image`` writes a random image,
``image4d`` a 4-D NIfTI with ``values`` channels, ``label`` a label map holding ``values``
(one block of voxels per value, in order), ``text`` writes ``values`` as the file's text. The format follows the path: ``.nii.gz``, ``.nrrd``,
``.mhd``, ``.npy``, ``.mat``; a trailing ``/`` is a DICOM series (image) or a folder of PNG
slices (label).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> written = write_tree(root, [("a/img.nrrd", "image", ()), ("a/seg.nrrd", "label", (1, 2))])
>>> sorted(p.name for p in (root / "a").iterdir())
['img.nrrd', 'seg.nrrd']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.io.volume import LPS_TO_RAS, Geometry
from curator.testing.layouts import save_nifti, write_dicom_series
from curator.testing.phantoms import grid

SHAPE = (8, 8, 4)
GEOMETRY = grid(SHAPE, (2.0, 2.0, 3.0), "LPS")


def save_itk(path: Path, array: NDArray[Any], g: Geometry) -> None:
    """NRRD / MHA / MHD (+ .raw) with the grid of ``g`` (arrays are [i, j, k])."""
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    lps = LPS_TO_RAS @ g.matrix
    sp = np.asarray(g.spacing)
    img.SetSpacing([float(s) for s in sp])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / sp).ravel()])
    sitk.WriteImage(img, str(path))


def save_slices(folder: Path, array: NDArray[Any], stem: str = "slice") -> None:
    """One 8-bit PNG per slice k (image rows = axis j, columns = axis i), numbered from 0."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(array.shape[2]):
        Image.fromarray(np.ascontiguousarray(array[:, :, k].T.astype(np.uint8))).save(folder / f"{stem}_{k:03d}.png")


def save_mat(path: Path, array: NDArray[Any], name: str = "Mask") -> None:
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {name: array})


def label_array(values: tuple[int, ...] | list[int], shape: tuple[int, int, int] = SHAPE) -> NDArray[Any]:
    """A label map with one contiguous block of voxels per value (value i gets block i)."""
    dtype = np.uint16 if max(values, default=0) > 255 else np.uint8
    flat = np.zeros(int(np.prod(shape)), dtype=dtype)
    block = max(1, flat.size // (len(values) + 1))
    for i, v in enumerate(values):
        flat[i * block:(i + 1) * block] = v
    return flat.reshape(shape)


def image_array(seed: int, shape: tuple[int, int, int] = SHAPE) -> NDArray[Any]:
    return np.random.default_rng(seed).integers(-200, 300, size=shape).astype(np.int16)


def write_file(root: Path, rel: str, kind: str, values: Any, seed: int = 0, g: Geometry = GEOMETRY) -> None:
    path = root / rel
    if kind == "text":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(values))
        return
    if kind == "image4d":  # a 4-D NIfTI with `values` channels (MSD multi-parametric tasks)
        import nibabel as nib

        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.stack([image_array(seed + c, g.shape) for c in range(int(values))], axis=-1)
        nib.save(nib.Nifti1Image(data, g.matrix), str(path))
        return
    arr = image_array(seed, g.shape) if kind == "image" else label_array(tuple(values), g.shape)
    name = rel.lower()
    if rel.endswith("/"):
        if kind == "image":
            write_dicom_series(path, arr.astype(np.float64), g)
        else:
            save_slices(path, arr)
    elif name.endswith((".nii.gz", ".nii")):
        save_nifti(path, arr, g)
    elif name.endswith((".nrrd", ".mha", ".mhd")):
        save_itk(path, arr, g)
    elif name.endswith(".npy"):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)
    elif name.endswith(".mat"):
        save_mat(path, arr)
    else:
        raise ValueError(f"no writer for {rel!r}")


def write_tree(root: Path, files: list[tuple[str, str, Any]], g: Geometry = GEOMETRY) -> list[Path]:
    """Write every file spec under ``root``; returns the written paths."""
    out = []
    for i, (rel, kind, values) in enumerate(files):
        write_file(root, rel, kind, values, seed=i, g=g)
        out.append(root / rel)
    return out
