"""MSD-style ``dataset.json`` indexes: the cases they list (:func:`index_cases`, for
:func:`curator.registry.layout.discover`) and the file itself (:func:`load_index`, which the
label-name cross-check of :mod:`curator.harmonize.mapping` reads too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curator.errors import InputError
from curator.io.confined import read_text_inside
from curator.registry.layout import CaseFiles, make_case_id, patient_of
from curator.registry.spec import DatasetSpec, LayoutEntry


def load_index(root: Path, entry: LayoutEntry) -> tuple[Path, Any]:
    """The path and parsed JSON of the layout entry's index (``dataset.json`` by default);
    an ``InputError`` when it is missing or not JSON."""
    path, text = read_text_inside(root, entry.index or "dataset.json", "layout's index file",
                                  "check the source root: it should be the folder holding dataset.json")
    try:
        return path, json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError("corrupt_file", f"the index file is not valid JSON ({e})", path=str(path),
                         remedy="download the dataset again") from e


def index_cases(spec: DatasetSpec, name: str, idx: int, entry: LayoutEntry, root: Path,
                problems: list[InputError]) -> list[CaseFiles]:
    """Cases listed by an MSD-style ``dataset.json`` (``training`` pairs, ``test`` images).

    A 4-D task (``modality`` with several channels) gives one case per channel. An entry
    without an image path is a problem naming the index and the entry; the others are read.
    """
    path, d = load_index(root, entry)
    channels = entry.channels or {int(k): str(v) for k, v in (d.get("modality") or {}).items()}
    if len(channels) <= 1:
        channels = {}
    items: list[tuple[str, str | None, str]] = []
    for section, split in (("training", "train"), ("test", "test")):
        for k, t in enumerate(d.get(section) or []):
            image = t if isinstance(t, str) else t.get("image") if isinstance(t, dict) else None
            label = t.get("label") if isinstance(t, dict) and split == "train" else None
            if not isinstance(image, str) or not image or not (label is None or isinstance(label, str)):
                problems.append(InputError(
                    "index_entry_invalid", f"entry {k} of {section!r} ({json.dumps(t)[:120]}) has no image path "
                    "(or a path that is not text); the entry was skipped", path=str(path),
                    remedy=f"give {section}[{k}] an \"image\" path (and a \"label\" path, if it has one), or "
                    "remove the entry, e.g. in a corrected copy of the index named by the layout's `index:`"))
                continue
            items.append((image, label, split))
    out = []
    for image, label, split in items:
        img = image.removeprefix("./")
        lab = label.removeprefix("./") if label else None
        case = Path(img).name.removesuffix(".gz").removesuffix(".nii")
        for ch, seq in (sorted(channels.items()) if channels else [(None, entry.sequence)]):
            parts = [case] + ([str(seq)] if ch is not None else [])
            fields = {"case": case, **({"sequence": str(seq)} if seq else {})}
            out.append(CaseFiles(
                case_id=make_case_id(name, parts), source_case=case, fields=fields, entry=idx, image=img,
                image_is_dir=False, channel=ch, sequence=seq, labels=[("", lab)] if lab else [],
                split=entry.split or split, modality=spec.modality_for(entry, seq),
                patient_raw=patient_of(spec, fields), format=entry.format,
                channels=len(channels) if ch is not None else None))
    return out
