"""Releases: Parquet manifests + release.json, queries, verify/diff, splits, cards, lineage.

The names below load their modules on first use, so that light submodules
(``curator.release.integrity``, which every preprocess worker uses to hash its store) do not
pull in DuckDB, Polars and the release builder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curator.release.build import build_release, release_dir
    from curator.release.query import Release, resolve_release

__all__ = ["Release", "build_release", "release_dir", "resolve_release"]
_WHERE = {"build_release": "build", "release_dir": "build", "Release": "query", "resolve_release": "query"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"curator.release.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'curator.release' has no attribute {name!r}")
