"""Text normalisation for term look-up: case, punctuation, word order, abbreviations.

Two keys are built for every name a term is known by (preferred name, synonyms, abbreviations,
its id): the *exact* key (lower case, punctuation removed, a few word substitutions) and the
*bag* key (the exact key's words singularised, stop words dropped, sorted), so "kidney_left",
"Left Kidney", "rt kidney" and "kidney, right" all find their term.

>>> exact_key("(ct) Lumbar vertebrae 3 (L3)")
'lumbar vertebrae 3 l3'
>>> bag_key("kidney_left") == bag_key("Left kidney")
True
>>> exact_key("rt kidney")
'right kidney'
>>> exact_key("OpticChiasm")
'optic chiasm'
"""

from __future__ import annotations

import re

_PREFIX = re.compile(r"^\s*(?:\(\s*(?:ct|mr|mri|pet)\s*\)\s*|(?:ct|mr|mri|pet)_)", re.IGNORECASE)
_SPLIT = re.compile(r"[^0-9a-z]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")  # "OpticChiasm" -> "Optic Chiasm"
# whole-word substitutions applied to every key
_WORDS = {"rt": "right", "lt": "left", "lft": "left", "rght": "right", "oesophagus": "esophagus",
          "tumour": "tumor", "tumours": "tumors", "haemorrhage": "hemorrhage", "oedema": "edema",
          "grey": "gray", "coeliac": "celiac", "ischaemic": "ischemic"}
_ORDINALS = {"first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6",
             "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10", "eleventh": "11", "twelfth": "12",
             "thirteenth": "13"}
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_IRREGULAR = {"vertebrae": "vertebra", "atria": "atrium", "bronchi": "bronchus", "hippocampi": "hippocampus",
              "thalami": "thalamus", "femora": "femur", "amygdalae": "amygdala", "cochleae": "cochlea",
              "scapulae": "scapula", "humeri": "humerus", "mucosae": "mucosa", "emboli": "embolus",
              "arteries": "artery", "cavities": "cavity", "ribs": "rib"}
_STOP = {"of", "the"}
_SIDE_LETTERS = {"l": "left", "r": "right"}


def strip_prefix(name: str) -> str:
    """Drop a SAT-style modality prefix: ``"(ct) liver"`` / ``"mri_liver"`` -> ``"liver"``."""
    return _PREFIX.sub("", name, count=1)


def words(name: str, camel: bool = True) -> list[str]:
    """Lower-case words of ``name`` after prefix removal and word substitutions; ``camel`` splits
    CamelCase words first (``OpticChiasm`` -> optic chiasm)."""
    out = []
    text = strip_prefix(name)
    for w in _SPLIT.split((_CAMEL.sub(" ", text) if camel else text).lower()):
        if not w:
            continue
        w = _WORDS.get(w, w)
        m = _ORDINAL_SUFFIX.match(w)
        out.append(m.group(1) if m else _ORDINALS.get(w, w))
    return out


def exact_key(name: str, camel: bool = True) -> str:
    """Case- and punctuation-insensitive key; word order still matters. A term's names are also
    indexed with ``camel=False``, so a mixed-case abbreviation (``ccRCC``, ``eCSF``) is found
    however it is cased (``CCRCC``, ``ccrcc``), not only as written.

    >>> exact_key("ccRCC"), exact_key("ccRCC", camel=False), exact_key("CCRCC")
    ('cc rcc', 'ccrcc', 'ccrcc')
    """
    return " ".join(words(name, camel))


def singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def side_word(word: str) -> str:
    """A single ``l``/``r`` letter read as its side (``left``/``right``); any other word unchanged.
    The resolver's last fallback and the taxonomy's laterality check read sides through this."""
    return _SIDE_LETTERS.get(word, word)


def sides_said(name: str) -> set[str]:
    """The sides a name says, as the resolver reads them: the words left/right (after "rt"/"lt"
    substitution) and single ``l``/``r`` letters.

    >>> sorted(sides_said("Kidney_R")), sorted(sides_said("rt kidney")), sorted(sides_said("L3"))
    (['right'], ['right'], [])
    """
    return {side_word(w) for w in words(name)} & {"left", "right"}


def bag_key(name: str, expand_sides: bool = False) -> str:
    """Word-order-, plural- and stop-word-insensitive key.

    ``expand_sides`` also reads the single letters ``l``/``r`` as left/right (a fallback for
    names such as ``"Parotid_L"``; an abbreviated structure, ``"OpticNrv_L"``, needs its own synonym).
    """
    ws = [singular(w) for w in words(name) if w not in _STOP]
    if expand_sides:
        ws = [side_word(w) for w in ws]
    return " ".join(sorted(ws))
