"""Release step (stores, locations, checksums) and the PyTorch PatchDataset over the release."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import curator
from curator.preprocess.terms import descendants, term_id
from curator.store import CaseStore, store_sha256
from curator.torch import PatchDataset
from tests.preprocess.conftest import Tiny


def test_release_holds_linked_stores_with_checksums(tiny: Tiny) -> None:
    info = json.loads((tiny.release / "release.json").read_text())
    hashes = {cid: meta["sha256"] for cid, meta in info["stores"].items()}
    assert len(hashes) == 5
    for cid, h in hashes.items():
        assert store_sha256(tiny.release / "stores" / f"{cid}.zarr") == h
    src = tiny.workspace / "stores" / "TinyKits__case_00000.zarr" / "image" / "zarr.json"
    dst = tiny.release / "stores" / "TinyKits__case_00000.zarr" / "image" / "zarr.json"
    assert src.stat().st_ino == dst.stat().st_ino  # hard link, no copy


def test_store_terms_match_the_masks(tiny: Tiny) -> None:
    rel = curator.open_release(str(tiny.release))
    rows = rel.sql("select case_id, term_id, layer, voxels, locations from store_terms").fetchall()
    assert rows
    for cid, term, layer, voxels, loc in rows:
        s = CaseStore(tiny.release / "stores" / f"{cid}.zarr")
        m = s.mask(term, layer)
        assert int(m.sum()) == voxels
        with np.load(tiny.release / loc) as z:
            pts = z[f"{layer}/{term}"]
        assert len(pts) == min(voxels, 2000) and m[tuple(pts.T)].all()


def _ds(tiny: Tiny, **kw: object) -> PatchDataset:
    args = {"terms": [term_id("kidney"), term_id("liver"), term_id("kidney tumor")], "patch_size": (24, 24, 8),
            "samples_per_epoch": 12, "seed": 3}
    args.update(kw)
    return PatchDataset(tiny.release, **args)  # type: ignore[arg-type]


def _boxes(start: list[int], patch: tuple[int, ...], shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The patch's box in the store (clipped) and the part of the patch it fills."""
    box = tuple(slice(max(x, 0), min(x + p, n)) for x, p, n in zip(start, patch, shape))
    return box, tuple(slice(b.start - x, b.stop - x) for b, x in zip(box, start))


def test_items_are_deterministic_and_masks_match_store(tiny: Tiny) -> None:
    ds = _ds(tiny)
    a, b = ds[4], ds[4]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
    assert a["image"].shape == (1, 24, 24, 8) and a["masks"].shape == (3, 24, 24, 8)
    assert a["prompts"][0] == f"(ct) {a['prompts'][0][5:]}" and a["prompts"][0].startswith("(ct) ")
    for i in range(len(ds)):
        it = ds[i]
        s = CaseStore(tiny.release / "stores" / f"{it['case_id']}.zarr")
        start = it["start"].tolist()
        box, inner = _boxes(start, (24, 24, 8), s.geometry.shape)
        for k, t in enumerate(ds.terms):
            assert np.array_equal(it["masks"][k].numpy()[inner].astype(bool), s.mask(t, box=box))
            assert bool(it["present"][k]) == (t in s.terms())
    ds.set_epoch(1)
    assert not torch.equal(ds[4]["image"], a["image"]) or ds[4]["case_id"] != a["case_id"]


def test_foreground_oversampling_hits_foreground(tiny: Tiny) -> None:
    fg = _ds(tiny, foreground_fraction=1.0, samples_per_epoch=30)
    hits = sum(bool(fg[i]["masks"].any()) for i in range(len(fg)))
    assert hits == len(fg)


def test_where_filters_and_balancing_weights(tiny: Tiny) -> None:
    ds = _ds(tiny, where="p.dataset = 'TinyKits'")
    assert {c["dataset"] for c in ds.cases} == {"TinyKits"}
    both = _ds(tiny, repeat=False)
    w = {c["dataset"]: x for c, x in zip(both.cases, both.weights)}
    # 1/sqrt(N): each TinyKits case (N=3) weighs sqrt(2/3) of a TinyTotalSeg case (N=2)
    assert w["TinyKits"] / w["TinyTotalSeg"] == pytest.approx((2 / 3) ** 0.5)


def test_dataloader_workers_and_distributed_sampler(tiny: Tiny) -> None:
    ds = _ds(tiny)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2)
        for batch in loader:
            seen += list(batch["case_id"])
            assert batch["image"].dtype == torch.float32
    assert len(seen) == len(ds)
    single = [ds[i]["case_id"] for i in range(len(ds))]
    assert sorted(seen) == sorted(single)


def test_each_term_comes_from_its_best_layer(tiny: Tiny, tmp_path) -> None:
    """A case with a revised layer (reviewed pseudo labels) still trains on its annotated terms:
    the layer is chosen per term (original, then revised; pseudo on request), not per case."""
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    cid = "TinyTotalSeg__s0000"
    store = CaseStore(rel / "stores" / f"{cid}.zarr")
    liver, kidney, spleen = term_id("liver"), term_id("kidney"), term_id("spleen")
    orig_liver = store.mask(liver, "original")
    revised = np.zeros(store.geometry.shape, np.uint8)
    revised[orig_liver] = 1  # a reviewer's label for a term the case holds (ignored: original wins) ...
    revised[:4] = 2  # ... and for a term it does not annotate
    store.write_layer("revised", [(revised, {1: [liver], 2: ["aorta"]})], {"origin": "revised"})
    pseudo = np.zeros_like(revised)
    pseudo[-4:] = 1
    store.write_layer("pseudo", [(pseudo, {1: ["aorta"], 2: [spleen]})], {"origin": "pseudo"})
    store = CaseStore(store.path)
    assert store.term_layers([liver, "aorta"], ("original", "revised")) == {liver: "original", "aorta": "revised"}
    terms = [liver, kidney, "aorta"]
    shape = store.geometry.shape
    item = PatchDataset(rel, terms=terms, where=f"p.case_id = '{cid}'", patch_size=shape, normalise=False)[0]
    assert item["present"].tolist() == [True, True, True]
    got = item["masks"].numpy().astype(bool)
    assert np.array_equal(got[0], orig_liver)
    kidney_parts = [p for p in (kidney, *descendants(kidney)) if p in store.terms("original")]
    assert np.array_equal(got[1], store.masks(kidney_parts, "original").any(axis=0))
    assert np.array_equal(got[2], revised == 2)
    only_pseudo = PatchDataset(rel, terms=["aorta"], where=f"p.case_id = '{cid}'", patch_size=shape,
                               normalise=False, layers=("pseudo",))[0]
    assert np.array_equal(only_pseudo["masks"][0].numpy().astype(bool), pseudo == 1)


def test_leaf_terms_inside_the_volume_match_the_store(tiny: Tiny) -> None:
    """Leaf terms all held by the case, patch inside the volume: masks come straight from the store read."""
    terms = [term_id("liver"), term_id("spleen")]
    ds = _ds(tiny, terms=terms, where="p.dataset = 'TinyTotalSeg'", samples_per_epoch=16)
    inside = 0
    for i in range(len(ds)):
        it = ds[i]
        s = CaseStore(tiny.release / "stores" / f"{it['case_id']}.zarr")
        start = it["start"].tolist()
        box, inner = _boxes(start, (24, 24, 8), s.geometry.shape)
        inside += all(b.stop - b.start == p for b, p in zip(box, (24, 24, 8)))
        assert it["masks"].dtype == torch.uint8 and it["present"].all()
        for k, t in enumerate(terms):
            assert np.array_equal(it["masks"][k].numpy()[inner].astype(bool), s.mask(t, box=box))
    assert inside > 0
