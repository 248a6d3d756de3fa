"""Helpers for tests that stage a scenario by editing a built release's tables by hand."""

from __future__ import annotations

import json
from pathlib import Path

from curator.io.fsutil import atomic_write_json, sha256_file


def reseal(release: str | Path) -> None:
    """Record the current checksum of every table (``*.parquet``) in the release's release.json,
    as if it had been built with them — a release whose tables no longer match release.json is
    refused when read (``release_corrupt``)."""
    rel = Path(release)
    info = json.loads((rel / "release.json").read_text())
    for p in sorted(rel.glob("*.parquet")):
        info.setdefault("files", {})[p.name] = sha256_file(p)
    atomic_write_json(rel / "release.json", info, indent=1)
