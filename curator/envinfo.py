"""Versions and machine facts (``curator env``), for bug reports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

from curator import __version__

PACKAGES = ("numpy", "scipy", "polars", "pyarrow", "duckdb", "zarr", "numcodecs", "nibabel", "SimpleITK",
            "pydicom", "imagehash", "torch", "dask", "distributed", "typer", "rich", "fastremap",
            "connected-components-3d", "scikit-image")


def environment() -> dict[str, str]:
    info = {"curator": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": str(os.cpu_count())}
    for p in PACKAGES:
        try:
            info[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            info[p] = "not installed"
    try:
        import torch

        info["cuda"] = f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "no"
    except ImportError:  # pragma: no cover
        info["cuda"] = "torch missing"
    return info
