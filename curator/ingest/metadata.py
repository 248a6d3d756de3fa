"""Per-case metadata a dataset publishes (age, sex, BMI, scanner, ...), read from its own file.

Declared in the dataset YAML::

    metadata:
      file: dataset/kits23.json      # JSON list of records, or CSV/TSV with a header
      key: case_id                   # field holding the dataset's case id ({case})
      columns: {gender: sex, age_at_nephrectomy: age_years, bmi: bmi}
      keep: [comorbidities, tumor_isup_grade, malignant]   # published as they are

Mapped fields become columns of ``cases``; the fields ``keep`` names go to ``metadata_json``,
nested records included (KiTS23's ``comorbidities``), so a query can group by any of them:
``metadata_json->>'$.comorbidities.chronic_kidney_disease'``; ``keep: [surgery.type]`` publishes
one field of a record and nothing else of it. Every other field is dropped: a release publishes
only what a person declared (an allowlist — a blocklist of identifying names let ``PatientName``,
``DateOfBirth``, ``StudyDate`` and free-text notes through). Fields whose names identify a person
or date an encounter (:data:`IDENTIFYING`, camelCase too, at any depth of a nested record) are
dropped even when named; that list cannot know every name a file uses, so a record that may hold
more than its published fields is kept field by field. The dropped fields' names (dotted for a
nested one: ``surgery.surgeon``), never their values, are reported.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from curator.errors import InputError
from curator.io.confined import read_text_inside
from curator.io.fsutil import canonical_json

STANDARD = {"sex", "age_years", "bmi", "manufacturer", "scanner_model", "field_strength_t"}
# Fields that identify a person (or date an encounter) are never copied, whatever a metadata file
# holds or `keep` says: matched on the words of the name (camelCase and spaces split like _).
# The list cannot know every name a file may use: a kept nested record's other fields are published,
# so `keep` names a record's own fields (`surgery.type`) where it may hold more.
IDENTIFYING = re.compile(r"(^|_)(name|surname|first_?name|last_?name|initials|birth|dob|address|street|city|zip|"
                         r"zipcode|postcode|postal|phone|email|mrn|ssn|social_security|nhs|insurance|"
                         r"medical_?record|record_?number|patient|pat|pid|accession|"
                         r"institution|hospital|clinic|physician|doctor|referring|surgeon|radiologist|"
                         r"pathologist|operator|technician|technologist|nurse|reader|date|dates|datetime|dt|"
                         r"timestamp|uid|note|notes|comment|comments)($|_)"
                         r"|_(on|at)$", re.IGNORECASE)  # performed_on, scanned_at: when it happened


# the same written as one word (``patientname``, ``birthdate``, ``studydate``, ``referringdoctor``)
COMPOUND = re.compile(r"^(patient|birth|dob|mrn)|(name|date|birth|doctor|physician)$", re.IGNORECASE)


def identifying(field: str) -> bool:
    """Whether a field name names a person, an identifier or an encounter date: ``PatientName``,
    ``PatID``, ``date_of_birth``, ``Study Date``, ``exam_dt``, ``performed_on``, ``surgeon``,
    ``clinic_note``, ``ptname``, ``studydate`` (camelCase, spaces and dashes count as ``_``).

    >>> [f for f in ("surgeon", "PatID", "exam_dt", "performed_on", "zipcode", "surgery_type", "echo_time",
    ...              "pathology_t_stage", "operative_time") if identifying(f)]
    ['surgeon', 'PatID', 'exam_dt', 'performed_on', 'zipcode']
    """
    words = re.sub(r"[\s\-.]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(field)))
    return bool(IDENTIFYING.search(words)) or any(COMPOUND.search(w) for w in words.split("_"))


def _scrubbed(v: Any, where: str, dropped: set[str], fields: set[str] | None = None) -> Any:
    """A kept value (the field ``where``) with identifying keys removed from nested records, at any
    depth, and with ``fields`` (``keep: [surgery.type]``: the paths below ``where`` a person named)
    only those; the dotted names of the fields left out are added to ``dropped``."""
    if isinstance(v, list):
        kept = [_scrubbed(x, where, dropped, fields) for x in v]
        return kept if fields is None else [x for x in kept if x is not None]
    if not isinstance(v, dict):
        if fields is not None:  # `keep: [surgery.type]` of a value that is no record (free text): none of it
            dropped.add(where)
            return None
        return v
    out = {}
    for k, x in v.items():
        name = f"{where}.{k}"
        below = None if fields is None else {f[len(k) + 1:] for f in fields if f.startswith(f"{k}.")}
        if identifying(k) or (fields is not None and k not in fields and not below):
            dropped.add(name)
        else:
            out[k] = _scrubbed(x, name, dropped, below or None)
    return out


_SEX = {"male": "M", "m": "M", "female": "F", "f": "F"}


def _normalise(column: str, value: Any) -> Any:
    if value in (None, "", "NA", "nan"):
        return None
    if column == "sex":
        return _SEX.get(str(value).strip().lower(), str(value))
    if column in ("age_years", "bmi", "field_strength_t"):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return value


def _jsonable(v: Any) -> bool:
    """Scalars, and lists/records of them (nested records of the metadata file)."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return True
    if isinstance(v, list):
        return all(_jsonable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return False


def load_metadata(spec_metadata: dict[str, Any], root: Path, dropped: set[str] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """case id -> {standard columns..., 'metadata_json': str}; empty when not declared. The names
    of the fields left out (neither mapped nor kept, or identifying) are added to ``dropped``."""
    if not spec_metadata:
        return {}
    keep = {str(k) for k in spec_metadata.get("keep") or ()}
    within: dict[str, set[str]] = {}  # a record -> the fields of it `keep` names (surgery.type)
    for k in keep:
        if "." in k:
            within.setdefault(k.split(".", 1)[0], set()).add(k.split(".", 1)[1])
    dropped = dropped if dropped is not None else set()
    key = str(spec_metadata.get("key", "case_id"))
    mapping = {str(k): str(v) for k, v in (spec_metadata.get("columns") or {}).items()}
    path, text = read_text_inside(root, str(spec_metadata["file"]), "metadata file named by the dataset YAML",
                                  "download the dataset's metadata file or remove `metadata:`")
    try:
        if path.suffix == ".json":
            records = json.loads(text)
        else:
            header = text.split("\n", 1)[0]
            delim = "\t" if path.suffix in (".tsv", ".tab") else (";" if ";" in header and "," not in header else ",")
            records = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delim))
    except (json.JSONDecodeError, csv.Error) as e:
        raise InputError("corrupt_file", f"the metadata file cannot be parsed ({e})", path=str(path),
                         remedy="download the metadata file again") from e
    out: dict[str, dict[str, Any]] = {}
    for rec in records if isinstance(records, list) else []:
        if not isinstance(rec, dict) or key not in rec:
            continue
        row: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for k, v in rec.items():
            if k == key:
                continue
            if k in mapping and mapping[k] in STANDARD:  # normalised (a number, M/F, a scanner name)
                row[mapping[k]] = _normalise(mapping[k], v)
            elif identifying(k) or (k not in mapping and k not in keep and k not in within):
                dropped.add(str(k))
            elif _jsonable(v):
                fields = None if k in keep or k in mapping else within.get(str(k))
                value = _scrubbed(v, str(k), dropped, fields)
                if value is not None or fields is None:
                    rest[mapping.get(str(k), str(k))] = value
        row["metadata_json"] = canonical_json(rest) if rest else None
        out[str(rec[key])] = row
    return out
