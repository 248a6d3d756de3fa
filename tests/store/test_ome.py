"""OME-NGFF 0.5 metadata of case stores: valid by ome-zarr-models, voxels placed where the curator
affine puts them, left out where a scale and translation cannot be exact, and written into a
release's copy of a store that predates it without touching the workspace's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel

from curator.io.volume import Geometry
from curator.ome import TOL_MM, image_transforms, write_ome
from curator.preprocess.release import link_tree
from curator.store import CaseStore, store_sha256

SHAPE = (48, 40, 24)
AFFINE = np.array([[0.8, 0, 0, -123.4], [0, 0.7, 0, 56.7], [0, 0, 2.5, -8.9], [0, 0, 0, 1.0]])


def _planes() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros(SHAPE, np.uint8)
    a[5:20, 4:30, 2:20] = 1
    a[25:40, 10:30, 5:15] = 2
    b = np.zeros(SHAPE, np.uint8)
    b[8:12, 8:12, 8:12] = 1  # overlaps code 1 of plane a: a second plane
    return a, b


def _store(path: Path, affine: np.ndarray = AFFINE, image: bool = True) -> CaseStore:
    a, _ = _planes()
    img = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE).astype(np.int16)
    return CaseStore.create(path, geometry=Geometry.from_affine(SHAPE, affine), attrs={"case_id": "Demo__c1"},
                            image=img if image else None, body=(a > 0) if image else None,
                            labels=[(a, {1: ["liver"], 2: ["kidney_left", "kidney"]})])


def _attrs(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "zarr.json").read_text())["attributes"])


def _strip_ome(store: Path) -> None:
    """What an older curator wrote: the same zarr.json files without the ``ome`` attribute."""
    for meta in store.rglob("zarr.json"):
        d = json.loads(meta.read_text())
        d["attributes"].pop("ome", None)
        meta.unlink()  # a new file, as the hard-linked copy must keep its own
        meta.write_text(json.dumps(d, indent=2))


def test_written_store_validates_as_ome_zarr_image_with_labels(tmp_path: Path) -> None:
    s = _store(tmp_path / "c.zarr")
    a, b = _planes()
    s.write_layer("pseudo", [(a, {1: ["liver"]}), (b, {1: ["spleen"]})])  # two planes: not one OME label image
    s.write_layer("revised", [(a, {1: ["liver"], 2: ["kidney_left", "kidney"]})])
    group = zarr.open_group(str(s.path), mode="r")
    image = Image.from_zarr(group)  # raises ValidationError on anything OME-NGFF 0.5 does not allow
    (ms,) = image.ome_attributes.multiscales
    assert [d.path for d in ms.datasets] == ["image"] and ms.name == "Demo__c1"
    assert [(ax.name, ax.type, ax.unit) for ax in ms.axes] == [(n, "space", "millimeter") for n in "ijk"]
    assert image.labels is not None and image.labels.attributes.ome.labels == ["original", "revised"]
    for layer in ("original", "revised"):
        label = ImageLabel.from_zarr(group["labels"][layer])
        props = label.ome_attributes.image_label.properties
        assert {p.label_value: p.model_extra["terms"] for p in props} == {1: ["liver"], 2: ["kidney_left", "kidney"]}
    assert "ome" not in _attrs(s.path / "labels" / "pseudo")
    # curator's own attributes are what they were; the loader reads the store as before
    assert s.attrs == {"case_id": "Demo__c1", "affine": list(AFFINE.ravel()), "shape": list(SHAPE)}
    assert s.layers() == ["original", "revised", "pseudo"] and s.mask("spleen", "pseudo").sum() == 64
    s.remove_layer("revised")
    assert Image.from_zarr(zarr.open_group(str(s.path), mode="r")).labels.attributes.ome.labels == ["original"]


def test_scale_and_translation_put_a_voxel_at_its_world_position(tmp_path: Path) -> None:
    s = _store(tmp_path / "c.zarr")
    image = Image.from_zarr(zarr.open_group(str(s.path), mode="r"))
    scale, translation = image.ome_attributes.multiscales[0].datasets[0].coordinateTransformations
    g = s.geometry
    for voxel in [(0, 0, 0), (7, 11, 3), (SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1)]:
        ome_world = np.asarray(scale.scale) * np.asarray(voxel) + np.asarray(translation.translation)
        assert np.allclose(ome_world, g.voxel_to_world(np.asarray(voxel))[0], atol=1e-9), voxel
    assert translation.translation == [-123.4, 56.7, -8.9]  # voxel (0, 0, 0)
    assert scale.scale == [0.8, 0.7, 2.5]
    # the label image sits on the same grid
    label = ImageLabel.from_zarr(zarr.open_group(str(s.path / "labels" / "original"), mode="r"))
    assert label.ome_attributes.multiscales[0].datasets[0].coordinateTransformations == (scale, translation)


def _rotation_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    r = np.eye(4)
    r[:2, :2] = [[c, -s], [s, c]]
    return r @ AFFINE


@pytest.mark.parametrize("affine", [_rotation_z(3.0), np.diag([-0.8, -0.7, 2.5, 1.0])], ids=["oblique", "LPS"])
def test_no_ome_where_scale_and_translation_cannot_be_exact(tmp_path: Path, affine: np.ndarray) -> None:
    s = _store(tmp_path / "c.zarr", affine)
    assert "ome" not in _attrs(s.path) and "ome" not in _attrs(s.path / "labels")
    assert "ome" not in _attrs(s.path / "labels" / "original")
    assert np.allclose(np.asarray(s.attrs["affine"]).reshape(4, 4), affine)  # curator's geometry as ever
    with pytest.raises(ValueError):
        Image.from_zarr(zarr.open_group(str(s.path), mode="r"))


def test_obliquity_below_the_tolerance_keeps_the_metadata() -> None:
    far = np.linalg.norm((np.asarray(SHAPE) - 1) * np.diag(AFFINE)[:3])
    # a rotation moving the farthest voxel by half the tolerance is rounding in a header, not obliquity
    assert image_transforms(SHAPE, _rotation_z(np.degrees(TOL_MM / 2 / far)).ravel()) is not None
    assert image_transforms(SHAPE, _rotation_z(np.degrees(TOL_MM * 4 / far)).ravel()) is None


def test_label_only_store_has_no_ome_image(tmp_path: Path) -> None:
    s = _store(tmp_path / "c.zarr", image=False)
    assert "ome" not in _attrs(s.path) and "ome" not in _attrs(s.path / "labels")


def test_a_store_without_it_gets_it_in_its_copy_only_and_byte_for_byte(tmp_path: Path) -> None:
    new = _store(tmp_path / "new.zarr")
    old = _store(tmp_path / "ws" / "c.zarr")
    _strip_ome(old.path)
    before = {p: p.read_bytes() for p in old.path.rglob("*") if p.is_file()}
    copy = tmp_path / "release" / "c.zarr"
    link_tree(old.path, copy)
    assert write_ome(copy) == ["", "labels/original", "labels"]
    assert {p: p.read_bytes() for p in old.path.rglob("*") if p.is_file()} == before  # hard links untouched
    assert "ome" not in _attrs(old.path)
    Image.from_zarr(zarr.open_group(str(copy), mode="r"))
    assert store_sha256(copy) == store_sha256(new.path)  # as if written by this curator
    assert write_ome(copy) == []  # idempotent: nothing rewritten twice


def test_a_release_copy_without_the_pseudo_layer_does_not_list_it(tmp_path: Path) -> None:
    s = _store(tmp_path / "ws" / "c.zarr")
    a, _ = _planes()
    s.write_layer("pseudo", [(a, {1: ["spleen"]})])
    assert Image.from_zarr(zarr.open_group(str(s.path), mode="r")).labels.attributes.ome.labels == [
        "original", "pseudo"]
    copy = tmp_path / "release" / "c.zarr"
    link_tree(s.path, copy, skip=("labels/pseudo",))  # the release step, pseudolabel disabled
    assert write_ome(copy) == ["labels"]
    assert Image.from_zarr(zarr.open_group(str(copy), mode="r")).labels.attributes.ome.labels == ["original"]
    assert _attrs(s.path / "labels")["ome"]["labels"] == ["original", "pseudo"]  # the workspace's as it was


def test_a_store_whose_geometry_was_guessed_gets_no_world_coordinates(tmp_path: Path) -> None:
    """A DICOM without pixel spacing, orientation or position is read as 1 mm voxels at an identity
    orientation: its store's affine is diagonal and positive, and OME tools showed that invented
    position as patient RAS millimetres. A store saying its geometry was guessed gets no ``ome``
    (an existing one is removed), as an oblique store gets none."""
    a, _ = _planes()
    img = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE).astype(np.int16)
    g = Geometry.from_affine(SHAPE, AFFINE)
    for name, attrs in (("stated", {}), ("guessed", {"geometry_guessed": "DICOM without PixelSpacing"})):
        CaseStore.create(tmp_path / f"{name}.zarr", geometry=g, attrs={"case_id": "Demo__c1", **attrs}, image=img,
                         body=a > 0, labels=[(a, {1: ["liver"]})])
    assert "ome" in _attrs(tmp_path / "stated.zarr") and "ome" in _attrs(tmp_path / "stated.zarr" / "labels")
    guessed = tmp_path / "guessed.zarr"
    assert "ome" not in _attrs(guessed) and "ome" not in _attrs(guessed / "labels")
    assert "ome" not in _attrs(guessed / "labels" / "original")
    assert _attrs(guessed)["curator"]["geometry_guessed"] == "DICOM without PixelSpacing"
    assert CaseStore(guessed).geometry == g  # the affine itself is kept


def test_a_guessed_store_written_before_it_said_so_gets_no_world_coordinates_in_the_release(tmp_path: Path) -> None:
    """A store written before ``geometry_guessed`` was kept has OME world coordinates and is never
    rebuilt (its cache key did not change): the release step knows the case from ingest's warning
    and leaves them out of its copy."""
    import pyarrow as pa

    from curator.preprocess.release import guessed_geometry

    old = _store(tmp_path / "ws" / "c.zarr")
    assert "ome" in _attrs(old.path)
    problems = pa.table({"case_id": ["Demo__c1", "Demo__c2", None], "kind": [
        "dicom_geometry_missing", "label_dropped", "orientation_missing"]})
    assert guessed_geometry(problems) == {"Demo__c1"}
    copy = tmp_path / "release" / "c.zarr"
    link_tree(old.path, copy)
    assert "" in write_ome(copy, guessed=True)
    assert "ome" not in _attrs(copy) and "ome" not in _attrs(copy / "labels")
    assert "ome" in _attrs(old.path)  # the workspace's store as it was (hard links untouched)
