"""MATLAB ``.mat`` masks (FUMPE ground truth): the one 3-D numeric variable of a v5 MAT-file.

MAT-files carry no geometry: the volume gets an identity grid and ``meta["no_geometry"]``;
the dataset YAML declares ``fixes: {label_geometry: {from: image}}`` (plus any array fix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curator.errors import InputError
from curator.io.formats import check_memory
from curator.io.volume import Geometry, Volume

PREFERRED = ("Mask", "mask", "seg", "label", "gt")


def read_mat(path: Path, max_voxels: int) -> Volume:
    import scipy.io

    try:  # the variables' sizes first: a compressed MAT-file inflates whole when loaded
        sizes = [int(np.prod(shape, dtype=np.float64)) for _, shape, _ in scipy.io.whosmat(str(path))]
    except Exception:  # noqa: BLE001 - loadmat below says what is wrong with the file
        sizes = []
    biggest = max(sizes, default=0)
    if biggest > max_voxels:
        raise InputError("too_large", f"a variable of {biggest} values exceeds max_voxels={max_voxels}",
                         path=str(path), remedy="raise `max_voxels` in the ingest settings if the file is genuine")
    check_memory(sum(sizes) * 8, "the MAT-file's variables", str(path))
    try:
        d = scipy.io.loadmat(str(path))
    except NotImplementedError as e:  # v7.3 files are HDF5
        raise InputError("unknown_format", "a MATLAB v7.3 (HDF5) file; only v5 MAT-files are read",
                         path=str(path), remedy="re-save it with MATLAB's -v7 option") from e
    except (ValueError, TypeError, OSError) as e:
        raise InputError("corrupt_file", f"the MAT-file cannot be read ({e})", path=str(path),
                         remedy="download the file again") from e
    arrays = {k: v for k, v in d.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and v.dtype.kind in "biuf" and v.ndim in (2, 3)}
    name = next((k for k in PREFERRED if k in arrays), None)
    if name is None and len(arrays) == 1:
        name = next(iter(arrays))
    if name is None:
        raise InputError("corrupt_file", f"no single 3-D variable to read (found {sorted(arrays)})", path=str(path),
                         remedy="store the mask as the only numeric variable, or name it 'Mask'")
    a: Any = arrays[name]
    if a.size > max_voxels:
        raise InputError("too_large", f"{a.size} voxels exceed max_voxels={max_voxels}", path=str(path),
                         remedy="raise `max_voxels` in the ingest settings if the file is genuine")
    arr = np.ascontiguousarray(a if a.ndim == 3 else a[:, :, None])
    vol = Volume(arr, Geometry.from_affine(arr.shape, np.eye(4)))
    vol.meta["no_geometry"] = True
    vol.meta["format"] = "mat"
    vol.meta["variable"] = name
    return vol
