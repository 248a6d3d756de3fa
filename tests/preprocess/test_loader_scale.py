"""What a loader pays per item and keeps per worker when a release holds many more cases than
it keeps open: store metadata read without zarr-python's group API, a bounded location cache."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from curator.preprocess.terms import term_id
from curator.store import LAYERS, CaseStore
from curator.torch import PatchDataset
from tests.preprocess.conftest import Tiny

TERMS = [term_id("kidney"), term_id("liver"), term_id("kidney tumor")]


def _ds(tiny: Tiny, **kw: object) -> PatchDataset:
    return PatchDataset(tiny.release, terms=TERMS, patch_size=(24, 24, 8), samples_per_epoch=40, seed=3,
                        split=None, **kw)  # type: ignore[arg-type]


def test_store_metadata_matches_zarr(tiny: Tiny) -> None:
    """CaseStore reads its metadata from the zarr.json files: what zarr-python says of each store."""
    for path in sorted((tiny.release / "stores").glob("*.zarr")):
        store, group = CaseStore(path), zarr.open_group(str(path), mode="r")
        assert store.attrs == dict(group.attrs["curator"])
        assert store.has_image() == ("image" in group)
        assert (store.body() is not None) == ("body" in group)
        labels = group.get("labels")
        assert store.layers() == [x for x in LAYERS if labels is not None and x in labels]
        for layer in store.layers():
            grp = group["labels"][layer]
            assert store.plane_values(layer) == [
                (f"labels/{layer}/{name}", {int(k): list(v) for k, v in dict(grp[name].attrs["values"]).items()})
                for name in sorted(grp.array_keys())]


def test_items_open_no_zarr_group(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a store's zarr group cost a few ms (zarr-python's async machinery): with more cases
    than ``max_open``, nearly every item opened one, half of an item's time on a 1,400-case
    release. Items never need it."""
    want = [(it["case_id"], it["start"].tolist(), it["masks"].numpy().tobytes(), it["image"].numpy().tobytes())
            for it in (_ds(tiny, max_open=1)[i] for i in range(40))]

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("zarr.open_group called while drawing items")

    monkeypatch.setattr(zarr, "open_group", refuse)
    ds = _ds(tiny, max_open=1)
    got = [(it["case_id"], it["start"].tolist(), it["masks"].numpy().tobytes(), it["image"].numpy().tobytes())
           for it in (ds[i] for i in range(40))]
    assert got == want


def test_location_cache_is_bounded_and_holds_only_the_drawn_arrays(tiny: Tiny) -> None:
    """A worker kept every location file it had read, with every array in it (all terms, all
    layers): it grew by the release's location arrays over the epochs (measured on a 1,400-case
    release: 285 → 510 MB per worker in 6 epochs; at SAT's ~22,000 cases, with pseudo labels for
    every term, gigabytes). Now it keeps ``max_open`` files, and of each only what it draws from."""
    ref = _ds(tiny, foreground_fraction=1.0)
    want = [(it["case_id"], it["start"].tolist()) for it in (ref[i] for i in range(40))]
    ds = _ds(tiny, foreground_fraction=1.0, max_open=1)
    seen = set()
    for i in range(40):
        it = ds[i]
        assert (it["case_id"], it["start"].tolist()) == want[i]  # the same draws, whatever is cached
        assert len(ds._locs) <= 1
        seen.add(it["case_id"])
        for path, arrays in ds._locs.items():
            cid = path.split("/")[-1].removesuffix(".npz")
            drawn = {f"{layer}/{part}" for found in ds._foreground[cid].values() for part, layer, _ in found}
            assert set(arrays) <= drawn and arrays
            with np.load(tiny.release / path) as z:
                assert set(z.files) > set(arrays) or set(z.files) == drawn  # the others stay on disk
    assert len(seen) > 1
