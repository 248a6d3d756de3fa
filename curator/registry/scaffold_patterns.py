"""Image patterns for :mod:`curator.registry.scaffold`: image paths with one token skeleton
are one :class:`Group`, whose changing words become placeholders (``{case}``, ``{sequence}``,
others named after the word before them); patterns differing in one sequence word are joined.

>>> [(g.template, g.sequences) for g in group_images(
...     [f"BraTS-GLI-{c}-000/BraTS-GLI-{c}-000-{s}.nii.gz" for c in ("00000", "00002") for s in ("t1n", "t2w")])]
[('BraTS-GLI-{case}-000/BraTS-GLI-{case}-000-{sequence}.nii.gz', ['t1n', 't2w'])]
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from curator.registry.scaffold_files import _is_num, _tokens


@dataclass
class Group:
    """Paths with one token skeleton: the same separators, numbers where numbers are."""

    paths: list[str]
    template: str = ""
    values: list[dict[str, str]] = field(default_factory=list)  # per path: placeholder -> its text
    sequences: list[str] = field(default_factory=list)
    only: dict[str, list[str]] = field(default_factory=dict)  # placeholder -> the values its cases take
    left_out: list[str] = field(default_factory=list)  # that placeholder's values no label names


def _skeleton(path: str) -> tuple[Any, ...]:
    """Separators and folder words exact; a file name's words and every number free."""
    toks = _tokens(path)
    last = len(path) - len(path.rsplit("/", 1)[-1])
    out, pos = [], 0
    for t in toks:
        if _is_num(t):
            out.append("#")
        elif t.isalpha():
            out.append("a" if pos >= last else t)
        else:
            out.append(t)
        pos += len(t)
    return tuple(out)


def group_images(paths: list[str]) -> list[Group]:
    """Images with one skeleton as one pattern each (:func:`_template`); a pattern that is a
    sequence pattern with one more sequence word (BraTS' ``-flair`` beside ``-t1n``) joins it."""
    by: dict[tuple[Any, ...], list[str]] = {}
    for p in paths:
        by.setdefault(_skeleton(p), []).append(p)
    groups = _merge_word_variants([_template(Group(ps)) for ps in by.values()])
    for g in [g for g in groups if g.sequences]:
        head, tail = g.template.split("{sequence}", 1)
        for other in [o for o in groups if o is not g and not o.sequences]:
            t = other.template
            word = t[len(head):len(t) - len(tail)] if t.startswith(head) and t.endswith(tail) else ""
            if word.isalnum():
                g.paths += other.paths
                g.values += [{**v, "sequence": word} for v in other.values]
                g.sequences = sorted({*g.sequences, word})
                groups.remove(other)
    return groups


def _merge_word_variants(groups: list[Group]) -> list[Group]:
    """Patterns differing in one word of the file name, each holding most of the same cases, as
    one ``{sequence}`` pattern: BIDS' ``sub-{case}_T1w`` and ``sub-{case}_FLAIR`` in one folder."""
    by_key: dict[tuple[str, str], list[tuple[Group, str]]] = {}
    for g in groups:
        if g.sequences:
            continue
        at = g.template.rfind("/") + 1
        for m in re.finditer(r"[A-Za-z0-9]+", g.template[at:]):
            a, b = at + m.start(), at + m.end()
            if g.template[:a].count("{") == g.template[:a].count("}") and m.group(0).lower() not in ("nii", "gz"):
                by_key.setdefault((g.template[:a], g.template[b:]), []).append((g, m.group(0)))
    merged: set[int] = set()
    out = [g for g in groups]
    for (head, tail), items in by_key.items():
        items = [(g, w) for g, w in items if id(g) not in merged]
        if not 2 <= len(items) <= 8 or len({re.sub(r"\d+", "", w) for _, w in items}) < len(items):
            continue
        sets = [{_case_key(v) for v in g.values} for g, _ in items]
        if len(set.intersection(*sets)) * 2 < len(set.union(*sets)):
            continue  # other cases, not other sequences of the same ones
        joined = Group([p for g, _ in items for p in g.paths], head + "{sequence}" + tail,
                       [{**v, "sequence": w} for g, w in items for v in g.values], sorted(w for _, w in items))
        merged.update(id(g) for g, _ in items)
        out = [g for g in out if id(g) not in merged] + [joined]
    return out


def _template(g: Group) -> Group:
    """``g``'s pattern: its changing words as placeholders (:mod:`curator.registry.scaffold`'s docstring)."""
    rows = [_tokens(p) for p in g.paths]
    n = len(rows[0])
    varies = [len({r[i] for r in rows}) > 1 for i in range(n)]
    words: list[tuple[int, int]] = []  # alphanumeric runs of tokens [lo, hi)
    i = 0
    while i < n:
        if rows[0][i].isalnum():
            j = i
            while j < n and rows[0][j].isalnum():
                j += 1
            words.append((i, j))
            i = j
        else:
            i += 1
    moving = [w for w in words if any(varies[w[0]:w[1]])]
    seq = _sequence_word(moving, rows)
    spans: list[tuple[int, int]] = []  # token ranges of the other placeholders
    for lo, hi in (w for w in moving if w != seq):
        first = next(k for k in range(lo, hi) if varies[k])
        last = max(k for k in range(lo, hi) if varies[k]) + 1
        gap = "".join(rows[0][spans[-1][1]:first]) if spans else "/"
        if spans and first == lo and varies[spans[-1][1] - 1] and spans[-1][1] == _word_end(words, spans[-1][1]) \
                and "/" not in gap and not any(c.isalnum() for c in gap):
            spans[-1] = (spans[-1][0], last)  # BraTS' 00000-000, HECKTOR's CHUM-001: one case id
        else:
            spans.append((first, last))
    if not spans:  # one file, or the case's files differ only in sequence: pick the id-like number
        spans = _pick_case(rows[0], seq)
    texts = [["".join(r[a:b]) for a, b in spans] for r in rows]
    sig: dict[tuple[str, ...], int] = {}
    sigs = [sig.setdefault(tuple(t[k] for t in texts), len(sig)) for k in range(len(spans))]
    names: dict[int, str] = {}
    name_at = max((k for k, t in enumerate(rows[0]) if "/" in t), default=-1)
    in_name = {s for (a, _), s in zip(spans, sigs, strict=True) if a > name_at}
    if sigs:  # the most values; among equals one in the file name (Case00 in TrainingData_Part1/), then the first
        names[max(set(sigs), key=lambda s: (len({t[sigs.index(s)] for t in texts}), s in in_name,
                                            -sigs.index(s)))] = "case"
    for k, s in enumerate(sigs):
        if s not in names:
            before = next((rows[0][j].lower() for j in range(spans[k][0] - 1, -1, -1) if rows[0][j].isalpha()), "")
            names[s] = before if before.isidentifier() and before not in (*names.values(), "sequence") \
                else f"part{len(names)}"
    cuts = sorted([(a, b, names[s]) for (a, b), s in zip(spans, sigs, strict=True)]
                  + ([(seq[0], seq[1], "sequence")] if seq else []))
    out, pos = [], 0
    for a, b, name in cuts:
        out.append("".join(rows[0][pos:a]) + "{" + name + "}")
        pos = b
    out.append("".join(rows[0][pos:]))
    g.template = "".join(out)
    g.values = [{name: "".join(r[a:b]) for a, b, name in cuts} for r in rows]
    g.sequences = sorted({v["sequence"] for v in g.values if "sequence" in v})
    return g


def _pick_case(toks: list[str], seq: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Token ranges of the case id in one path: a number it repeats (``patient001/patient001_4d``)
    before one in the file name before one in a folder (``s0002/ct.nii.gz``), the last first; not
    nnU-Net's channel suffix ``_0000`` nor the sequence."""
    name_at = max((k for k, t in enumerate(toks) if "/" in t), default=-1)
    cand = [k for k, t in enumerate(toks) if _is_num(t) and not (seq and seq[0] <= k < seq[1])]
    channel = [k for k in cand if re.fullmatch(r"000\d", toks[k]) and toks[k - 1] == "_" and k + 1 < len(toks)
               and toks[k + 1] == "." and any(name_at < j < k for j in cand)]
    weighted = [k for k in cand if re.fullmatch(r"[a-z]{0,2}T", toks[k - 1])]  # T1, ceT1, hrT2: a weighting
    cand = [k for k in cand if k not in channel and k not in weighted] or [k for k in cand if k not in channel]
    if not cand:
        return [(k, k + 1) for k in range(name_at + 1, len(toks)) if toks[k].isalnum()][:1]
    best = max(cand, key=lambda k: (sum(toks[j] == toks[k] for j in cand) > 1, k > name_at, k))
    lo = hi = best  # with the numbers joined to it by '-' or '.': BraTS' 00001-000, a DICOM UID
    while lo >= 2 and toks[lo - 1] in ("-", ".") and lo - 2 in cand:
        lo -= 2
    while hi + 2 < len(toks) and toks[hi + 1] in ("-", ".") and hi + 2 in cand:
        hi += 2
    width = hi - lo + 1
    return [(k, k + width) for k in cand if toks[k:k + width] == toks[lo:hi + 1]]


def _word_end(words: list[tuple[int, int]], k: int) -> int:
    return next((hi for lo, hi in words if lo < k <= hi), k)


def _sequence_word(moving: list[tuple[int, int]], rows: list[list[str]]) -> tuple[int, int] | None:
    """The changing word that names a sequence: a few values (at most 8), each case having
    several of them (``t1n``/``t1c``/``t2w``/``t2f``; ``CT``/``PT``; ``0000``/``0001``)."""
    name_at = max((k for k, t in enumerate(rows[0]) if "/" in t), default=-1)
    last = [w for w in moving if w[0] > name_at][-1:] or moving[-1:]
    for w in last:  # the file name's last changing word: a sequence suffix, not a site prefix (CHUM-001)
        vals = {"".join(r[w[0]:w[1]]) for r in rows}
        others = Counter(tuple("".join(r[a:b]) for a, b in moving if (a, b) != w) for r in rows)
        wordy = len({re.sub(r"\d+", "", v) for v in vals}) == len(vals) or all(re.fullmatch(r"000\d", v) for v in vals)
        if 2 <= len(vals) <= 8 and wordy and min(others.values()) >= 2:
            return w
    return None


def _case_key(vals: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in vals.items() if k != "sequence"))


def _id_like(g: Group) -> Group:
    """``g`` with ``{case}`` holding the dataset's own id: the constant words before it in its
    folder or file name (``Case{case}.mhd`` → ``{case}.mhd`` with ``Case00``; ``case_{case}/`` →
    ``case_01``) and a constant ``-NNN`` after it (BraTS' timepoint ``-000`` where every case has
    the same one); ``g`` itself when the occurrences of ``{case}`` differ in them."""
    t = g.template
    pres: set[str] = set()
    posts: set[str] = set()
    for m in re.finditer(r"\{case\}", t):
        pres.add(t[t.rfind("/", 0, m.start()) + 1:m.start()])
        after = re.match(r"(?:-\d+)+(?!\d)", t[m.end():])
        posts.add(after.group(0) if after else "")
    if len(pres) != 1 or len(posts) != 1:
        return g
    pre, post = pres.pop(), posts.pop()
    if any(c in pre for c in "{}*"):
        pre = ""
    if not pre and not post:
        return g
    return Group(g.paths, t.replace(pre + "{case}" + post, "{case}"),
                 [{**v, "case": pre + v["case"] + post} if "case" in v else v for v in g.values],
                 g.sequences, g.only, g.left_out)
