"""Scan folders for planted identifiers: raw bytes, and decoded content of compressed files
(Parquet values, gzip, Zarr metadata), so compression cannot hide a leak."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq


def _texts(p: Path) -> list[bytes]:
    raw = p.read_bytes()
    out = [raw]
    if p.suffix == ".parquet":
        try:
            t = pq.read_table(p)
            out.append(json.dumps(t.to_pylist(), default=str).encode())
            out.append(str(t.schema.metadata).encode())
        except Exception:  # noqa: BLE001, S110 - unreadable files are still scanned as bytes
            pass
    if raw[:2] == b"\x1f\x8b":
        try:
            out.append(gzip.decompress(raw))
        except (OSError, EOFError):
            pass
    return out


def scan(folders: list[Path], tokens: list[str]) -> list[tuple[str, str]]:
    """Every (file, token) where a token appears (case-insensitive; also as UTF-16)."""
    hits: list[tuple[str, str]] = []
    needles = [(t, [t.lower().encode(), t.lower().encode("utf-16-le")]) for t in tokens if t]
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or p.is_symlink():
                continue
            for blob in _texts(p):
                low = blob.lower()
                for token, forms in needles:
                    if any(f in low for f in forms):
                        hits.append((str(p), token))
    return sorted(set(hits))
