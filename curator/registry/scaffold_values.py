"""What a download says of its labels and modality, for :mod:`curator.registry.scaffold`: the
raw values a few label files hold, the names and channels of an MSD/nnU-Net ``dataset.json``,
the modality the path words name, and the taxonomy term a name resolves to (else ``TODO``).

>>> guess_modality(["BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz"]), sequence_modality("PT", {}, "CT")
('MR', 'PET')
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from curator.errors import CuratorError

_MR_WORDS = frozenset({"mr", "mri", "flair", "adc", "dwi", "bold", "dixon", "spir", "brats", "brain", "ce", "hr",
                       # cardiac MR: cine, late gadolinium enhancement, short/long axis (M&Ms' _sa, M&Ms-2's SA_CINE)
                       "cine", "lge", "sa", "la", "sax", "lax"})
_SEQ_MODALITY = {"ct": "CT", "pt": "PET", "pet": "PET", "suv": "PET"}
TODO = "TODO"


def label_values(root: Path, files: list[str], n: int = 3,
                 unread: list[tuple[str, CuratorError]] | None = None) -> dict[int, int]:
    """Voxels per raw value over the first ``n`` readable label files (DICOM folders skipped);
    the files that could not be read, with why, are added to ``unread``."""
    import numpy as np

    from curator.io.confined import regular_inside
    from curator.io.formats import read_volume

    counts: Counter[int] = Counter()
    read = 0
    for f in files:
        if read >= n or f.endswith("/"):
            continue
        try:
            vol = read_volume(regular_inside(root, root / f), role="label")
        except CuratorError as e:  # a 4-D label map (M&Ms' _sa_gt): said in the draft, not silently skipped
            if unread is not None:
                unread.append((f, e))
            continue
        vals, cnt = np.unique(vol.array, return_counts=True)
        counts.update({int(v): int(c) for v, c in zip(vals, cnt, strict=True)})
        read += 1
    return dict(sorted(counts.items()))


def _unread_note(unread: list[tuple[str, CuratorError]], found: bool) -> str:
    """What the draft says of the label files it could not read: how many, the kinds, one example."""
    kinds = Counter(e.kind for _, e in unread)
    f, e = unread[0]
    what = "; ".join(f"{k} {n}" for k, n in kinds.most_common())
    return (f"{len(unread)} label file(s) could not be read ({what}), e.g. {f}: {e.detail}"
            + ("" if found else " — so no label value is known: `values: {1: TODO}` is a placeholder, and "
               "ingest will refuse these files the same way"))


def _index_json(root: Path) -> dict[str, Any]:
    """An MSD/nnU-Net ``dataset.json`` at the root (empty without one; a link out of the root,
    a file over 1 MiB or one that is no JSON object is not read)."""
    from curator.io.confined import read_text_inside

    try:
        _, text = read_text_inside(root, "dataset.json", "index file", "none: a draft without it", limit=1 << 20)
        d = json.loads(text)
    except (CuratorError, OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def index_names(root: Path) -> dict[int, str]:
    """Raw value -> name from an MSD/nnU-Net ``dataset.json`` at the root (empty without one)."""
    from curator.harmonize.mapping import label_block_names

    return label_block_names(_index_json(root).get("labels"))


def _mr_word(w: str) -> bool:
    return w in _MR_WORDS or bool(re.fullmatch(r"(ce|hr)?t[12][a-z]{0,3}", w))  # t1, t1n, t2w, ceT1, hrT2


def guess_modality(paths: list[str]) -> str:
    """CT, MR or PET from the words of the paths (``t1n``, ``FLAIR``, ``mr_train``; ``PET``, ``SUV``)."""
    words = {w.lower() for p in paths for w in re.split(r"[^A-Za-z0-9]+", p) if w}
    if words & {"pet", "suv", "pt"} and not words & {"ct"}:
        return "PET"
    if any(_mr_word(w) for w in words) and not words & {"ct"}:
        return "MR"
    return "CT"


def sequence_modality(name: str, channel_names: dict[str, str], default: str) -> str:
    """A sequence's modality: nnU-Net's ``channel_names`` for ``0000``-style sequences, else its name."""
    if re.fullmatch(r"\d{4}", name) and str(int(name)) in channel_names:
        name = channel_names[str(int(name))]
    low = name.lower()
    return _SEQ_MODALITY.get(low) or ("MR" if _mr_word(low) or low in ("t1", "t2") else default)


def index_channels(root: Path) -> dict[str, str]:
    """Channel index -> name from a ``dataset.json`` at the root (nnU-Net ``channel_names``, MSD ``modality``)."""
    d = _index_json(root)
    names = d.get("channel_names") or d.get("modality")
    return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def _term(tax: Any, raw: str) -> str:
    """The taxonomy term a structure file name or index name resolves to, or TODO."""
    for cand in (raw, raw.replace("_", " "), raw.replace("-", " ")):
        t = tax.resolve(cand)
        if t is not None:
            return str(t.name)
    return TODO
