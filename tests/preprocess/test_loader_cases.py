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
