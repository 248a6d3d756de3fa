"""curator: public 3D medical segmentation datasets -> one versioned, queryable, trainable collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.query import Release


def open_release(path: str) -> Release:
    """Open a release folder: ``.sql(...)`` via read-only DuckDB, ``.table(name)`` as Polars.

    >>> # rel = curator.open_release("releases/demo/0.1.0"); rel.sql("select count(*) from cases")
    """
    from curator.release.query import Release

    return Release(path)


def __getattr__(name: str) -> Any:  # lazy, keeps `import curator` cheap
    raise AttributeError(name)
