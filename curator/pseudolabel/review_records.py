"""What a review export folder holds and how it is read back: the export's manifest (``export.json``
listing its cases, each record keyed with the workspace's secret), each case folder's record
(checksums of the masks it exported and the store's grid), the reviewer's ``worklist.csv`` accept
column, the files saved as a revision, and the workspace's own copy of an imported revision.

:mod:`curator.pseudolabel.review` writes these, :mod:`curator.pseudolabel.review_revision` and :mod:`curator.pseudolabel.review_import` read them.

>>> import numpy as np
>>> mask_digest(np.ones((2, 2, 2), bool)) == mask_digest(np.ones((2, 2, 2), bool))
True
>>> mask_digest(np.ones((2, 2, 2), bool)) == mask_digest(np.ones((2, 4, 1), bool))  # the shape counts
False
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import uuid
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, InputError
from curator.io.csvtext import unquote
from curator.io.fsutil import atomic_path
from curator.io.volume import Geometry
from curator.store import CaseStore

RECORD = "export.json"



RECORD_FORMAT = 1



def mask_digest(mask: NDArray[np.bool_]) -> str:
    """Checksum of a boolean mask (with its shape), for "left as exported" at import."""
    h = hashlib.sha256(repr(tuple(mask.shape)).encode())
    h.update(np.packbits(np.ascontiguousarray(mask), axis=None).tobytes())
    return h.hexdigest()[:32]



def layer_digest(store: CaseStore, layer: str) -> str | None:
    """Checksum of a label layer's planes and codes (None when the store has no such layer)."""
    if layer not in store.layers():
        return None
    h = hashlib.sha256()
    for arr, vals in store.planes(layer):
        a = np.ascontiguousarray(np.asarray(arr[...]))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        h.update(json.dumps({str(k): v for k, v in vals.items()}, sort_keys=True).encode())
    return h.hexdigest()[:32]



def grid_record(geometry: Geometry) -> dict[str, Any]:
    """The store's grid as an export record holds it: import tells a store rebuilt on another grid
    since (a new target spacing) from a revision saved on the wrong grid."""
    return {"shape": list(geometry.shape), "affine": [round(x, 6) for x in geometry.affine]}



def exported_grid(folder: Path, record: dict[str, Any]) -> Geometry | None:
    """The store's grid when the case folder was exported: its record's (``grid``), or, for a
    record written before it held one, the header of the ``pseudo.nii.gz`` the export wrote on
    it; None when neither can be read."""
    grid = record.get("grid")
    try:
        if isinstance(grid, dict):
            return Geometry.from_affine(tuple(grid["shape"]), grid["affine"])
        img: Any = nib.load(folder / "pseudo.nii.gz")
        return Geometry.from_affine(tuple(img.shape), img.affine)
    except Exception:  # noqa: BLE001 - an unreadable file or record: the revision's own grid check says why
        return None



def grid_text(geometry: Geometry) -> str:
    """``(160, 130, 72) voxels of 2 × 2 × 4 mm``."""
    return f"{tuple(geometry.shape)} voxels of {' × '.join(f'{s:g}' for s in np.round(geometry.spacing, 3))} mm"



def revision_files(folder: Path) -> list[Path]:
    """The files of a case folder a reviewer saved as its revision (any name starting ``revised``)."""
    return sorted(p for p in folder.glob("*") if p.is_file() and p.name.lower().startswith("revised"))



def record_digest(record: dict[str, Any], key: bytes) -> str:
    """A case record's checksum keyed with the workspace's secret key (HMAC-SHA-256): the reviewer
    holds the export and its records, and a plain checksum of a record they rewrote (a code for
    another term, a case not exported to them) was theirs to compute too."""
    return hmac.new(key, json.dumps(record, sort_keys=True).encode(), hashlib.sha256).hexdigest()[:32]



def read_manifest(out: Path) -> dict[str, Any] | None:
    """``<out>/export.json`` (the export's id and ``{case id: its record's digest}``), or None."""
    try:
        manifest = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(manifest, dict) and manifest.get("format") == RECORD_FORMAT
          and isinstance(manifest.get("cases"), dict) and isinstance(manifest.get("export_id"), str))
    return manifest if ok else None



def write_manifest(out: Path, records: dict[str, dict[str, Any]], key: bytes) -> None:
    """``<out>/export.json`` listing ``records``' cases, plus those of an earlier export into the
    same folder whose case folders are still there (their revisions still import)."""
    old = read_manifest(out)
    cases = {c: d for c, d in (old or {}).get("cases", {}).items() if (out / c / RECORD).is_file()}
    cases.update({c: record_digest(r, key) for c, r in records.items()})
    manifest = {"format": RECORD_FORMAT, "export_id": old["export_id"] if old else uuid.uuid4().hex[:12],
                "cases": dict(sorted(cases.items()))}
    with atomic_path(out / RECORD) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")



def check_listed(folder: Path, manifest: dict[str, Any] | None, key: bytes) -> None:
    """An ``InputError`` unless the case folder ``folder`` is one of the export ``manifest``'s
    cases, holding the record the export wrote for it (a folder renamed to another case's name
    would import into that case)."""
    cid = folder.name
    try:
        exported_as = str(read_record(folder)["case_id"])
    except InputError:
        exported_as = None
    if manifest is None:
        raise InputError("revised_label_invalid", f"the export folder has no {RECORD} listing its cases (not "
                         "written by `curator review export`, or by an older curator)", path=str(folder.parent),
                         remedy="export the case again into a new folder (--include-reviewed for a reviewed case) "
                                "and redo or copy the revision there")
    if exported_as is not None and exported_as != cid:
        raise InputError("revised_label_invalid", f"this folder was exported as case {exported_as!r}, not {cid!r}",
                         path=str(folder), remedy=f"rename the folder back to {exported_as}")
    if cid not in manifest["cases"]:
        raise InputError("revised_label_invalid", "not a case folder of this export (its export.json lists "
                         f"{len(manifest['cases'])} case(s), not {cid!r})", path=str(folder),
                         remedy="keep the case folder names of the export; a case it did not export needs an "
                                "export of its own")
    if exported_as is None or not hmac.compare_digest(record_digest(read_record(folder), key),
                                                      str(manifest["cases"][cid])):
        raise InputError("revised_label_invalid", f"the case's {RECORD} is missing or is not the one this export "
                         "wrote (edited, or copied from another export or another workspace?)", path=str(folder / RECORD),
                         remedy="keep the files `curator review export` wrote in the case folder; save the "
                                "revision in the folder of the export that wrote its pseudo.nii.gz (an export "
                                "written by an older curator: export the case again and copy the revision there)")



def read_record(folder: Path) -> dict[str, Any]:
    """The ``export.json`` :func:`_write_editable` wrote in a case folder, or an ``InputError``."""
    path = folder / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {record.get('format') if isinstance(record, dict) else None!r}")
        for key in ("case_id", "codes", "start_masks"):
            if key not in record:
                raise ValueError(f"no {key!r}")
    except (OSError, ValueError) as e:
        raise InputError("revised_label_invalid", f"the export's record of this case ({RECORD}) is missing or "
                         f"unreadable ({e.__class__.__name__})", path=str(path),
                         remedy="keep the export.json that `curator review export` wrote; an export by an older "
                                "curator has none: export the case again into a new folder (--include-reviewed "
                                "for a reviewed case) and redo or copy the revision there") from e
    return record



ACCEPT_ALL = ("all", "yes", "y", "x", "ok", "true", "1")  # worklist.csv's accept: every structure of the case



def worklist_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder/worklist.csv`` as a reviewer saved it (a spreadsheet's save is read
    too: a byte order mark, ``;`` or tab between the cells); none when there is no worklist or it
    has no ``accept`` column (a release's, or an export written before the column existed)."""
    path = folder / "worklist.csv"
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config_error", f"worklist.csv cannot be read ({e.__class__.__name__})", path=str(path),
                          remedy="save it as CSV in UTF-8 (the columns as the export wrote them)") from e
    header = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text), delimiter=max(",;\t", key=header.count))
    if "accept" not in (reader.fieldnames or []):
        return []
    if "case_id" not in (reader.fieldnames or []):
        raise ConfigError("config_error", "worklist.csv has an accept column but no case_id column", path=str(path),
                          remedy="keep the worklist's columns as the export wrote them; fill in `accept` only")
    # a cell the export quoted against formulas (formula_safe) reads as it was written
    return [{str(k): unquote(str(v or "").strip()) for k, v in r.items() if k is not None} for r in reader]



def read_accepts(folder: Path) -> dict[str, str]:
    """``{case id: its accept cell}``: the non-empty cells of worklist.csv's ``accept`` column."""
    return {r.get("case_id", ""): r["accept"] for r in worklist_rows(folder) if r.get("accept")}



def revised_copy_path(store_path: Path) -> Path:
    """``<workspace>/revised/<case_id>.npz``: the workspace's own copy of an imported revision
    (the store's ``revised`` layer is rebuilt from it when preprocess rewrites the store)."""
    return store_path.parent.parent / "revised" / f"{store_path.stem}.npz"



def save_revised_copy(store: CaseStore, data: NDArray[Any], values: dict[int, list[str]],
                      review: dict[str, Any] | None = None, affine: NDArray[np.float64] | None = None) -> Path:
    """Write the workspace's copy of a case's revision: ``data`` on the store's grid (or on the
    grid of ``affine``), its codes, and the revised layer's ``review`` attribute (who reviewed
    each label, when: :mod:`curator.pseudolabel.review_provenance`)."""
    return write_revised_copy(store.path, data, store.geometry.matrix if affine is None else affine, values, review)



def write_revised_copy(store_path: Path, data: NDArray[Any], affine: NDArray[np.float64],
                       values: dict[int, list[str]], review: dict[str, Any] | None = None) -> Path:
    """:func:`save_revised_copy` of the store at ``store_path``, the grid given by ``affine``."""
    dest = revised_copy_path(store_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, data=data, affine=affine,
                            values=np.array(json.dumps({str(k): v for k, v in values.items()})),
                            review=np.array(json.dumps(review or {}, sort_keys=True)))
    return dest



def load_revised_review(store_path: Path) -> dict[str, Any]:
    """The ``review`` attribute kept with the workspace's copy of a revision ({} when there is none,
    or the copy was written by a curator that did not keep it)."""
    path = revised_copy_path(store_path)
    if not path.is_file():
        return {}
    with np.load(path) as z:
        return dict(json.loads(str(z["review"]))) if "review" in z.files else {}



def load_revised_copy(store_path: Path) -> tuple[NDArray[Any], NDArray[np.float64], dict[int, list[str]]] | None:
    """(label array, its voxel -> RAS affine, code -> terms) of an imported revision, or None."""
    path = revised_copy_path(store_path)
    if not path.is_file():
        return None
    with np.load(path) as z:
        values = {int(k): list(v) for k, v in json.loads(str(z["values"])).items()}
        return np.asarray(z["data"]), np.asarray(z["affine"], dtype=np.float64), values


READABLE = ("revised.nii.gz", "revised.nii", "revised.nrrd")


def revision_file(folder: Path) -> Path:
    """The one revision file of a case folder, or an ``InputError`` saying why it cannot be read:
    several, a 3D Slicer segmentation (``.seg.nrrd``), or a name import does not know."""
    files = revision_files(folder)
    names = [f.name for f in files]
    if len(files) > 1:
        raise InputError("revised_label_invalid", f"the case folder holds several revisions ({', '.join(names)})",
                         path=str(folder), remedy="keep only the one to import, saved as revised.nii.gz")
    path = files[0] if files else folder / "revised.nii.gz"
    if path.name.lower().endswith(".seg.nrrd"):
        raise InputError("revised_label_invalid", f"{path.name} is a 3D Slicer segmentation: its segments may be "
                         "layers and its values Slicer's, not the codes of codes.json", path=str(path),
                         remedy="in Slicer export the segmentation as a labelmap with the colour table "
                                "labels_slicer.txt (Segmentations > Export to files, or right-click > Export "
                                "visible segments to binary labelmap, then save it) as revised.nii.gz")
    if path.name not in READABLE:
        raise InputError("revised_label_invalid", f"{path.name!r} is not a name import reads", path=str(path),
                         remedy="save the revision as revised.nii.gz (revised.nii and revised.nrrd are read too)")
    return path
