"""What a loader pays per item when a release holds many more cases than it keeps open: store
metadata read without zarr-python's group API."""

from __future__ import annotations

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

