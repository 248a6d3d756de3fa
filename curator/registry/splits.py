"""Official splits a dataset publishes as a file rather than as folders.

Declared in the dataset YAML (folder-based splits use ``split:`` on layout entries instead)::

    official_split:
      summary: "splits.json lists train/val/test patients"
      file: splits.json        # JSON {split: [case ids]}, or CSV/TSV with a header
      key: image_id            # CSV/TSV: column holding the case id ({case})
      column: split            # CSV/TSV: column holding the split name

Split names are normalised to ``train | val | test`` (training, valid, validation, testing ...).
A case the file does not list keeps the split of its layout entry.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from curator.errors import InputError
from curator.io.confined import read_text_inside

SPLIT_NAMES = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val",
               "validation": "val", "va": "val", "test": "test", "testing": "test", "ts": "test"}


def read_split_file(spec_split: dict[str, Any], root: Path) -> dict[str, str]:
    """``{case id: train|val|test}`` from the declared split file."""
    path, text = read_text_inside(root, str(spec_split["file"]), "official split file named by the dataset YAML",
                                  "download the dataset's split file or remove `official_split.file`")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            pairs = [(str(c), str(s)) for s, ids in (data.items() if isinstance(data, dict) else [])
                     if isinstance(ids, list) for c in ids]
        else:
            header = text.splitlines()[0] if text else ""
            delim = "\t" if path.suffix in (".tsv", ".tab") else (";" if ";" in header and "," not in header else ",")
            rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
            key, col = str(spec_split.get("key", "case_id")), str(spec_split.get("column", "split"))
            pairs = [(str(r[key]), str(r[col])) for r in rows if r.get(key) and r.get(col)]
    except (json.JSONDecodeError, csv.Error, KeyError) as e:
        raise InputError("corrupt_file", f"the split file cannot be parsed ({e})", path=str(path),
                         remedy="check `official_split.key`/`column` against the file's header") from e
    out: dict[str, str] = {}
    for case, split in pairs:
        norm = SPLIT_NAMES.get(split.strip().lower())
        if norm:
            out[case] = norm
    return out


def split_columns(spec: Any) -> set[str]:
    """The fields of the dataset's metadata file that its official split reads
    (``official_split.column``, when ``official_split.file`` is ``metadata.file``): they are
    published, as ``cases.official_split``.

    >>> from types import SimpleNamespace as N
    >>> split_columns(N(metadata={"file": "meta.csv"}, official_split={"file": "./meta.csv", "column": "split"}))
    {'split'}
    """
    split, meta = spec.official_split or {}, spec.metadata or {}
    if not split.get("file") or not meta.get("file") or Path(str(split["file"])) != Path(str(meta["file"])):
        return set()
    return {str(split.get("column", "split"))}


def apply_split_file(spec: Any, root: Path, cases: list[Any]) -> None:
    """Set ``split`` of every discovered case the split file lists (in place)."""
    splits = read_split_file(spec.official_split, root)
    for c in cases:
        if c.source_case in splits:
            c.split = splits[c.source_case]
