"""Reviewed dedup overrides: a person's word on what is one scan, and which copy to keep.

``stages.dedup.overrides`` names a YAML list; each row holds one of ``same`` (two case ids that
are one scan: grouped even when the search never proposed them, or verification rejected
them), ``different`` (two case ids that are not: never in one group, not even through a chain
of copies) or ``keep`` (a case id kept in whatever group it is in, before every criterion of the
keep policy), and a ``reason``, with optional ``reviewer`` and ``date`` (YYYY-MM-DD)::

    - {same: [Prostate__p07, ROI__r07], reason: "organ crop of p07, checked in a viewer", reviewer: AB,
       date: 2026-12-01}
    - {different: [Brain__b1, Crops__c2], reason: "two patients; crop of another brain"}
    - {keep: Gamma__g01__t1, reason: "the original upload"}

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "dedup_overrides.yaml"
>>> _ = p.write_text("- {different: [A__1, B__2], reason: twins, reviewer: AB, date: 2026-12-01}\\n")
>>> (o,) = load_dedup_overrides(p)
>>> o.action, o.cases, o.said
('different', ('A__1', 'B__2'), 'reviewed different (AB, 2026-12-01): twins')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.dedup.detect import REVIEWED
from curator.dedup.group import Member
from curator.dedup.search import Candidate
from curator.errors import ConfigError, InputError
from curator.qc.overrides import _date, read_override_file, yaml_override_rows

ACTIONS = ("same", "different", "keep")
KEYS = (*ACTIONS, "reason", "reviewer", "date")
REMEDY = ("write a YAML list of rows, each with one of same: [A, B], different: [A, B] or keep: A (case ids of the "
          "cases table), a reason, and optional reviewer and date (YYYY-MM-DD); see docs/dedup.md, 'Reviewed overrides'")


@dataclass(frozen=True)
class DedupOverride:
    action: str  # same | different | keep
    cases: tuple[str, ...]  # two case ids (same, different) or one (keep)
    reason: str
    reviewer: str | None = None
    date: dt.date | None = None
    row: int = 0  # 1-based row in the file

    @property
    def said(self) -> str:
        """``reviewed same (AB, 2026-12-01): reason`` — what the duplicates table's reasons quote."""
        who = ", ".join(x for x in (self.reviewer, self.date.isoformat() if self.date else None) if x)
        return f"reviewed {self.action}" + (f" ({who})" if who else "") + (f": {self.reason}" if self.reason else "")

    @property
    def entry(self) -> str:
        """The row as written, for errors: ``row 2 (same: [A, B])``."""
        what = self.cases[0] if self.action == "keep" else f"[{', '.join(self.cases)}]"
        return f"row {self.row} ({self.action}: {what})"


def load_dedup_overrides(path: str | Path) -> list[DedupOverride]:
    """Read and validate the file; every bad row is reported in one error naming the file."""
    p = Path(path)
    raw = yaml_override_rows(read_override_file(p, "dedup", "YAML"), p, "dedup", REMEDY)
    out: list[DedupOverride] = []
    errors: list[str] = []
    for i, row in enumerate(raw, start=1):
        found = _row(i, row)
        if isinstance(found, str):
            errors.append(found)
        else:
            out.append(found)
    errors += _conflicts(out)
    if errors:
        raise ConfigError("config_error", "bad dedup override rows: " + "; ".join(errors[:10]), path=str(p),
                          remedy=REMEDY)
    return out


def _row(i: int, row: Any) -> DedupOverride | str:
    """One row, or what is wrong with it."""
    if not isinstance(row, dict):
        return f"row {i} is not a mapping"
    actions = [a for a in ACTIONS if a in row]
    unknown = sorted(set(map(str, row)) - set(KEYS))
    if unknown:
        return f"row {i}: unknown keys {unknown} (the keys are {', '.join(KEYS)})"
    if len(actions) != 1:
        return f"row {i} needs exactly one of same, different or keep (it has {actions or 'none'})"
    action = actions[0]
    value = row[action]
    cases: tuple[str, ...]
    if action == "keep":
        cases = (str(value).strip(),) if isinstance(value, str) and value.strip() else ()
        if not cases:
            return f"row {i}: keep must be one case id"
    else:
        cases = tuple(str(x).strip() for x in value) if isinstance(value, list) else ()
        if len(cases) != 2 or not all(cases) or cases[0] == cases[1]:
            return f"row {i}: {action} must list two different case ids, [A, B]"
    reason = str(row.get("reason") or "").strip()
    if not reason:
        return f"row {i} ({action}) gives no reason (say why, for whoever reads the duplicates table)"
    date, bad = _date(row.get("date"))
    if bad:
        return f"row {i}: date {row.get('date')!r} is not a date (write it YYYY-MM-DD, e.g. 2026-12-01)"
    return DedupOverride(action, cases if action == "keep" else tuple(sorted(cases)), reason,
                         str(row.get("reviewer") or "").strip() or None, date, i)


def _conflicts(rows: list[DedupOverride]) -> list[str]:
    """A pair said to be both one scan and two, or twice; one case kept twice."""
    seen: dict[tuple[str, ...], DedupOverride] = {}
    out = []
    for o in rows:
        key = o.cases
        first = seen.get(key)
        if first is not None:
            out.append(f"{first.entry} and {o.entry} both decide {' / '.join(key)}; keep one")
        else:
            seen[key] = o
    return out


def unknown_cases(rows: list[DedupOverride], known: Collection[str], hashed: Collection[str]) -> list[str]:
    """What of ``rows`` names a case the workspace does not have (``known``: the cases table's
    ids), with the close ids; or, for ``same``, a case without an image to group (``hashed``)."""
    out = []
    ids = sorted(known)
    for o in rows:
        for c in o.cases:
            if c not in known:
                close = difflib.get_close_matches(c, ids, n=3)
                out.append(f"{o.entry} names {c}, which is no case of the workspace"
                           + (f" (close: {', '.join(close)})" if close else ""))
            elif o.action == "same" and c not in hashed:
                out.append(f"{o.entry} names {c}, which has no image to group (a label-only case)")
    return out


def with_reviewed(candidates: list[Candidate], overrides: list[DedupOverride]) -> list[Candidate]:
    """``candidates`` with each reviewed ``same`` pair among them, in the ``reviewed`` tier (a pair
    the search also proposed keeps its other tiers and evidence).

    >>> out = with_reviewed([Candidate("A__1", "B__1", {"global"})], [DedupOverride("same", ("A__1", "C__1"), "crop")])
    >>> [(c.a, c.b, sorted(c.tiers)) for c in out]
    [('A__1', 'B__1', ['global']), ('A__1', 'C__1', ['reviewed'])]
    """
    by_pair = {(c.a, c.b): c for c in candidates}
    for o in overrides:
        if o.action == "same":
            a, b = sorted(o.cases)
            c = by_pair.get((a, b))
            by_pair[(a, b)] = (dataclasses.replace(c, tiers={*c.tiers, REVIEWED}) if c is not None
                               else Candidate(a, b, {REVIEWED}))
    return [by_pair[k] for k in sorted(by_pair)]


def checked_overrides(path: Path, known: Collection[str], hashed: Collection[str],
                      same_study: Callable[[str, str], bool]) -> list[DedupOverride]:
    """The reviewed overrides of ``path``, checked against the workspace's cases (``known``: the
    cases table's ids; ``hashed``: those with an image) — an unknown id is an error naming its row
    (a typo must not leave a wrong group standing), as is a ``same`` between two sequences of one
    study (``same_study``)."""
    out = load_dedup_overrides(path)
    bad = unknown_cases(out, known, hashed)
    bad += [f"{o.entry}: the two are sequences of one study, never one scan" for o in out
            if o.action == "same" and same_study(*o.cases)]
    if bad:
        raise ConfigError("config_error", "stages.dedup.overrides: " + "; ".join(bad[:10]), path=str(path),
                          remedy="correct the case ids (select case_id from cases) or remove the rows")
    return out


def kept_apart(overrides: list[DedupOverride]) -> dict[str, set[str]]:
    """Case id → one token per ``different`` row naming it: what
    :func:`~curator.dedup.detect.verify_candidates` keeps out of one group (``kept_apart``).

    >>> kept_apart([DedupOverride("different", ("A__1", "B__1"), "twins", row=3)])
    {'A__1': {'different:3'}, 'B__1': {'different:3'}}
    """
    apart: dict[str, set[str]] = {}
    for o in overrides:
        if o.action == "different":
            for c in o.cases:
                apart.setdefault(c, set()).add(f"different:{o.row}")
    return apart


def with_keeps(members: dict[str, Member], overrides: list[DedupOverride]) -> dict[str, Member]:
    """A copy of ``members`` with each ``keep`` row's case marked ``reviewed_keep`` (its words),
    which the keep policy puts before every criterion."""
    out = dict(members)
    for o in overrides:
        if o.action == "keep":
            out[o.cases[0]] = dataclasses.replace(out[o.cases[0]], reviewed_keep=o.said)
    return out


def reviewed_pairs(overrides: list[DedupOverride]) -> dict[tuple[str, ...], str]:
    """Sorted pair of case ids → a ``same`` row's words (the duplicates rows' ``reviewed``)."""
    return {o.cases: o.said for o in overrides if o.action == "same"}


def keep_problems(overrides: list[DedupOverride], dup: list[dict[str, Any]], given: str, path: Path,
                  datasets: Mapping[str, str | None], stage: str) -> list[dict[str, Any]]:
    """Two ``keep`` rows in one group is an error (``ConfigError`` naming ``path``); a ``keep``
    for a case in no group an ``override_unmatched`` warning row (returned; ``given``: the
    setting as written, the rows' path; ``datasets``: case id → its dataset)."""
    from curator.runner.stage import problem_row

    group = {r["case_id"]: r["group_id"] for r in dup}
    keeps: dict[str, list[DedupOverride]] = {}
    rows = []
    for o in (o for o in overrides if o.action == "keep"):
        if o.cases[0] in group:
            keeps.setdefault(group[o.cases[0]], []).append(o)
        else:
            err = InputError("override_unmatched", f"dedup override {o.entry} keeps a case that is in no duplicate "
                             "group", path=given, case_id=o.cases[0],
                             remedy="remove the row, or add a `same` row if the case has a copy dedup did not find")
            rows.append(problem_row(stage, err, dataset=datasets.get(o.cases[0]), case_id=o.cases[0], path=given,
                                    severity="warning"))
    clash = [f"{' and '.join(o.entry for o in os)} keep two members of group {gid}" for gid, os in keeps.items()
             if len(os) > 1]
    if clash:
        raise ConfigError("config_error", "stages.dedup.overrides: " + "; ".join(clash[:10]), path=str(path),
                          remedy="keep one keep row per group (the members are one scan)")
    return rows
