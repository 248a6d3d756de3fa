"""Reading and writing volumes; geometry; atomic file operations."""

from curator.io.formats import read_volume
from curator.io.volume import Geometry, Volume

__all__ = ["Geometry", "Volume", "read_volume"]
