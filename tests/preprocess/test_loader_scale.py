"""What a loader pays per item and keeps per worker when a release holds many more cases than
it keeps open: store metadata read without zarr-python's group API, a bounded location cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from curator import store_reader
from curator.preprocess.terms import term_id
from curator.store import LAYERS, CaseStore, codec_for
from curator.store_reader import WRITTEN_SHARDS, ShardReader, write_sharded
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


_LOW_LIMIT = """
import hashlib, json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from curator.torch import PatchDataset
ds = PatchDataset(sys.argv[1], terms=json.loads(sys.argv[2]), patch_size=(24, 24, 8), samples_per_epoch=150, seed=3,
                  split=None, verify=False, max_open=10_000)
print(json.dumps([hashlib.sha256(it["image"].numpy().tobytes() + it["masks"].numpy().tobytes()).hexdigest()
                  for it in (ds[i] for i in range(len(ds)))]))
"""


def _reshard(store: Path, shards: tuple[int, int, int]) -> None:
    """Rewrite every array of ``store`` (same voxels) in shards of ``shards`` voxels: many shard files."""
    for meta in sorted(store.rglob("zarr.json")):
        m = json.loads(meta.read_text())
        if m.get("node_type") != "array":
            continue
        data = ShardReader(meta.parent).read()
        attrs = {k: v for k, v in (m.get("attributes") or {}).items() if k != WRITTEN_SHARDS}
        shutil.rmtree(meta.parent)
        a = zarr.create_array(str(meta.parent), shape=data.shape, dtype=data.dtype, chunks=shards, shards=shards,
                              compressors=codec_for(data.dtype), fill_value=0)
        a.attrs.update(attrs)
        write_sharded(meta.parent, data)


def test_a_worker_under_ulimit_256_reads_more_shards_than_it_may_open(tiny: Tiny, tmp_path: Path) -> None:
    """Each shard file a store had read stayed mapped (a file descriptor each) while the store was
    kept: a worker keeping 64 stores of ~12 shards held ~770 descriptors, and with a soft limit
    of 1024 (or less) training died mid-epoch with 'Too many open files'. Here a process with
    ``ulimit -n 256`` keeps every store of a release whose stores hold hundreds of shard files:
    the mapped shards stay within a share of the limit, and the patches are the original ones."""
    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    stores = sorted((rel / "stores").glob("*.zarr"))
    for store in stores:
        _reshard(store, (8, 8, 8))
    assert sum(1 for s in stores for p in s.rglob("c/*/*/*") if p.is_file()) > 1000
    ref = PatchDataset(tiny.release, terms=TERMS, patch_size=(24, 24, 8), samples_per_epoch=150, seed=3, split=None)
    want = [hashlib.sha256(it["image"].numpy().tobytes() + it["masks"].numpy().tobytes()).hexdigest()
            for it in (ref[i] for i in range(len(ref)))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _LOW_LIMIT, str(rel), json.dumps(TERMS)], capture_output=True,
                         text=True, env=env, check=False, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == want


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")
def test_open_shards_are_bounded_and_shared_by_the_readers_of_a_process(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound holds across the readers of a process (least recently used closed first), and
    a box whose shards were pushed out is read again, voxel for voxel."""
    monkeypatch.setattr(store_reader, "open_shard_limit", lambda: 16, raising=False)
    data = np.arange(32 * 32 * 16, dtype=np.int16).reshape(32, 32, 16)
    readers = []
    for i in range(4):
        zarr.create_array(str(tmp_path / f"a{i}"), shape=data.shape, dtype=data.dtype, chunks=(8, 8, 8),
                          shards=(8, 8, 8), compressors=codec_for(data.dtype), fill_value=0)
        write_sharded(tmp_path / f"a{i}", data + i)
        readers.append(ShardReader(tmp_path / f"a{i}"))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(2):
        for i, r in enumerate(readers):  # 32 shard files each
            assert (r.read() == data + i).all()
            assert (r.read((slice(3, 29), slice(0, 9), slice(7, 16))) == (data + i)[3:29, 0:9, 7:16]).all()
            assert len(os.listdir("/proc/self/fd")) - before <= 16
