"""Label files holding named structures — RTSTRUCT ROIs and DICOM SEG segments — read per structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from curator.errors import GeometryError, InputError
from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.store import CaseStore
from curator.testing.layouts import write_dicom_seg, write_dicom_series, write_rtstruct
from curator.testing.native import image_array
from curator.testing.pipelines import make_pipeline, run, table

G = Geometry.from_lps((10, 9, 6), (1.5, 1.5, 3.0), (-20.0, 15.0, 40.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def rect(i0: int, i1: int, j0: int, j1: int) -> list[tuple[float, float]]:
    """A polygon whose inside holds the voxel centres i0..i1-1 × j0..j1-1 (corners off the centres)."""
    return [(i0 - 0.4, j0 - 0.4), (i1 - 0.6, j0 - 0.4), (i1 - 0.6, j1 - 0.6), (i0 - 0.4, j1 - 0.6)]


ROIS = {"Liver": [(1, rect(2, 8, 2, 7)), (2, rect(2, 8, 2, 7)), (2, rect(4, 6, 4, 5)), (3, rect(2, 8, 2, 7))],
        "GTV": [(2, rect(3, 5, 3, 6))], "Couch": []}


def expected() -> dict[str, np.ndarray]:
    liver = np.zeros(G.shape, np.uint8)
    liver[2:8, 2:7, 1:4] = 1
    liver[4:6, 4:5, 2] = 0  # the inner contour is a hole
    gtv = np.zeros(G.shape, np.uint8)
    gtv[3:5, 3:6, 2] = 1  # inside the liver and over its hole: overlapping structures
    return {"Liver": liver, "GTV": gtv}


def _case(root: Path, case: str, kind: str) -> Path:
    files = write_dicom_series(root / case / "ct", image_array(4, G.shape).astype(float), G)
    if kind == "rtstruct":
        return write_rtstruct(root / case / "labels", G, ROIS, series=files)
    want = expected()
    return write_dicom_seg(root / case / "labels" / "seg.dcm", files, want["Liver"], {1: "Liver", 2: "GTV"},
                           masks={1: want["Liver"], 2: want["GTV"]})


def test_rtstruct_rois_are_rasterised_on_the_image_grid(tmp_path: Path) -> None:
    rt = _case(tmp_path, "p1", "rtstruct")
    ct = read_volume(tmp_path / "p1" / "ct")
    for name, mask in expected().items():
        got = read_volume(rt, role="label", grid=ct.geometry, structure=name)
        assert got.geometry == ct.geometry and np.array_equal(got.array, mask), name
    from curator.io.structures import structures_in

    assert structures_in(rt) == {"Liver": 1, "GTV": 2}  # Couch has no contour
    with pytest.raises(InputError, match="no structure 'Spleen'"):
        read_volume(rt, role="label", grid=ct.geometry, structure="Spleen")
    with pytest.raises(InputError) as e:
        read_volume(rt, role="label", structure="Liver")
    assert e.value.kind == "rtstruct_without_image"
    with pytest.raises(InputError) as e:
        read_volume(rt, role="label", grid=ct.geometry)  # as a label map: ROIs overlap
    assert e.value.kind == "rtstruct_label_map"
    off = write_rtstruct(tmp_path / "off", G, {"Liver": [(2, [(2.0, 2.0, ), (6.0, 2.0), (6.0, 6.0)])]})
    shifted = Geometry.from_lps(G.shape, (1.5, 1.5, 3.0), (-20.0, 15.0, 41.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(GeometryError) as g:  # half a slice off: another series
        read_volume(off, role="label", grid=shifted, structure="Liver")
    assert g.value.kind == "rtstruct_off_grid"


def test_overlapping_seg_segments_read_one_by_one(tmp_path: Path) -> None:
    seg = _case(tmp_path, "p2", "seg")
    ct = read_volume(tmp_path / "p2" / "ct")
    for name, mask in expected().items():
        assert np.array_equal(read_volume(seg, role="label", grid=ct.geometry, structure=name).array, mask), name


def test_a_dataset_with_rtstruct_and_seg_labels_runs_through_the_pipeline(tmp_path: Path) -> None:
    root = tmp_path / "download"
    _case(root, "p1", "rtstruct")
    _case(root, "p2", "seg")
    spec = {"name": "RtStudy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{x, title={x}}", "layout": [{"image": "{case}/ct/", "label": "{case}/labels/*.dcm"}],
            "labels": {"encoding": "per_structure", "structures": {"Liver": "liver", "GTV": "liver tumor"}}}
    yml = tmp_path / "RtStudy.yaml"
    yml.write_text(yaml.safe_dump(spec))
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}],
                         stages={"preprocess": {"target_spacing_mm": [1.5, 1.5, 3.0]}})
    run(pipe, stages=["ingest", "harmonize", "preprocess"])
    problems = [p for p in table(pipe, "problems__ingest").to_pylist()
                if p["severity"] != "info" and p["kind"] != "ct_intensity_offset"]  # (the phantom holds no air)
    assert not problems, problems
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    want = expected()
    raw = {(r["case_id"], r["label_key"]): r["voxels"] for r in table(pipe, "raw_labels").to_pylist()}
    for cid in ("RtStudy__p1", "RtStudy__p2"):
        assert sorted(cases[cid]["label_keys"]) == ["GTV", "Liver"]
        assert cases[cid]["label_overlap_voxels"] == int((want["Liver"] & want["GTV"]).sum()) > 0
        assert raw[(cid, "Liver")] == int(want["Liver"].sum()) and raw[(cid, "GTV")] == int(want["GTV"].sum())
        store = CaseStore(tmp_path / "workspace" / "stores" / f"{cid}.zarr")
        assert store.mask("liver").sum() == want["Liver"].sum() and store.mask("liver_tumor").sum() == want["GTV"].sum()
    labels = {(r["case_id"], r["term_id"]) for r in table(pipe, "labels").to_pylist() if r["present"]}
    assert {("RtStudy__p1", "liver"), ("RtStudy__p1", "liver_tumor"), ("RtStudy__p2", "liver_tumor")} <= labels


def test_a_damaged_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    seg = _case(tmp_path, "p2", "seg")
    ct = read_volume(tmp_path / "p2" / "ct")
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - 40])  # the pixel data cut short: the header still names the segments
    with pytest.raises(InputError) as e:
        read_volume(seg, role="label", grid=ct.geometry, structure="Liver")
    assert e.value.kind == "corrupt_file"
    rt = _case(tmp_path, "p1", "rtstruct")
    rt.write_bytes(rt.read_bytes()[:200])  # no structure set left to read
    from curator.io.structures import structures_in

    assert structures_in(rt) is None


def test_sources_check_lists_the_structures_inside_the_files_with_their_terms(tmp_path: Path) -> None:
    from curator.ingest.check import check_source

    root = tmp_path / "download"
    _case(root, "p1", "rtstruct")
    spec = {"name": "RtStudy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation_key": "x", "citation": "@misc{x, title={x}}",
            "layout": [{"image": "{case}/ct/", "label": "{case}/labels/*.dcm"}],
            "labels": {"encoding": "per_structure", "structures": {"GTV": "liver tumor"}}}
    yml = tmp_path / "RtStudy.yaml"
    yml.write_text(yaml.safe_dump(spec))
    r = check_source(str(yml), root, sample=None)
    rows = {v["value"]: v for v in r.values}
    assert rows["GTV"]["declared"] and rows["GTV"]["cases"] == 1
    assert not rows["Liver"]["declared"] and rows["Liver"]["suggest"] == "liver"  # named in the file, not mapped


def test_scanline_fill_matches_scikit_image_on_random_polygons() -> None:
    """polygon_mask against scikit-image's draw.polygon (the reference) on random polygons: convex,
    concave and self-crossing (parity), partly outside the plane."""
    from skimage.draw import polygon

    from curator.io.rtstruct import polygon_mask

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(3, 30))
        r, c = rng.uniform(-10, 70, n), rng.uniform(-10, 60, n)
        if trial % 3 == 0:  # a star-shaped (concave) polygon around a centre
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(5, 30, n)
            r, c = 30 + rad * np.cos(ang), 25 + rad * np.sin(ang)
        want = np.zeros((60, 50), np.uint8)
        rr, cc = polygon(r, c, shape=want.shape)
        want[rr, cc] = 1
        assert np.array_equal(polygon_mask(r, c, want.shape), want), trial


def test_a_label_drawn_on_another_series_is_said(tmp_path: Path) -> None:
    """A SEG or RTSTRUCT of another series at the same positions (another phase of a 4-D CT) fits
    the grid; it is read, and ingest says it cites another series — without naming the UIDs."""
    root = tmp_path / "download"
    _case(root, "p1", "rtstruct")
    _case(root, "p2", "seg")
    other = write_dicom_series(tmp_path / "other", image_array(5, G.shape).astype(float), G)
    write_rtstruct(root / "p1" / "labels", G, ROIS, series=other)  # the same contours, citing the other series
    spec = {"name": "RtStudy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{x, title={x}}", "layout": [{"image": "{case}/ct/", "label": "{case}/labels/*.dcm"}],
            "labels": {"encoding": "per_structure", "structures": {"Liver": "liver", "GTV": "liver tumor"}}}
    yml = tmp_path / "RtStudy.yaml"
    yml.write_text(yaml.safe_dump(spec))
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    run(pipe, stages=["ingest"])
    said = [p for p in table(pipe, "problems__ingest").to_pylist() if p["kind"] == "label_other_series"]
    assert [(p["case_id"], p["severity"]) for p in said] == [("RtStudy__p1", "warning")]  # once per file, p2 cites its own
    import pydicom

    uid = str(pydicom.dcmread(other[0], stop_before_pixels=True).SeriesInstanceUID)
    assert uid not in said[0]["message"]
    raw = {(r["case_id"], r["label_key"]) for r in table(pipe, "raw_labels").to_pylist()}
    assert {("RtStudy__p1", "Liver"), ("RtStudy__p1", "GTV")} <= raw  # read all the same
