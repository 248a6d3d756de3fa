"""``pad_collate``: a batch of items of different sizes (``CaseDataset``'s whole cases).

PyTorch's default collate stacks tensors, so whole cases of different grids fail ("stack
expects each tensor to be equal size"), and it turns each item's per-term lists (``prompts``,
``layers``) into T tuples of B. ``DataLoader(ds, batch_size=2, collate_fn=pad_collate)`` pads
instead and keeps the lists per item:

>>> import torch
>>> a = {"image": torch.zeros(1, 2, 2, 2), "masks": torch.ones(1, 2, 2, 2, dtype=torch.uint8),
...      "prompts": ["(ct) liver"], "case_id": "A"}
>>> b = {"image": torch.ones(1, 3, 2, 1), "masks": torch.ones(1, 3, 2, 1, dtype=torch.uint8),
...      "prompts": ["(ct) liver"], "case_id": "B"}
>>> batch = pad_collate([a, b])
>>> tuple(batch["image"].shape), batch["size"].tolist(), batch["prompts"], batch["case_id"]
((2, 1, 3, 2, 2), [[2, 2, 2], [3, 2, 1]], [['(ct) liver'], ['(ct) liver']], ['A', 'B'])
>>> int(batch["masks"][0].sum()), int(batch["masks"][1].sum())  # the padding is background
(8, 6)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate


def pad_collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The batch of ``items`` (dicts of :class:`curator.torch.PatchDataset` or
    :class:`curator.torch.CaseDataset`, transformed or not), for ``DataLoader(collate_fn=...)``:

    * tensors whose spatial size (the last three axes) differs between the items — ``image`` and
      ``masks`` of whole cases — are padded at the high end of each axis to the largest item's size,
      then stacked: the masks (and other tensors) with 0, background; each image channel with
      its own lowest value, what air or background is in it (for a normalised image the lower
      bound of its window, exactly what the loader pads a patch with);
    * ``size`` (added when ``image`` is there): int64 ``(B, 3)``, each item's own spatial size, to crop
      a prediction back (``pred[b, :, :x, :y, :z]``);
    * lists of strings (``prompts``, ``layers``, ``channel_ids``) stay one list per item:
      ``batch["prompts"][b][t]``, in the order of ``masks``;
    * everything else as PyTorch's default collate makes it (``present``, ``start``, ``affine``,
      ``spacing`` stacked; ``case_id`` a list of B strings).
    """
    if not items:
        return {}
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if all(isinstance(v, list | tuple) and all(isinstance(x, str) for x in v) for v in values):
            out[key] = [list(v) for v in values]
        elif all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) > 1:
            out[key] = _padded(key, values)
        else:
            out[key] = default_collate(values)
    if "image" in out and "size" not in out:
        out["size"] = torch.tensor([list(it["image"].shape[-3:]) for it in items], dtype=torch.int64)
    return out


def _padded(key: str, values: list[torch.Tensor]) -> torch.Tensor:
    lead = {tuple(v.shape[:-3]) for v in values}
    if len(lead) > 1 or min(v.dim() for v in values) < 3:
        raise ValueError(f"pad_collate: the items' {key!r} differ in more than their last three (spatial) axes: "
                         f"{[tuple(v.shape) for v in values]}")
    size = [max(v.shape[-3 + ax] for v in values) for ax in range(3)]
    out = []
    for v in values:
        if key == "image" and v.dim() > 3 and v.numel():  # each channel with its own lowest value
            fill = v.flatten(-3).amin(-1)[..., None, None, None]
            grown = fill.expand(*v.shape[:-3], *size).clone()
        else:
            grown = v.new_zeros((*v.shape[:-3], *size))
        grown[..., :v.shape[-3], :v.shape[-2], :v.shape[-1]] = v
        out.append(grown)
    return torch.stack(out)
