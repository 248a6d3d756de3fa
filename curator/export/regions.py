"""Requested terms one of which is part of another (BraTS' whole tumour ⊃ tumour core ⊃
enhancing tumour): a label map holds one value per voxel, so such terms cannot each be a label.

nnU-Net v2 trains on them as **regions** (its BraTS converters do): the terms are painted
containers first — values 1..n, an inner term overwriting its container — and dataset.json's
``labels`` gives each term the values making it, with ``regions_class_order`` the value each
region is painted with at inference::

    {"background": 0, "brain_tumor": [1, 2, 3], "brain_tumor_core": [2, 3],
     "enhancing_brain_tumor": [3]}, "regions_class_order": [1, 2, 3]

Terms are nested per the taxonomy's ``part_of`` (:func:`curator.release.training.with_parts`);
terms neither of which is part of the other are taken to be disjoint, as in any export. A term
inside two requested terms neither of which is inside the other has no painting order: refused
(:func:`nesting_error`), as is any nesting for a MONAI label map, which has no regions.

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
    order = sorted(terms, key=lambda t: (len(outer[t]), list(terms).index(t)))  # containers first
    value = {t: i for i, t in enumerate(order, start=1)}
    return Regions(order, {t: sorted([value[t], *(value[d] for d in terms if t in outer[d])]) for t in order})


def pairs(tax: Taxonomy, terms: Sequence[str]) -> list[tuple[str, str]]:
    """(container, inner) for each requested term inside another."""
    return [(a, t) for t, those in containers(tax, terms).items() for a in those]


def disjoint_pieces(tax: Taxonomy, terms: Sequence[str]) -> list[str]:
    """Mutually exclusive terms making up the requested ones: each term holding another requested
    term is split along the taxonomy's (first) partition, down to pieces holding none — BraTS'
    necrotic core, edema and enhancing tumour for its whole tumour, tumour core and enhancing tumour."""
    from curator.release.training import with_parts

    def pieces(t: str) -> list[str]:
        term = tax.get(t)
        inner = [d for d in terms if d != t and d in with_parts(tax, t)]
        if not inner or term is None or not term.partitions:
            return [t]
        return [p for m in term.partitions[0] for p in pieces(m)]

    outer = containers(tax, terms)
    out: list[str] = []
    for t in terms:
        if not outer[t]:  # the outermost terms, split down to their pieces
            out += [p for p in pieces(t) if p not in out]
    return out


def nesting_error(tax: Taxonomy, terms: Sequence[str], why: str, what: str) -> ConfigError:
    """The refusal of nested ``terms`` by ``what`` (an export), suggesting disjoint terms."""
    pieces = disjoint_pieces(tax, terms)
    return ConfigError("config_error", f"the terms {', '.join(terms)} overlap in {what}: {why}",
                       remedy=f"request mutually exclusive terms, e.g. --terms {','.join(pieces)}, and build the "
                              "larger regions as their unions when training")


def monai_error(tax: Taxonomy, terms: Sequence[str]) -> ConfigError | None:
    """The refusal of nested ``terms`` for a MONAI label map (None when none is inside another)."""
    nested = pairs(tax, terms)
    if not nested:
        return None
    said = "; ".join(f"{t} is part of {a}" for a, t in nested)
    err = nesting_error(tax, terms, f"{said}. A MONAI label map holds one term per voxel, so the larger term "
                        "would keep only the voxels outside the smaller one", "a MONAI export")
    return ConfigError(err.kind, err.detail, remedy=f"{err.remedy} (MONAI's ConvertToMultiChannelBasedOnBratsClassesd "
                       "does this for BraTS), or use `curator export nnunet`, which writes nested terms as nnU-Net "
                       "region-based labels")
