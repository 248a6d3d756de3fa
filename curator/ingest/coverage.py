"""Overlap of a case's structure masks, counted while ingest reads them.

Harmonize needs unions of several structure files (a derived "kidney" over the left and right
masks). When no voxel is covered by two masks, a union's size is the sum of the masks' sizes;
only cases with overlaps make harmonize re-read the files.

>>> import numpy as np
>>> c = Coverage()
>>> c.add(np.array([[[1, 0]]])); c.add(np.array([[[1, 1]]]))
>>> c.overlap_voxels()
1
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


class Coverage:
    """Counts, per voxel, how many structure masks cover it."""

    def __init__(self) -> None:
        self._cover: NDArray[np.uint8] | None = None
        self._known = True

    def add(self, array: NDArray[Any]) -> None:
        m = np.asarray(array) != 0
        if self._cover is None:
            self._cover = m.astype(np.uint8)
        elif self._cover.shape != m.shape:
            self._known = False  # e.g. a mask stored with permuted axes: overlap unknown
        else:
            self._cover += m

    def overlap_voxels(self) -> int | None:
        """Voxels covered by two or more masks; ``None`` when unknown (or nothing was added)."""
        if self._cover is None or not self._known:
            return None
        return int(np.count_nonzero(self._cover > 1))
