"""Releases: Parquet manifests + release.json, queries, and (later) verify/diff/splits/cards."""

from curator.release.build import build_release, release_dir
from curator.release.query import Release, resolve_release

__all__ = ["Release", "build_release", "release_dir", "resolve_release"]
