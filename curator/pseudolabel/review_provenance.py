"""Who reviewed a label, when, from which export and which file — and which case a file was exported for.

* Each label an import revises or accepts carries its provenance (:func:`provenance`): the
  reviewer (``curator review import --reviewer NAME``), the import's time (UTC), the export's id
  and the SHA-256 of the file read. It is kept on the ``labels`` rows (``reviewed_by``,
  ``reviewed_at``, ``review_export_id``, ``review_sha256``), in the revised layer's attributes
  (``review``: per term, and the last import or revert of the case), in the workspace's copy
  of the revision (so a store rebuilt by preprocess keeps it), and in the workspace's review log
  (``<workspace>/revised/review_log.jsonl``: one line per import and revert of a case).
* An export writes the case id into the header of each NIfTI file it writes (``descrip``:
  :func:`case_stamp`). A revision whose header still says another case (saved from another
  case's folder, or copied there) is refused at import (:func:`stamped_case`); an editor that
  writes a new header drops the stamp, and nothing is checked then.

>>> case_stamp("KiTS23__case_00004")
'curator review case KiTS23__case_00004'
>>> case_stamp("x" * 80)[:21]
'curator review case #'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import nibabel as nib

from curator.io.fsutil import atomic_write_text

STAMP = "curator review case "
LOG = "review_log.jsonl"
FIELDS = ("reviewed_by", "reviewed_at", "review_export_id", "review_sha256")  # the labels columns


def case_stamp(case_id: str) -> str:
    """The NIfTI ``descrip`` an export writes into a case's files: the case id, or a checksum of
    it when it does not fit the field's 79 ASCII characters."""
    text = STAMP + case_id
    if len(text) <= 79 and text.isascii():
        return text
    return STAMP + "#" + hashlib.sha256(case_id.encode()).hexdigest()[:16]


def stamped_case(path: Path) -> str | None:
    """The case a NIfTI file's header says it was exported for (``#<checksum>`` for a long id), or
    None: no stamp (another tool wrote the header), not NIfTI, or unreadable (import says why)."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        img: Any = nib.load(path)
        raw = bytes(img.header["descrip"].tobytes())
    except Exception:  # noqa: BLE001 - the revision's own read says what is wrong with the file
        return None
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return text[len(STAMP):] if text.startswith(STAMP) else None


def now_utc() -> dt.datetime:
    """The time an import or revert is recorded with (UTC, whole seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def provenance(reviewer: str | None, at: dt.datetime, export_id: str | None, sha256: str | None) -> dict[str, Any]:
    """A label's provenance as the ``labels`` columns hold it."""
    return {"reviewed_by": reviewer, "reviewed_at": at, "review_export_id": export_id, "review_sha256": sha256}


def _json_ready(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in p.items()}


def from_json(p: dict[str, Any]) -> dict[str, Any]:
    """A provenance read back from JSON (a layer's attributes, the workspace copy): its time a datetime."""
    out = {k: p.get(k) for k in FIELDS}
    if isinstance(out["reviewed_at"], str):
        out["reviewed_at"] = dt.datetime.fromisoformat(out["reviewed_at"])
    return out


def layer_review(rows: list[dict[str, Any]], last: dict[str, Any]) -> dict[str, Any]:
    """The revised layer's ``review`` attribute: per term its state, round and provenance (the
    case's revised ``rows``), and ``last``, the import or revert that wrote the layer (``action``,
    ``export_id``, ``reviewed_by``, ``at``)."""
    terms = {r["term_id"]: _json_ready({"state": r.get("review_state"), "round": r.get("review_round"),
                                        **{k: r.get(k) for k in FIELDS}}) for r in rows}
    return {"last": _json_ready(last), "terms": dict(sorted(terms.items()))}


def imported_by(attrs: dict[str, Any] | None) -> str | None:
    """The export id of the import that wrote a revised layer (its attributes), or None (a revert
    wrote it, or a curator that did not record it)."""
    last = ((attrs or {}).get("review") or {}).get("last") or {}
    return str(last["export_id"]) if last.get("action") == "import" and last.get("export_id") else None


def log_review(workspace_root: Path, entries: list[dict[str, Any]]) -> None:
    """Add a line per entry to the workspace's review log (the file rewritten atomically: a crash
    leaves the log as it was or with every line)."""
    if not entries:
        return
    path = workspace_root / "revised" / LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + "".join(json.dumps(_json_ready(e), sort_keys=True) + "\n" for e in entries))


def read_log(workspace_root: Path) -> list[dict[str, Any]]:
    """The review log's entries, oldest first (none when nothing was imported)."""
    path = workspace_root / "revised" / LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
