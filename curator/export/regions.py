"""Requested terms one of which is part of another: MSD Task03 / LiTS' ``liver,liver_tumor`` or
BraTS' whole tumour ⊃ tumour core ⊃ enhancing tumour. A label map holds one value per voxel, so
by default they are painted containers first (:func:`painting_order`), an inner term over its
container: label 1 "liver" is the liver outside the tumour, as MSD's and LiTS' own labels are, and
the export says so in a note (:func:`nesting_note`).

With ``export_nnunet(..., regions=True)`` (``--regions``) nnU-Net v2 trains on them as **regions**
instead (its BraTS converters do): painted the same way, values 1..n, but dataset.json's
``labels`` gives each term the values making it, with ``regions_class_order`` the value each
region is painted with at inference (region-based training, sigmoid outputs)::

    {"background": 0, "brain_tumor": [1, 2, 3], "brain_tumor_core": [2, 3],
     "enhancing_brain_tumor": [3]}, "regions_class_order": [1, 2, 3]

Terms are nested per the taxonomy's ``part_of`` (:func:`curator.release.training.with_parts`);
terms neither of which is part of the other are taken to be disjoint, as in any export. As
regions, a term inside two requested terms neither of which is inside the other has no painting
order: refused (:func:`nesting_error`).

>>> from curator.taxonomy import load_taxonomy
>>> r = regions(load_taxonomy(), ["enhancing_brain_tumor", "brain_tumor", "brain_tumor_core"])
>>> r.order
['brain_tumor', 'brain_tumor_core', 'enhancing_brain_tumor']
>>> r.labels
{'brain_tumor': [1, 2, 3], 'brain_tumor_core': [2, 3], 'enhancing_brain_tumor': [3]}
>>> regions(load_taxonomy(), ["brain_edema", "enhancing_brain_tumor"]) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curator.errors import ConfigError

if TYPE_CHECKING:
    from curator.taxonomy.model import Taxonomy


@dataclass(frozen=True)
class Regions:
    """Nested terms as nnU-Net regions: ``order[i]`` is painted with value ``i + 1``; term ``t``'s
    region is the values ``labels[t]`` (its own and those of the requested terms inside it)."""

    order: list[str]
    labels: dict[str, list[int]]

    @property
    def class_order(self) -> list[int]:
        """dataset.json's ``regions_class_order``: each region's own value, in ``labels``' order."""
        return [self.order.index(t) + 1 for t in self.labels]


def containers(tax: Taxonomy, terms: Sequence[str]) -> dict[str, list[str]]:
    """Each of ``terms`` -> the other requested terms it is part of (per the taxonomy)."""
    from curator.release.training import with_parts

    inside = {t: set(with_parts(tax, t)) - {t} for t in terms}
    return {t: [a for a in terms if t in inside[a]] for t in terms}


def regions(tax: Taxonomy, terms: Sequence[str]) -> Regions | None:
    """``terms`` as nnU-Net regions when some are part of others (None when none is); a term
    inside two requested terms that are not nested themselves is refused (:func:`nesting_error`)."""
    outer = containers(tax, terms)
    if not any(outer.values()):
        return None
    for t, those in outer.items():
        loose = [(a, b) for i, a in enumerate(those) for b in those[i + 1:] if a not in outer[b] and b not in outer[a]]
        if loose:
            a, b = loose[0]
            raise nesting_error(tax, terms, f"{t} is part of both {a} and {b}, neither of which is part of the "
                                "other, so no painting order gives each its voxels", "the nnU-Net export")
    order = painting_order(tax, terms)
    value = {t: i for i, t in enumerate(order, start=1)}
    return Regions(order, {t: sorted([value[t], *(value[d] for d in terms if t in outer[d])]) for t in order})


def painting_order(tax: Taxonomy, terms: Sequence[str]) -> list[str]:
    """``terms`` with containers first (otherwise as given), so an inner term is painted over its
    container: ``liver,liver_tumor`` is MSD Task03's 1 = liver outside the tumour, 2 = tumour."""
    outer = containers(tax, terms)
    return sorted(terms, key=lambda t: (len(outer[t]), list(terms).index(t)))


def nesting_note(tax: Taxonomy, terms: Sequence[str], instead: str) -> str | None:
    """Say which labels of the painted ``terms`` (in :func:`painting_order`) hold only their voxels
    outside the requested terms inside them (None when none is inside another); ``instead``
    ends the note (what else the export can do)."""
    order = painting_order(tax, terms)
    outer = containers(tax, order)
    said = [f"label {i} {t!r} holds the {t} voxels outside {', '.join(d for d in order if t in outer[d])}"
            for i, t in enumerate(order, start=1) if any(t in outer[d] for d in order)]
    if not said:
        return None
    return f"{'; '.join(said)} (an inner term is painted over its container); {instead}"


def disjoint_pieces(tax: Taxonomy, terms: Sequence[str]) -> list[str]:
    """Mutually exclusive terms making up the requested ones: each term holding another requested
    term is split along a partition of the taxonomy whose members hold those terms, down to pieces
    holding none — BraTS' necrotic core, edema and enhancing tumour for its whole tumour, tumour
    core and enhancing tumour. Empty when a container has no such partition (liver ⊃ liver_tumor:
    its lobes do not name the tumour), so nothing is suggested that drops a requested term.

    >>> from curator.taxonomy import load_taxonomy
    >>> disjoint_pieces(load_taxonomy(), ["liver", "liver_tumor"])
    []
    """
    from curator.release.training import with_parts

    def pieces(t: str) -> list[str] | None:
        inner = [d for d in terms if d != t and d in with_parts(tax, t)]
        if not inner:
            return [t]
        term = tax.get(t)
        for part in term.partitions if term is not None else ():
            if all(any(d in with_parts(tax, m) for m in part) for d in inner):
                split = [pieces(m) for m in part]
                if all(p is not None for p in split):
                    return [x for p in split if p is not None for x in p]
        return None

    outer = containers(tax, terms)
    out: list[str] = []
    for t in terms:
        if not outer[t]:  # the outermost terms, split down to their pieces
            got = pieces(t)
            if got is None:
                return []
            out += [p for p in got if p not in out]
    return out


def nesting_error(tax: Taxonomy, terms: Sequence[str], why: str, what: str) -> ConfigError:
    """The refusal of nested ``terms`` by ``what`` (an export), suggesting disjoint terms when the
    taxonomy splits the containers into pieces holding every requested term."""
    pieces = disjoint_pieces(tax, terms)
    return ConfigError("config_error", f"the terms {', '.join(terms)} overlap in {what}: {why}",
                       remedy=(f"request mutually exclusive terms, e.g. --terms {','.join(pieces)}, and build the "
                               "larger regions as their unions when training" if pieces else
                               "leave out --regions (each term is then one label, an inner term painted over its "
                               "container), or request terms no one of which is inside two unnested others"))
