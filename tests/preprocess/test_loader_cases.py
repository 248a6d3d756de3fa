"""``CaseDataset``: whole cases, one item per case, for validation and testing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from curator.errors import ReleaseError
from curator.preprocess.intensity import normalise
from curator.preprocess.terms import term_id
from curator.store import CaseStore
from curator.torch import CaseDataset, PatchDataset
from tests.preprocess.conftest import MultiSeq, Tiny

TERMS = [term_id("kidney"), term_id("liver")]
MR_TERMS = [term_id("kidney"), term_id("kidney tumor")]


def test_items_are_whole_stores_in_case_order(tiny: Tiny) -> None:
    ds = CaseDataset(tiny.release, terms=TERMS, split=None)
    ids = [c["case_id"] for c in ds.cases]
    assert ids == sorted(ids) and len(ds) == len(ids) == 5
    for i in range(len(ds)):
        it = ds[i]
        assert it["case_id"] == ids[i]
        s = CaseStore(tiny.release / "stores" / f"{ids[i]}.zarr")
        shape = s.geometry.shape
        assert it["image"].shape == (1, *shape) and it["masks"].shape == (2, *shape)
        assert np.allclose(it["image"][0].numpy(), normalise(s.read("image"), s.attrs["normalisation"]))
        for k, t in enumerate(TERMS):  # kidney is the union of left and right in the per-structure cases
            assert bool(it["present"][k]) == (t in s.terms() or (t == TERMS[0] and "kidney_left" in s.terms()))
            if it["present"][k]:
                assert np.array_equal(it["masks"][k].numpy().astype(bool), s.mask(t))
        assert np.array_equal(it["affine"].numpy(), s.geometry.matrix) and it["affine"].dtype == torch.float64
        assert torch.allclose(it["spacing"], torch.tensor(s.geometry.spacing, dtype=torch.float64))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_a_patch_at_the_origin_of_the_whole_grid_is_the_case(tiny: Tiny) -> None:
    """The two datasets build items with the same code: a whole-grid patch at 0 equals the case."""
    cases = CaseDataset(tiny.release, terms=TERMS, split=None)
    it = cases[2]
    with pytest.warns(UserWarning, match="no selected case holds"):  # one case: not every term
        patch = PatchDataset(tiny.release, terms=TERMS, split=None, patch_size=tuple(it["image"].shape[1:]),
                             where=f"case_id = '{it['case_id']}'", samples_per_epoch=1)[0]
    assert patch["start"].tolist() == [0, 0, 0]
    assert torch.equal(patch["image"], it["image"]) and torch.equal(patch["masks"], it["masks"])


def test_the_default_split_is_val_and_a_loader_keeps_the_order(tiny: Tiny, tmp_path: Path) -> None:
    import shutil

    import pyarrow.parquet as pq

    from curator.schema import to_arrow
    from curator.testing.releases import reseal

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    with pytest.raises(ReleaseError):  # every case of the tiny release trains
        CaseDataset(rel, terms=TERMS)
    val = ["TinyKits__case_00002", "TinyTotalSeg__s0000"]
    splits = pq.read_table(rel / "splits.parquet").to_pylist()
    for r in splits:
        r["split"] = "val" if r["case_id"] in val else r["split"]
    pq.write_table(to_arrow("splits", splits), rel / "splits.parquet")
    reseal(rel)
    ds = CaseDataset(rel, terms=TERMS)
    assert [c["case_id"] for c in ds.cases] == val
    assert [b["case_id"][0] for b in DataLoader(ds, batch_size=1, num_workers=2)] == val
    assert len(CaseDataset(rel, terms=TERMS, split="train")) == 3


def test_channels_stack_a_study_whole(multiseq: MultiSeq) -> None:
    ds = CaseDataset(multiseq.release, terms=MR_TERMS, split=None, channels=["t1c", "t2f"])
    assert len(ds) == len(ds.cases) > 0
    for i in range(len(ds)):
        it = ds[i]
        ref, other = it["channel_ids"]
        s = CaseStore(multiseq.release / "stores" / f"{ref}.zarr")
        assert it["image"].shape == (2, *s.geometry.shape)
        assert np.allclose(it["image"][0].numpy(), normalise(s.read("image"), s.attrs["normalisation"]))
        # the other sequence: its own store's values where the two grids overlap (whole-voxel shift)
        o = CaseStore(multiseq.release / "stores" / f"{other}.zarr")
        shift = np.rint(np.linalg.solve(o.geometry.matrix, s.geometry.matrix)[:3, 3]).astype(int)
        box = tuple(slice(max(0, -d), min(n, m - d)) for d, n, m in zip(shift, s.geometry.shape, o.geometry.shape))
        src = tuple(slice(b.start + d, b.stop + d) for b, d in zip(box, shift))
        assert np.allclose(it["image"][1].numpy()[box], normalise(o.read("image", src), o.attrs["normalisation"]))


def test_pad_collate_batches_whole_cases_of_different_sizes(tiny: Tiny) -> None:
    """batch_size=2 over CaseDataset failed in torch's stack ("expects each tensor to be equal
    size"), and the default collate hands prompts out as T tuples of B."""
    from curator.torch import pad_collate

    ds = CaseDataset(tiny.release, terms=TERMS, split=None)
    items = [ds[i] for i in range(len(ds))]
    assert len({tuple(it["image"].shape) for it in items}) > 1  # the tiny cases' grids differ
    with pytest.raises(RuntimeError, match="equal size"):
        next(iter(DataLoader(ds, batch_size=len(ds))))
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=pad_collate))
    assert [len(b["case_id"]) for b in batches] == [3, 2]
    got = 0
    for batch in batches:
        size = [max(s) for s in zip(*(batch["size"].tolist()))]
        assert tuple(batch["image"].shape[2:]) == tuple(batch["masks"].shape[2:]) == tuple(size)
        for b, cid in enumerate(batch["case_id"]):
            it = items[[i["case_id"] for i in items].index(cid)]
            x, y, z = batch["size"][b].tolist()
            assert (x, y, z) == tuple(it["image"].shape[1:])
            assert torch.equal(batch["image"][b, :, :x, :y, :z], it["image"])
            assert torch.equal(batch["masks"][b, :, :x, :y, :z], it["masks"])
            grown = batch["masks"][b].clone()
            grown[:, :x, :y, :z] = 0
            assert not grown.any()  # the padding is background
            low = it["image"].amin()
            pad = batch["image"][b][:, x:], batch["image"][b][:, :, y:], batch["image"][b][:, :, :, z:]
            assert all(bool((p == low).all()) for p in pad)  # ... and what air is in the image
            assert batch["prompts"][b] == it["prompts"] and batch["layers"][b] == it["layers"]
            assert torch.equal(batch["affine"][b], it["affine"]) and torch.equal(batch["present"][b], it["present"])
            got += 1
    assert got == len(ds)
    patches = PatchDataset(tiny.release, terms=TERMS, split=None, patch_size=(16, 16, 8), samples_per_epoch=4)
    same = pad_collate([patches[i] for i in range(4)])  # patches are equal in size: stacked as they are
    plain = next(iter(DataLoader(patches, batch_size=4)))
    assert torch.equal(same["image"], plain["image"]) and torch.equal(same["masks"], plain["masks"])
    assert same["prompts"] == [list(p) for p in zip(*plain["prompts"])]  # B lists of T, not T tuples of B


def test_max_open_below_one_is_refused(tiny: Tiny) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ReleaseError, match="max_open = .*whole number >= 1"):
            CaseDataset(tiny.release, terms=TERMS, split=None, max_open=bad)  # type: ignore[arg-type]


def test_layer_advice_agrees_with_its_count() -> None:
    """"the 1 selected case hold liver" — the verb follows the count."""
    from curator.release.training import layer_advice

    def said(k: int, n: int) -> str:
        noun = "case" if n == 1 else "cases"
        return layer_advice({("liver", ("pseudo",)): k}, n, noun, ("original",), "layers=({})").split(":")[0]

    assert said(1, 1) == "the 1 selected case holds liver in the 'pseudo' layer"
    assert said(1, 5) == "1 of the 5 selected cases holds liver in the 'pseudo' layer"
    assert said(3, 5) == "3 of the 5 selected cases hold liver in the 'pseudo' layer"
    assert said(5, 5) == "the 5 selected cases hold liver in the 'pseudo' layer"
