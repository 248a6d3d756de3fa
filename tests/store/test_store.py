"""The case store: sharded layout, fast reader == zarr-python == tensorstore, masks, layers, dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from curator.errors import WorkspaceError
from curator.io.volume import Geometry
from curator.store import INNER_CHUNKS, CaseStore, store_sha256
from curator.store_reader import ShardReader

SHAPE = (300, 70, 45)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(-1000, 2000, SHAPE).astype(np.int16)
    a = np.zeros(SHAPE, np.uint8)
    a[10:200, 5:40, 3:30] = 1
    a[150:290, 30:60, 20:44] = 2
    b = np.zeros(SHAPE, np.uint8)
    b[100:180, 20:50, 10:30] = 1  # overlaps both codes of plane 0
    return {"image": img, "a": a, "b": b, "body": img > 0}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> CaseStore:
    g = Geometry.from_affine(SHAPE, np.diag([0.9, 0.9, 3.0, 1.0]))
    return CaseStore.create(tmp_path_factory.mktemp("s") / "case.zarr", geometry=g, attrs={"case_id": "case"},
                            image=data["image"], body=data["body"],
                            labels=[(data["a"], {1: ["liver"], 2: ["kidney_left", "kidney"]}),
                                    (data["b"], {1: ["kidney_tumor", "kidney"]})])


BOXES = [(slice(0, 300), slice(0, 70), slice(0, 45)), (slice(250, 290), slice(31, 33), slice(44, 45)),
         (slice(-20, None), slice(None, 5), slice(7, 70)), (slice(255, 257), slice(0, 70), slice(31, 33))]


@pytest.mark.parametrize("box", BOXES)
def test_fast_reader_matches_numpy_and_zarr(store: CaseStore, data: dict[str, np.ndarray], box: tuple) -> None:
    got = store.read("image", box)
    assert got.dtype == np.int16
    assert np.array_equal(got, data["image"][box])
    assert np.array_equal(got, zarr.open_array(str(store.path / "image"), mode="r")[box])


def test_layout_is_sharded_with_small_inner_chunks(store: CaseStore) -> None:
    arr = zarr.open_array(str(store.path / "image"), mode="r")
    assert arr.shards is not None and arr.chunks == tuple(min(c, n) for c, n in zip(INNER_CHUNKS, SHAPE))
    assert len(list((store.path / "image" / "c").rglob("*"))) < 10  # few shard files, not 1 file per chunk
    assert zarr.open_array(str(store.path / "labels" / "original" / "0"), mode="r").dtype == np.uint8


def test_tensorstore_reads_the_store(store: CaseStore, data: dict[str, np.ndarray]) -> None:
    ts = pytest.importorskip("tensorstore")
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store.path / "image")}}).result()
    assert np.array_equal(arr[250:300, 10:70, 0:45].read().result(), data["image"][250:300, 10:70, 0:45])
    lab = ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
                                                  "path": str(store.path / "labels/original/1")}}).result()
    assert np.array_equal(lab.read().result(), data["b"])


def test_masks_union_codes_and_planes(store: CaseStore, data: dict[str, np.ndarray]) -> None:
    box = (slice(90, 210), slice(0, 70), slice(0, 45))
    a, b = data["a"][box], data["b"][box]
    m = store.masks(["liver", "kidney", "kidney_tumor", "spleen"], box=box)
    assert np.array_equal(m[0], a == 1)
    assert np.array_equal(m[1], (a == 2) | (b == 1))
    assert np.array_equal(m[2], b == 1)
    assert not m[3].any()
    assert np.array_equal(store.mask("kidney_left"), data["a"] == 2)
    assert set(store.terms()) == {"liver", "kidney_left", "kidney", "kidney_tumor"}
    # a layer this store lacks holds nothing; a layer name that does not exist is an error, not a
    # silently empty mask
    assert not store.mask("liver", "revised").any() and store.terms("revised") == []
    with pytest.raises(WorkspaceError, match="no label layer 'orignal'"):
        store.mask("liver", "orignal")


def test_layers_atomic_and_original_protected(store: CaseStore, tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    with pytest.raises(WorkspaceError):
        store.write_layer("original", [(data["a"], {1: ["liver"]})])
    big = np.zeros(SHAPE, np.uint16)
    big[0:5, 0:5, 0:5] = 300
    store.write_layer("pseudo", [(big, {300: ["liver"]})])
    assert store.layers() == ["original", "pseudo"]
    assert zarr.open_array(str(store.path / "labels/pseudo/0"), mode="r").dtype == np.uint16
    assert store.mask("liver", "pseudo").sum() == 125
    assert not any(p.name.startswith(".") for p in (store.path / "labels").iterdir())


def test_content_hash_changes_with_content(tmp_path: Path) -> None:
    g = Geometry.from_affine((20, 20, 20), np.eye(4))
    a = CaseStore.create(tmp_path / "a.zarr", geometry=g, attrs={}, image=np.zeros((20, 20, 20), np.int16))
    b = CaseStore.create(tmp_path / "b.zarr", geometry=g, attrs={}, image=np.zeros((20, 20, 20), np.int16))
    assert store_sha256(a.path) == store_sha256(b.path)
    c = CaseStore.create(tmp_path / "c.zarr", geometry=g, attrs={}, image=np.ones((20, 20, 20), np.int16))
    assert store_sha256(a.path) != store_sha256(c.path)


def test_reader_falls_back_for_unsharded_arrays(tmp_path: Path) -> None:
    x = np.arange(30 * 20 * 10, dtype=np.float32).reshape(30, 20, 10)
    z = zarr.create_array(str(tmp_path / "plain"), shape=x.shape, chunks=(8, 8, 8), dtype="float32")
    z[...] = x
    assert np.array_equal(ShardReader(tmp_path / "plain").read((slice(3, 29), slice(0, 20), slice(5, 9))),
                          x[3:29, :, 5:9])


def test_fast_reader_on_sparse_arrays_with_missing_chunks_and_shards(tmp_path: Path) -> None:
    """Chunks and whole shards holding only the fill value are never written; random boxes
    read through them must equal zarr-python's view."""
    d = np.zeros((70, 50, 40), np.int16)
    d[5:20, 3:30, 2:9] = 7
    d[60:, 40:, 30:] = -3
    a = zarr.create_array(str(tmp_path / "a"), shape=d.shape, chunks=(16, 16, 16), shards=(32, 32, 32),
                          dtype="int16", fill_value=0)
    a[...] = d
    assert not (tmp_path / "a" / "c" / "1" / "0" / "1").exists()  # an all-fill shard
    r = ShardReader(tmp_path / "a")
    rng = np.random.default_rng(0)
    for _ in range(50):
        lo = [int(rng.integers(0, s)) for s in d.shape]
        box = tuple(slice(x, int(rng.integers(x + 1, s + 1))) for x, s in zip(lo, d.shape, strict=True))
        assert np.array_equal(r.read(box), a[box])


def _sparse_store(path: Path) -> tuple[CaseStore, np.ndarray]:
    """Two shards along i (256 + 44 voxels); the second holds only zeros, so it is never written."""
    d = np.zeros((300, 20, 20), np.int16)
    d[5:200, 3:15, 2:9] = 7
    return CaseStore.create(path, geometry=Geometry.from_affine(d.shape, np.eye(4)), attrs={}, image=d,
                            chunks=(16, 16, 16)), d


def _shard_files(store: CaseStore) -> list[Path]:
    return sorted(p for p in (store.path / "image" / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["deleted", "truncated", "emptied"])
def test_a_damaged_shard_is_an_error_not_blank_voxels(tmp_path: Path, damage: str) -> None:
    """A deleted shard file read as the fill value — a training patch or an export of a blank
    image, with no error. The writer lists the shards it wrote; one of them missing, cut short
    or empty is `store_damaged`. Shards never written (all fill) still read as fill."""
    store, d = _sparse_store(tmp_path / "s.zarr")
    (victim,) = _shard_files(store)
    if damage == "deleted":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[: 40 if damage == "truncated" else 0])
    fresh = CaseStore(store.path)
    with pytest.raises(WorkspaceError) as e:
        fresh.read("image", (slice(0, 20), slice(0, 20), slice(0, 20)))
    assert e.value.kind == "store_damaged" and "curator verify" in str(e.value)
    far = (slice(260, 300), slice(0, 20), slice(0, 20))  # in the never-written shard
    assert np.array_equal(fresh.read("image", far), d[far])



def _flip_in_first_chunk(array: Path) -> None:
    """Flip one bit in the middle of the first chunk's compressed bytes of shard 0/0/0; the chunk
    index (and its CRC32C) at the end of the file stays intact."""
    shard = array / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    n = int(np.prod([s // c for s, c in zip(zarr.open_array(str(array), mode="r").shards or (),
                                             zarr.open_array(str(array), mode="r").chunks, strict=True)]))
    index = np.frombuffer(bytes(data[len(data) - 16 * n - 4:-4]), "<u8").reshape(n, 2)
    off, nbytes = (int(x) for x in index[0])
    data[off + nbytes // 2] ^= 0x10
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("array", ["image", "labels/original/0"])
def test_a_flipped_byte_in_a_chunk_is_store_damaged_not_other_voxels(tmp_path: Path, data: dict[str, np.ndarray],
                                                                     array: str) -> None:
    """Bit rot inside a chunk behind an intact shard index: Blosc decoded it into other voxels
    without a word (a training patch with wrong values), and only the shard index had a checksum.
    Every chunk now carries its CRC32C; the reader checks it, and the whole-store check with
    ``chunks`` (the release, `curator verify`) names the chunk."""
    from curator.store_reader import store_damage

    g = Geometry.from_affine(SHAPE, np.eye(4))
    store = CaseStore.create(tmp_path / "s.zarr", geometry=g, attrs={}, image=data["image"],
                             labels=[(data["a"] * 3 + data["b"], {1: ["x"], 3: ["y"], 4: ["z"], 6: ["w"]})])
    _flip_in_first_chunk(store.path / array)
    with pytest.raises(WorkspaceError) as e:
        CaseStore(store.path).read(array)
    assert e.value.kind == "store_damaged" and "curator verify" in str(e.value)
    assert f"shard 0/0/0 of the array {array}: its chunk 0/0/0 fails its CRC32C checksum" in str(e.value)
    assert store_damage(store.path) == []  # the index alone (the cached-run check) cannot see it
    assert store_damage(store.path, chunks=True) == [f"{array}: shard 0/0/0's chunk 0/0/0 fails its CRC32C checksum"]
    with pytest.raises(ValueError, match="checksum"):  # zarr-python checks the same codec
        zarr.open_array(str(store.path / array), mode="r")[:]


def test_zarr_python_reads_the_checksummed_chunks_as_the_reader_does(store: CaseStore,
                                                                      data: dict[str, np.ndarray]) -> None:
    for name, want in [("image", data["image"]), ("body", data["body"]), ("labels/original/1", data["b"])]:
        arr = zarr.open_array(str(store.path / name), mode="r")
        assert [c.to_dict()["name"] for c in arr.metadata.codecs[0].codecs] == ["bytes", "blosc", "crc32c"]
        assert np.array_equal(arr[:], store.read(name)) and np.array_equal(store.read(name), want)


def test_stores_written_before_chunk_checksums_still_read(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    """Received releases and existing workspaces hold stores whose chunks have no CRC32C (inner
    codecs bytes, blosc): the fast reader still decodes them itself, and the whole-store check
    judges them by their shard index."""
    from curator.store import codec_for
    from curator.store_reader import store_damage, write_sharded

    g = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    g.attrs["curator"] = {"shape": list(SHAPE), "affine": np.eye(4).ravel().tolist()}  # as every case store's root
    g.create_array("image", shape=SHAPE, dtype="int16", chunks=INNER_CHUNKS, shards=(256, 256, 256),
                   compressors=codec_for(np.dtype("int16")), fill_value=0)  # the previous curator's layout
    write_sharded(tmp_path / "old.zarr" / "image", data["image"])
    r = ShardReader(tmp_path / "old.zarr" / "image")
    assert r._zarr is None and not r.crc  # the fast path, without a checksum to check
    box = (slice(250, 300), slice(10, 70), slice(0, 45))
    assert np.array_equal(r.read(box), data["image"][box])
    assert np.array_equal(r.read(), zarr.open_array(str(tmp_path / "old.zarr" / "image"), mode="r")[:])
    assert store_damage(tmp_path / "old.zarr", chunks=True) == []


def test_the_never_written_all_fill_shards_still_read_as_fill(tmp_path: Path) -> None:
    store, d = _sparse_store(tmp_path / "s.zarr")
    assert [p.relative_to(store.path / "image" / "c").as_posix() for p in _shard_files(store)] == ["0/0/0"]
    assert np.array_equal(CaseStore(store.path).read("image"), d)


def test_writer_gives_the_same_files_for_either_memory_order(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    """Preprocessing hands the writer Fortran-ordered arrays (nibabel's order): the store files
    must not depend on the memory order."""
    g = Geometry.from_affine(SHAPE, np.eye(4))
    c = CaseStore.create(tmp_path / "c.zarr", geometry=g, attrs={}, image=data["image"], body=data["body"])
    f = CaseStore.create(tmp_path / "f.zarr", geometry=g, attrs={}, image=np.asfortranarray(data["image"]),
                         body=np.asfortranarray(data["body"]))
    assert store_sha256(c.path) == store_sha256(f.path)


def test_a_layer_replacement_killed_between_its_renames_is_put_back(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The old layer is renamed away, then the new one in: a kill between the two left no layer
    and a leftover nothing cleaned. Now the workspace's start-up cleanup puts the old layer back."""
    import os

    from curator.io import fsutil

    shape = (20, 20, 10)
    lab = np.zeros(shape, np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    s = CaseStore.create(tmp_path / "stores" / "c.zarr", geometry=Geometry.from_affine(shape, np.eye(4)),
                         attrs={}, labels=[(lab, {1: ["liver"]})])
    s.write_layer("pseudo", [(lab, {1: ["spleen"]})])
    real = os.replace

    def dies_moving_the_new_layer_in(a, b):  # type: ignore[no-untyped-def]
        if Path(b) == s.path / "labels" / "pseudo":
            raise KeyboardInterrupt  # the kill, after the old layer was renamed away
        return real(a, b)

    monkeypatch.setattr(fsutil.os, "replace", dies_moving_the_new_layer_in)
    with pytest.raises(KeyboardInterrupt):
        s.write_layer("pseudo", [(lab * 0 + lab, {1: ["kidney"]})])
    monkeypatch.undo()
    assert not (s.path / "labels" / "pseudo").exists()
    assert fsutil.remove_stale_temporaries(tmp_path / "stores") == 1
    again = CaseStore(s.path)
    assert again.layers() == ["original", "pseudo"] and again.terms("pseudo") == ["spleen"]
    assert not [p.name for p in (s.path / "labels").iterdir() if p.name.startswith(".")]
    # a leftover whose replacement did arrive is just deleted
    (s.path / "labels" / ".pseudo.tmp-old-1-abc").mkdir()
    assert fsutil.remove_stale_temporaries(tmp_path / "stores") == 1
    assert CaseStore(s.path).terms("pseudo") == ["spleen"]
    assert not [p.name for p in (s.path / "labels").iterdir() if p.name.startswith(".")]


def test_term_locations_read_planes_not_per_term_masks(store: CaseStore) -> None:
    """Locations found code by code inside each code's box are those of the full per-term masks
    (terms spanning codes and overlapping planes: one sorted set of voxels), with the same random
    picks; memory is one plane plus the voxel indices, not one volume per term."""
    import tracemalloc

    from curator.preprocess.release import term_locations

    rows, arrays = term_locations(store, np.random.default_rng(7), max_samples=500)
    rng = np.random.default_rng(7)
    original = [r for r in rows if r["layer"] == "original"]  # the layers come in order: original first
    terms = [r["term_id"] for r in original]
    assert sorted(terms) == sorted(store.terms("original"))
    for row, m in zip(original, store.masks(terms, "original"), strict=True):
        term = row["term_id"]
        idx = np.argwhere(m)  # what the release step did before: one full mask per term
        pick = idx if len(idx) <= 500 else idx[np.sort(rng.choice(len(idx), 500, replace=False))]
        assert row["voxels"] == len(idx) and row["samples"] == len(pick)
        assert row["bbox_start"] == idx.min(0).tolist() and row["bbox_stop"] == (idx.max(0) + 1).tolist()
        assert np.array_equal(arrays[f"original/{term}"], pick)
    tracemalloc.start()
    term_locations(store, np.random.default_rng(7))  # (with any layer another test added: one at a time)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n_terms, voxels = len(store.terms("original")), int(np.prod(store.geometry.shape))
    largest = max(r["voxels"] for r in original)
    # the two planes as read (one byte per voxel each, decoded), one term's box mask and its flat
    # indices — where the per-term masks alone were one byte per voxel per term, plus 24 bytes
    # per voxel of the largest term's coordinates
    assert peak < 2 * 2 * voxels + voxels + 8 * largest < n_terms * voxels + 24 * largest


@pytest.mark.parametrize("damage", ["deleted", "truncated", "overwritten"])
def test_store_damage_names_the_array_and_reads_no_voxels(tmp_path: Path, damage: str) -> None:
    """The check the runner and the release make of a whole store (no voxel read): a shard the
    writer listed that is missing, cut short, or whose chunk index was overwritten."""
    from curator.store_reader import store_damage

    store, _ = _sparse_store(tmp_path / "s.zarr")
    assert store_damage(store.path) == []
    (victim,) = _shard_files(store)
    data = victim.read_bytes()
    if damage == "deleted":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(data[: len(data) - 7])  # longer than the index, which is now garbage
    else:
        victim.write_bytes(data[:-20] + bytes(20))
    (why,) = store_damage(store.path)
    assert why.startswith("image: shard 0/0/0") and ("missing" if damage == "deleted" else "index") in why
    assert store_damage(store.path, parts=("body", "labels/original")) == []
    assert store_damage(store.path, index=False) == ([why] if damage == "deleted" else [])


def test_a_replaced_layer_is_unmapped_at_once(tmp_path: Path) -> None:
    """Shard maps live in a process-wide bounded cache: a layer rewritten or removed unmaps the
    files it replaced at once (held until pushed out, a deleted layer's disk space stayed used)."""
    from curator.store_reader import OPEN_SHARDS

    g = Geometry.from_affine((20, 16, 8), np.eye(4))
    lab = np.zeros(g.shape, np.uint8)
    lab[2:6, 2:6, 2:6] = 1
    s = CaseStore.create(tmp_path / "c.zarr", geometry=g, attrs={"case_id": "c"}, image=np.ones(g.shape, np.int16),
                         labels=[(lab, {1: ["liver"]})])
    s.write_layer("pseudo", [(lab, {1: ["liver"]})])
    assert s.mask("liver", "pseudo").sum() == 64
    old = s.reader("labels/pseudo/0")._id
    assert any(k[0] == old for k in OPEN_SHARDS._maps)
    s.remove_layer("pseudo")
    assert not any(k[0] == old for k in OPEN_SHARDS._maps)
