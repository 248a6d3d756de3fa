"""A study's sequences as channels: which selected cases make complete studies, and how their
grids line up. Shared by the multi-channel exports (:mod:`curator.export.channels`) and the
loader (:mod:`curator.torch.channels`), so both take the same studies for the same reasons.

Curator ingests each sequence of a multi-sequence study (BraTS t1n/t1c/t2w/t2f, prostate T2 +
ADC, CT + PET) as its own case; the sequences of one study share a ``study_key``. A study is
used when it holds exactly one selected case of each requested sequence; it is named after the
first sequence's case id without its ``__<sequence>`` suffix (``BraTS__00001__t1n`` ->
``BraTS__00001``). Each case's store was cropped to its own body, so a channel's grid is
normally the first one's shifted by whole voxels (:func:`voxel_shift`).

>>> ref = [1.0, 0, 0, -10.0, 0, 2.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 0, 1]
>>> other = [1.0, 0, 0, -7.0, 0, 2.0, 0, 4.0, 0, 0, 3.0, 0, 0, 0, 0, 1]
>>> voxel_shift(ref, other)  # reference voxel i is the other store's voxel i + shift
(-3, -2, 0)
>>> voxel_shift(ref, [2.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 0, 1]) is None
True
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from curator.errors import ConfigError


class Member(Protocol):
    """What grouping needs of a case."""

    @property
    def case_id(self) -> str: ...
    @property
    def sequence(self) -> str | None: ...
    @property
    def study_key(self) -> str | None: ...


C = TypeVar("C", bound=Member)


def check_channels(channels: Sequence[str], cases: Sequence[Member]) -> None:
    """Refuse an empty or repeated channel list, and a sequence no selected case has."""
    have = sorted({c.sequence for c in cases if c.sequence})
    if not channels or len(set(channels)) != len(channels):
        raise ConfigError("config_error", f"channels {list(channels)}: give each sequence once",
                          remedy=f"the selected cases' sequences: {', '.join(have) or 'none'}")
    unknown = [s for s in channels if s not in have]
    if unknown:
        raise ConfigError("config_error", f"no selected case has the sequence {', '.join(unknown)}",
                          remedy=f"give some of the selected cases' sequences: {', '.join(have) or 'none'} "
                                 "(the cases table's sequence column; widen the selection if they are left out)")


def group_studies(cases: Sequence[C], channels: Sequence[str], skipped: dict[str, str],
                  dropped: Sequence[tuple[Member, str]] = ()) -> list[tuple[str, tuple[C, ...]]]:
    """``(name, one case per channel)`` of every study holding one selected case per channel, in
    the reference cases' order; the others go to ``skipped`` (name -> why) — a study none of
    whose selected cases has a channel's sequence too (another dataset's names for the same
    contrasts: MSD's FLAIR for BraTS' t2f), and a case with no sequence. Cases of other
    sequences in a study that is used are not channels and not reported. ``dropped``: the
    selected cases left out as duplicates, each with the member of its group used instead — a
    study lacking that sequence is told so, not that it has no such case. A study is named as
    :func:`study_name` says, skipped or not.

    >>> from types import SimpleNamespace as C
    >>> t1, t2 = C(case_id="B__1__t1", sequence="t1", study_key="s1"), C(case_id="B__1__t2", sequence="t2", study_key="s1")
    >>> skipped = {}
    >>> group_studies([t1], ["t1", "t2"], skipped, [(t2, "B__9__t2")])
    []
    >>> skipped
    {'B__1': 'its t2 case B__1__t2 was dropped as a duplicate of B__9__t2 (selected: t1)'}
    """
    gone: dict[tuple[str, str], list[str]] = {}
    lost: dict[str, list[Member]] = {}  # study key -> its dropped cases
    for d, used in dropped:
        if d.study_key is not None and d.sequence is not None:
            gone.setdefault((d.study_key, d.sequence), []).append(f"{d.case_id} was dropped as a duplicate of {used}")
            lost.setdefault(d.study_key, []).append(d)
    by_key: dict[str, dict[str, list[C]]] = {}
    others: dict[str, list[C]] = {}  # study_key -> its selected cases of no channel's sequence
    for c in cases:
        if c.sequence is None:
            skipped[c.case_id] = (f"has no sequence (cases.sequence is empty), so it is none of the channels "
                                  f"{', '.join(channels)}")
            continue
        if c.sequence not in channels:
            others.setdefault(c.study_key or c.case_id, []).append(c)
            continue
        if c.study_key is None:
            skipped[c.case_id] = "has no study_key: its study's other sequences are unknown"
            continue
        by_key.setdefault(c.study_key, {}).setdefault(c.sequence, []).append(c)
    studies: list[tuple[str, tuple[C, ...]]] = []
    names: set[str] = set()
    for key, seqs in by_key.items():
        first = min((c for cs in seqs.values() for c in cs), key=lambda c: c.case_id)
        name = study_name(seqs[channels[0]][0] if channels[0] in seqs else first)
        lacking = [s for s in channels if s not in seqs]
        twice = {s: [c.case_id for c in cs] for s, cs in seqs.items() if len(cs) > 1}
        if lacking or twice:
            if name in skipped:  # another skipped study of that name: the case id is unique
                name = first.case_id
            skipped[name] = (_lacking(key, lacking, gone) + f" (selected: {', '.join(s for s in channels if s in seqs)})"
                             if lacking else "its study has several cases of one sequence: "
                             + "; ".join(f"{s}: {', '.join(ids)}" for s, ids in twice.items()))
            continue
        ref = seqs[channels[0]][0]
        if name in names:  # a name two studies would share: the reference case id is unique
            name = ref.case_id
        names.add(name)
        studies.append((name, tuple(seqs[s][0] for s in channels)))
    _no_channel(others, by_key, channels, cases, skipped, gone)
    for key, ds in lost.items():  # every selected case of the study was dropped: said too
        if key in by_key or key in others:
            continue
        head = min(ds, key=lambda c: c.case_id)
        name = study_name(head)
        skipped[head.case_id if name in skipped else name] = _lacking(key, channels, gone) + " (selected: none)"
    return sorted(studies, key=lambda s: s[1][0].case_id)


def _lacking(key: str, lacking: Sequence[str], gone: dict[tuple[str, str], list[str]]) -> str:
    """Why a study lacks the sequences ``lacking``: its case of one was dropped as a duplicate
    (``gone``: (study key, sequence) -> what became of it), or it has none."""
    said = [f"its {s} case {'; '.join(gone[key, s])}" for s in lacking if (key, s) in gone]
    none = [s for s in lacking if (key, s) not in gone]
    if none:
        said.insert(0, f"its study has no {', '.join(none)} case")
    return "; ".join(said)


def _no_channel(others: dict[str, list[C]], used: Collection[str], channels: Sequence[str], cases: Sequence[C],
                skipped: dict[str, str], gone: dict[tuple[str, str], list[str]]) -> None:
    """Name in ``skipped`` each study none of whose selected cases (``others[key]``) has a
    channel's sequence, with the sequences it has and those the selection holds — or, when its
    channel cases were dropped as duplicates (``gone``), that they were. A name another skipped
    entry holds is replaced by the first case id (unique)."""
    have = sorted({c.sequence for c in cases if c.sequence})
    for key, members in others.items():
        if key in used:
            continue
        members = sorted(members, key=lambda c: c.case_id)
        name = study_name(members[0])
        if name in skipped:
            name = members[0].case_id
        seqs = sorted({c.sequence for c in members if c.sequence})
        if any((key, s) in gone for s in channels):
            skipped[name] = _lacking(key, channels, gone) + f" (selected: only {', '.join(seqs)}, no channel)"
            continue
        skipped[name] = (
            f"none of its sequences ({', '.join(seqs)}) is among the channels {', '.join(channels)}: its "
            f"{len(members)} selected case(s) {', '.join(c.case_id for c in members)} are left out (the selection's "
            f"sequences: {', '.join(have)}; curator does not equate sequence names across datasets — select one "
            "naming, or export each dataset with its own channels)")


def label_on_other_channel(first: str | None, terms: Sequence[str], holders: Sequence[str], *, used: str,
                           option: str, studies: int = 1, because: str = "") -> str:
    """Say that the first channel's case — whose labels are ``used`` (``"exported"``, ``"read"``) —
    holds none of ``terms`` while the study's ``holders`` sequences do, and to list the first of
    them first in ``option``; ``studies`` > 1 says it of that many studies' cases at once,
    ``because`` follows the terms (why the first case holds none: its label rejected at ingest).

    >>> label_on_other_channel("flair", ["brain_tumor"], ["t1"], used="read", option="channels=", studies=2)
    'the flair cases of 2 studies (the first channel, whose labels are read) hold no brain_tumor, but their t1 cases do: list t1 first in channels= to use their labels'
    """
    one = studies == 1
    said = f"its {first} case" if one else f"the {first} cases of {studies} studies"
    return (f"{said} (the first channel, whose labels are {used}) {'holds' if one else 'hold'} no {', '.join(terms)}"
            f"{because}, but {'its' if one else 'their'} {', '.join(holders)} "
            f"{'case does' if one and len(holders) == 1 else 'cases do'}: list {holders[0]} first in {option} to "
            + ("export its labels" if used == "exported" else f"use {'its' if one else 'their'} labels"))


def study_name(ref: Member) -> str:
    """``ref``'s case id without its ``__<sequence>`` suffix (the case id when it has none)."""
    suffix = f"__{ref.sequence}"
    return ref.case_id[:-len(suffix)] if ref.sequence and ref.case_id.endswith(suffix) else ref.case_id


def grid_difference(ref: Any, other: Any, tol: float = 1e-3) -> str:
    """Why grid ``other`` is no whole-voxel shift of grid ``ref`` (affines as for :func:`voxel_shift`),
    in words: another spacing, another direction, or the same of both with an offset of a
    fraction of a voxel — what two stores of one study get when their scans have other extents
    (preprocess centres each output grid on its own input's extent: HECKTOR's CT and PET).

    >>> ref = [1.0, 0, 0, -178.96, 0, 1.0, 0, 0, 0, 0, 3.0, 94.30, 0, 0, 0, 1]
    >>> grid_difference(ref, [1.0, 0, 0, -165.26, 0, 1.0, 0, 0, 0, 0, 3.0, 95.71, 0, 0, 0, 1])
    'offset by a fraction of a voxel: (0.3, 0, -1.41) mm along the grid axes (same spacing and direction)'
    >>> grid_difference(ref, [2.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 0, 1])
    'another spacing (1×1×3 mm vs 2×2×3 mm)'
    """
    a = np.asarray(ref, dtype=np.float64).reshape(4, 4)
    b = np.asarray(other, dtype=np.float64).reshape(4, 4)
    sa, sb = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(sa, sb, rtol=tol * 0.1, atol=0):
        return (f"another spacing ({'×'.join(f'{x:.4g}' for x in sa)} mm vs "
                f"{'×'.join(f'{x:.4g}' for x in sb)} mm)")
    if not np.allclose(a[:3, :3] / sa, b[:3, :3] / sb, atol=tol * 0.1):
        return "another direction (the grids' axes point other ways)"
    m = np.linalg.inv(b) @ a
    frac = (m[:3, 3] - np.rint(m[:3, 3])) * sb  # in mm along the other grid's axes
    return ("offset by a fraction of a voxel: (" + ", ".join(f"{x + 0.0:.3g}" for x in np.round(frac, 3))
            + ") mm along the grid axes (same spacing and direction)")


def voxel_shift(ref: Any, other: Any, tol: float = 1e-3) -> tuple[int, int, int] | None:
    """The whole-voxel offset from grid ``ref`` to grid ``other`` (voxel -> mm affines: 4 x 4, or
    16 numbers row-major): reference voxel ``i`` lies where ``other``'s voxel ``i + shift`` does.
    None when the spacing or direction differ or the offset is not a whole number of voxels
    (within ``tol``)."""
    m = np.linalg.inv(np.asarray(other, dtype=np.float64).reshape(4, 4)) @ np.asarray(ref, dtype=np.float64).reshape(4, 4)
    t = np.rint(m[:3, 3])
    if not (np.allclose(m[:3, :3], np.eye(3), atol=tol * 0.1) and np.allclose(m[:3, 3], t, atol=tol)):
        return None
    return (int(t[0]), int(t[1]), int(t[2]))
