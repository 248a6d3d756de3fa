"""Everything dedup keeps about one scan: its hashes and its verification thumbnail.

:func:`scan_features` is the stage's pure per-case function (array + geometry in,
:class:`ScanFeatures` out); :meth:`ScanFeatures.row` is its ``hashes`` table row.

>>> import numpy as np
>>> from curator.testing.phantoms import Subject, grid, render
>>> g = grid((60, 48, 30), (5.0, 5.0, 8.0), "LPS")
>>> img, _ = render(Subject.random(1), g, "CT", seed=1)
>>> f = scan_features(img.astype(np.int16), g, HashSettings())
>>> f.phash is not None and len(f.slabs.hashes) > 10 and f.thumbnail.ranks.ndim == 3
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from curator.dedup.canonical import canonicalize
from curator.dedup.hashing import (
    SlabHashes,
    dct_bits,
    dct_signature,
    exact_hash,
    global_dct,
    slab_hashes,
)
from curator.dedup.thumbnail import Thumbnail, make_thumbnail
from curator.io.volume import Geometry


@dataclass(frozen=True)
class HashSettings:
    """How scans are hashed (part of the dedup stage config)."""

    slab_mm: float = 8.0  # thickness of a hashed axial slab
    slab_step_mm: float = 5.0  # distance between hashed slabs
    grid_voxels: int = 262_144  # voxels of the canonical analysis grid (= the verification thumbnail)


@dataclass(frozen=True, eq=False)
class ScanFeatures:
    exact: str
    phash: int | None
    slabs: SlabHashes
    thumbnail: Thumbnail
    body_voxels: int
    phash_dct: tuple[float, ...] | None = None  # dct_signature of the global hash's coefficients

    def row(self) -> dict[str, Any]:
        """The ``hashes`` table columns this scan fills (without case_id/dataset)."""
        return {"exact_sha256": self.exact, "phash": self.phash,
                "phash_dct": None if self.phash_dct is None else list(self.phash_dct),
                "slab_hashes": list(self.slabs.hashes),
                "slab_z_mm": list(self.slabs.z_mm), "body_voxels": self.body_voxels,
                "grid_shape": list(self.thumbnail.ranks.shape),
                "grid_spacing_mm": [round(x, 6) for x in self.thumbnail.spacing]}


def scan_features(array: NDArray[Any], geometry: Geometry, settings: HashSettings) -> ScanFeatures:
    """Hashes and thumbnail of one scan (pure: no I/O)."""
    c = canonicalize(array, geometry, settings.grid_voxels)
    block = global_dct(c)
    return ScanFeatures(
        exact=exact_hash(array, geometry),
        phash=None if block is None else dct_bits(block),
        slabs=slab_hashes(c, settings.slab_mm, settings.slab_step_mm),
        thumbnail=make_thumbnail(c),
        body_voxels=int(c.body.sum()),
        phash_dct=None if block is None else dct_signature(block),
    )
