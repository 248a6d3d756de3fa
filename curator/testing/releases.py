"""Helpers for tests that stage a scenario by editing a built release's tables by hand."""

from __future__ import annotations

import json
from pathlib import Path

from curator.io.fsutil import atomic_write_json, sha256_file


def reseal(release: str | Path) -> None:
    """Record the current checksum of every table (``*.parquet``), location file and case store
    in the release's release.json, as if it had been built with them — a release whose tables,
    stores or location files no longer match release.json is refused when read
    (``release_corrupt``)."""
    from curator.release.integrity import STORES_DIR, SUMS_NAME, record_stores

    rel = Path(release)
    info = json.loads((rel / "release.json").read_text())
    files = info.setdefault("files", {})
    for p in sorted([*rel.glob("*.parquet"), *rel.glob("locations/*.npz")]):
        files[p.relative_to(rel).as_posix()] = sha256_file(p)
    if (rel / STORES_DIR).is_dir():
        info["stores"] = record_stores(rel)
        files[f"{STORES_DIR}/{SUMS_NAME}"] = sha256_file(rel / STORES_DIR / SUMS_NAME)
    atomic_write_json(rel / "release.json", info, indent=1)
