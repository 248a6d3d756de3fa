"""The draft's ``patient_id`` and ``patterns: {case: ...}``, for :mod:`curator.registry.scaffold`:
case ids that read as subject and timepoint (:func:`timepoint_subjects`) give ``{subject}``;
else ``{case}``, with a regex of the ids' shape when the image patterns match other files too.
"""

from __future__ import annotations

import re
from typing import Any

from curator.registry.scaffold_pairing import Entry

_PATIENT_NOTE = {
    "case": "check: one patient per case id. When a patient has several (timepoints, visits, studies), give {{case}} "
            "named groups under patterns: and name the patient by them — case: '(?P<subject>...)-(?P<timepoint>...)' "
            "with patient_id: '{{subject}}' — or splits put one patient's cases on both sides",
    "subject": "check: the case ids share a subject and differ in a trailing number ({examples}): read as subject "
               "and timepoint, so one subject's cases are one patient (splits keep them together); if the leading "
               "part names no person (a site, a series), write patient_id: '{{case}}'",
}


_TIMEPOINT = re.compile(r"(?P<subject>.*(?:\d|(?<![A-Za-z0-9])[0-9a-f]{8,}))(?P<sep>[-_])(?P<timepoint>\d+)")


def timepoint_subjects(case_ids: list[str]) -> dict[str, list[str]] | None:
    """Subject -> its timepoints, when every case id is ``<subject><-|_><number>``, the subject
    ending in a number (``BraTS-MEN-00008-001``, CMRxMotion's ``P001-2``, autoPET's
    ``<hex>_<study>``), with one separator, two subjects or more and one of them with several
    numbers; else None (``CHUM-001`` names a centre, ``FLARE22_Tr_0001`` a series, ``LUNG1-001``
    one collection).

    >>> timepoint_subjects(["BraTS-MEN-00008-000", "BraTS-MEN-00008-001", "BraTS-MEN-00004-000"])
    {'BraTS-MEN-00004': ['000'], 'BraTS-MEN-00008': ['000', '001']}
    >>> timepoint_subjects(["CHUM-001", "CHUM-002", "MDA-001"]), timepoint_subjects(["LUNG1-001", "LUNG1-002"])
    (None, None)
    """
    by: dict[str, set[str]] = {}
    seps = set()
    for c in case_ids:
        m = _TIMEPOINT.fullmatch(c)
        if m is None:
            return None
        by.setdefault(m["subject"], set()).add(m["timepoint"])
        seps.add(m["sep"])
    if len(by) < 2 or len(seps) != 1 or all(len(t) < 2 for t in by.values()):
        return None
    return {k: sorted(v) for k, v in sorted(by.items())}


def subject_regex(case_ids: list[str]) -> str | None:
    r"""``(?P<subject>…)<sep>(?P<timepoint>…)`` for the case ids :func:`timepoint_subjects` reads
    so (each part's shape: :func:`~curator.registry.layout.shape_regex`), else None.

    >>> subject_regex(["BraTS-MEN-00008-000", "BraTS-MEN-00008-001", "BraTS-MEN-00004-000"])
    '(?P<subject>BraTS-MEN-\\d{5})-(?P<timepoint>\\d{3})'
    """
    from curator.registry.layout import shape_regex

    found = timepoint_subjects(case_ids)
    if found is None:
        return None
    m = _TIMEPOINT.fullmatch(case_ids[0])
    subj, tp = shape_regex(list(found)), shape_regex([t for ts in found.values() for t in ts])
    if m is None or subj is None or tp is None:
        return None
    return f"(?P<subject>{subj}){m['sep']}(?P<timepoint>{tp})"


def _case_ids(entries: list[Entry]) -> list[str]:
    return sorted({v["case"] for e in entries if "{case}" in e.image for v in e.values if "case" in v})


def _patient(entries: list[Entry]) -> tuple[str, str | None]:
    """The draft's ``patient_id`` and ``patterns: {case: ...}`` when the case ids read as subject
    and timepoint (:func:`timepoint_subjects`): ``{subject}``; else ``{case}``, None."""
    rx = subject_regex(_case_ids(entries))
    return ("{subject}", rx) if rx else ("{case}", None)


def same_subject(case_ids: list[str]) -> list[str]:
    """Two case ids of one subject (:func:`timepoint_subjects`), to show; ``[]`` when none are."""
    for subject, tps in (timepoint_subjects(case_ids) or {}).items():
        if len(tps) > 1:
            return [c for c in case_ids if (m := _TIMEPOINT.fullmatch(c)) and m["subject"] == subject][:2]
    return []


def _fits(entries: list[Entry], files: list[str], patterns: dict[str, str],
          sequences: dict[str, Any]) -> list[str] | None:
    """The files other than their own that the entries' image patterns match under ``patterns``
    (``sequences`` declared), or None when a pattern no longer matches one of its own files."""
    from curator.registry.layout import compile_pattern

    custom = dict(patterns)
    if sequences and "sequence" not in custom:
        custom["sequence"] = "|".join(re.escape(k) for k in sorted(sequences, key=lambda k: (-len(k), k)))
    other: list[str] = []
    for e in entries:
        try:
            rx = compile_pattern(e.image.rstrip("/"), custom)
        except re.error:
            return None
        own = {p.rstrip("/") for p in e.paths}
        if not all(rx.fullmatch(p) for p in own):
            return None
        other += [f for f in files if f.rstrip("/") not in own and rx.fullmatch(f.rstrip("/"))]
    return sorted(set(other))


def _narrowed(entries: list[Entry], files: list[str], patterns: dict[str, str],
              sequences: dict[str, Any]) -> tuple[str, int, str] | None:
    """``(regex for {case}, how many files it keeps out, one of them)`` when the image patterns
    match other files than their own (PROMISE12's ``{case}.mhd`` its ``Case00_segmentation.mhd``)
    and a regex of the case ids' shape keeps every one of them out."""
    from curator.registry.layout import shape_regex

    if "case" in patterns:
        return None
    loose = _fits(entries, files, patterns, sequences)
    rx = shape_regex(_case_ids(entries))
    if not loose or rx is None:
        return None
    tight = _fits(entries, files, {**patterns, "case": rx}, sequences)
    return (rx, len(loose), loose[0]) if tight == [] else None
