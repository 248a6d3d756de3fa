"""``PatchDataset(transform=...)``: augmentation on the item dict, seeded per item."""

from __future__ import annotations

import pickle

import pytest
import torch
from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandRotate90d
from torch.utils.data import DataLoader

from curator.errors import ReleaseError
from curator.preprocess.terms import term_id
from curator.torch import PatchDataset
from tests.preprocess.conftest import Tiny


def _ds(tiny: Tiny, **kw: object) -> PatchDataset:
    return PatchDataset(tiny.release, terms=[term_id("kidney"), term_id("liver")],  # type: ignore[arg-type]
                        patch_size=(24, 24, 8), samples_per_epoch=16, seed=5, **kw)


def _augment() -> Compose:
    keys = ["image", "masks"]
    return Compose([RandFlipd(keys=keys, prob=0.5, spatial_axis=0), RandRotate90d(keys=keys, prob=0.5,
                                                                                  spatial_axes=(0, 1))])


def test_image_and_masks_move_together_and_the_patch_is_unchanged(tiny: Tiny) -> None:
    plain, aug = _ds(tiny), _ds(tiny, transform=_augment())
    kinds = set()
    for i in range(len(plain)):
        p, a = plain[i], aug[i]
        assert p["case_id"] == a["case_id"] and torch.equal(p["start"], a["start"])  # same draws before the transform
        image, masks = torch.as_tensor(a["image"]), torch.as_tensor(a["masks"])
        # the one flip/rotation that maps the plain image onto the augmented one maps its masks too
        found = None
        for flip in (False, True):
            for k in range(4):
                im, ms = p["image"], p["masks"]
                if flip:
                    im, ms = im.flip(1), ms.flip(1)
                im, ms = torch.rot90(im, k, (1, 2)), torch.rot90(ms, k, (1, 2))
                if im.shape == image.shape and torch.equal(im, image) and torch.equal(ms, masks):
                    found = (flip, k)
        assert found is not None, i
        kinds.add(found)
        assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) <= {0, 1}
    assert len(kinds) > 1  # not the identity every time


def test_augmentation_is_the_same_for_an_item_in_any_worker(tiny: Tiny) -> None:
    aug = Compose([*_augment().transforms, RandGaussianNoised(keys=["image"], prob=1.0, std=0.1)])
    ds = _ds(tiny, transform=aug)
    first = [ds[i]["image"] for i in range(len(ds))]
    assert all(torch.equal(torch.as_tensor(x), torch.as_tensor(ds[i]["image"])) for i, x in enumerate(first))
    assert not torch.equal(torch.as_tensor(first[0]), torch.as_tensor(_ds(tiny)[0]["image"]))  # noise was added
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batched = torch.cat([torch.as_tensor(b["image"]) for b in loader])
    assert torch.equal(batched, torch.stack([torch.as_tensor(x) for x in first]))
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(torch.as_tensor(clone[3]["image"]), torch.as_tensor(first[3]))
    ds.set_epoch(1)  # another epoch, other draws
    assert not all(torch.equal(torch.as_tensor(ds[i]["image"]), torch.as_tensor(first[i])) for i in range(len(ds)))


def test_a_plain_function_is_called_and_a_non_callable_refused(tiny: Tiny) -> None:
    ds = _ds(tiny, transform=_add_one)
    assert torch.equal(ds[2]["image"], _ds(tiny)[2]["image"] + 1)
    with pytest.raises(ReleaseError, match="not callable"):
        _ds(tiny, transform="flip")


def _add_one(item: dict) -> dict:  # type: ignore[type-arg]
    return {**item, "image": item["image"] + 1}
