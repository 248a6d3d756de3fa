"""The override list: labels a person re-includes (or excludes) whatever the filter decided.

YAML (a list of mappings) or CSV with columns ``case_id``, ``term`` (or ``term_id``),
optional ``origin`` (label layer), ``action`` (``include``, the default, or ``exclude``),
``reason``, and optional ``reviewer`` (who decided) and ``date`` (when; an ISO date)::

    - {case_id: KiTS23__case_00008, term: kidney, action: include, reason: "horseshoe kidney", reviewer: AB,
       date: 2024-06-01}

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "o.csv"
>>> _ = p.write_text("case_id,term,reason\\nc1,liver,looked fine\\n")
>>> load_overrides(p)
[Override(case_id='c1', term_id='liver', origin=None, action='include', reason='looked fine', reviewer=None, date=None, row=1)]
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml

from curator.errors import ConfigError
from curator.qc.cohort import Override
from curator.yamlio import load_yaml

ORIGINS = ("original", "revised", "pseudo")  # the label layers an override can name
COLUMNS = ("case_id", "term", "term_id", "origin", "action", "reason", "reviewer", "date")
REMEDY = ("write a YAML list (or CSV) of rows with case_id, term, optional origin, action "
          "(include | exclude), reason, and optional reviewer and date (YYYY-MM-DD); see docs/qc.md")


def load_overrides(path: str | Path, *, require_reason: bool = False) -> list[Override]:
    """Read and validate an override file; every bad row is reported in one error.
    ``require_reason`` (``stages.qc.override_reason: required``): a row without a reason is one."""
    p = Path(path)
    text = read_override_file(p, "qc", "YAML or comma-separated CSV")
    if p.suffix.lower() == ".csv":
        raw: Any = list(csv.DictReader(text.splitlines()))
        header = text.splitlines()[0] if text.strip() else ""
        if raw and "case_id" not in raw[0] and ";" in header:
            raise ConfigError("config_error", "the qc override CSV is separated by semicolons", path=str(p),
                              remedy="save it comma-separated (columns case_id, term, [origin], action, reason)")
    else:
        raw = yaml_override_rows(text, p, "qc", REMEDY)
    out: list[Override] = []
    errors: list[str] = []
    for i, row in enumerate(raw, start=1):
        if not isinstance(row, dict):
            errors.append(f"row {i} is not a mapping")
            continue
        term = row.get("term_id") or row.get("term")
        action = str(row.get("action") or "include").strip().lower()
        if None in row:  # csv.DictReader files a row's extra fields under None
            errors.append(f"row {i} has more fields than the header (a comma inside the reason? quote it)")
            continue
        unknown = set(row) - set(COLUMNS)
        date, bad_date = _date(row.get("date"))
        reason = str(row.get("reason") or "").strip()
        origin = str(row["origin"]).strip().lower() if row.get("origin") else None
        if not row.get("case_id") or not term:
            errors.append(f"row {i} needs case_id and term")
        elif action not in ("include", "exclude"):
            errors.append(f"row {i}: action {action!r} is not include or exclude")
        elif origin is not None and origin not in ORIGINS:
            # a typo (`psuedo`) matched no label: only an override_unmatched warning named the case
            errors.append(f"row {i}: origin {origin!r} is not {', '.join(ORIGINS[:-1])} or {ORIGINS[-1]} "
                          "(leave it out to match every layer)")
        elif unknown:
            errors.append(f"row {i}: unknown columns {sorted(unknown)} (the columns are {', '.join(COLUMNS)})")
        elif bad_date:
            errors.append(f"row {i}: date {row.get('date')!r} is not a date (write it YYYY-MM-DD, e.g. 2024-06-01)")
        elif require_reason and not reason:
            errors.append(f"row {i} ({row['case_id']} / {term}) gives no reason (stages.qc.override_reason: required)")
        else:
            reviewer = str(row.get("reviewer") or "").strip() or None
            out.append(Override(str(row["case_id"]).strip(), str(term).strip(), origin, action, reason,
                                reviewer=reviewer, date=date, row=i))
    errors += conflicts(out)
    if errors:
        raise ConfigError("config_error", "bad qc override rows: " + "; ".join(errors[:10]), path=str(p),
                          remedy=REMEDY)
    return out


def read_override_file(p: Path, stage: str, formats: str) -> str:
    """The text of ``stages.<stage>.overrides``, or a ``config_error`` naming it and what to do."""
    try:
        return p.read_text(encoding="utf-8-sig")  # a CSV saved by Excel starts with a byte-order mark
    except FileNotFoundError as e:
        raise ConfigError("config_error", f"the {stage} override file does not exist", path=str(p),
                          remedy=f"fix stages.{stage}.overrides in pipeline.yaml") from e
    except IsADirectoryError as e:
        raise ConfigError("config_error", f"stages.{stage}.overrides names a folder, not a file", path=str(p),
                          remedy="point it at the file of overrides") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config_error", f"the {stage} override file cannot be read ({type(e).__name__})",
                          path=str(p), remedy=f"save it as UTF-8 text ({formats})") from e


def yaml_override_rows(text: str, p: Path, stage: str, remedy: str) -> list[Any]:
    """The rows of a YAML override file (every value read as the text it is written as: `reason:
    no` is "no", not False), or a ``config_error`` naming the file."""
    try:
        raw = load_yaml(text, text_scalars=True) or []
    except yaml.YAMLError as e:
        raise ConfigError("config_error", f"the {stage} override file is not valid YAML: {e}", path=str(p),
                          remedy=remedy) from e
    if not isinstance(raw, list):
        raise ConfigError("config_error", f"the {stage} override file must hold a list of rows", path=str(p),
                          remedy=remedy)
    return raw


def _date(value: object) -> tuple[dt.date | None, bool]:
    """An override row's ``date`` (None when it gives none) and whether it is not an ISO date."""
    text = str(value or "").strip()
    if not text:
        return None, False
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # fromisoformat also takes 20240601 and 2024-W23-6
        return None, True
    try:
        return dt.date.fromisoformat(text), False
    except ValueError:
        return None, True


def conflicts(overrides: list[Override]) -> list[str]:
    """Two rows that decide one label: the same case and term, and the same origin or one of
    them without an origin (it matches every layer). Different actions ("exclude" by one person,
    "include" by another) and the same action twice are both refused, naming both rows — the last
    row silently won, and its reason credited the first override to the filter.

    >>> a = Override("c1", "liver", None, "exclude", "leaks", row=1)
    >>> conflicts([a, Override("c1", "liver", "pseudo", "include", "fine", row=3)])
    ["rows 1 and 3 both decide c1 / liver (pseudo): exclude ('leaks') and include ('fine'); keep one"]
    """
    by_label: dict[tuple[str, str], list[Override]] = {}
    out: list[str] = []
    for b in overrides:
        for a in by_label.setdefault((b.case_id, b.term_id), []):
            if a.origin is not None and b.origin is not None and a.origin != b.origin:
                continue  # two layers of one term: two labels
            layer = a.origin or b.origin or "every layer"
            what = (f"{a.action} ({a.reason!r}) and {b.action} ({b.reason!r})" if a.action != b.action
                    else f"{a.action} twice")
            out.append(f"rows {a.row} and {b.row} both decide {b.case_id} / {b.term_id} ({layer}): {what}; keep one")
        by_label[(b.case_id, b.term_id)].append(b)
    return out
