"""The demo release's exports mapped back onto the source scans' grids (tester 40's finding 3): its
sources are 5-8 mm scans in LPS, IPL and RAS — NIfTI label maps, TotalSegmentator's per-structure
masks, a DICOM series with a NIfTI label — exported at 2 x 2 x 4 mm, finer along every axis, so
each exported reference mapped back is the dataset's own label file, voxel for voxel."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from curator.export import export_monai, export_nnunet
from curator.export.map_back import map_back


@pytest.fixture(scope="module")
def rel(demo_base: Path) -> Path:
    return demo_base / "releases" / "demo" / "0.1.0"


def _roots(demo_base: Path) -> dict[str, Path]:
    """Each source's root, from the demo's pipeline.yaml (a source is named after its dataset)."""
    cfg = yaml.safe_load((demo_base / "pipeline.yaml").read_text())
    out = {}
    for s in cfg["sources"]:
        name = s.get("name") or Path(s["dataset"]).stem
        out[name] = (demo_base / s["root"]).resolve()
    return out


# (terms, where, which label file holds the exported codes 1..n as the dataset's raw values)
CASES = {
    "KiTS' label maps (IPL, LPS)": (["kidney", "kidney_tumor", "kidney_cyst"], "dataset = 'KiTS23'", None),
    "per-structure masks (TotalSegmentator)": (["spleen"], "dataset = 'DemoTotalSeg'", "spleen"),
    "a DICOM series with a NIfTI label": (["pancreas"], "dataset = 'DemoPancreasDICOM'", None),
    "MSD's label map": (["spleen"], "dataset = 'MSD_Spleen'", None),
}


@pytest.mark.parametrize("what", list(CASES))
@pytest.mark.parametrize("kind", ["nnunet", "monai"])
def test_the_exported_reference_maps_back_onto_the_dataset_label_files(rel: Path, demo_base: Path, tmp_path: Path,
                                                                       what: str, kind: str) -> None:
    terms, where, structure = CASES[what]
    if kind == "nnunet":
        rep = export_nnunet(rel, tmp_path / "raw", dataset_id=530, name="Back", terms=terms, where=where)
        labels = [*(rep.folder / "labelsTr").glob("*.nii.gz"), *(rep.folder / "labelsTs").glob("*.nii.gz")]
    else:
        rep = export_monai(rel, tmp_path / "monai", terms=terms, where=where)
        labels = list((rep.folder / "labels").glob("*.nii.gz"))
    preds = tmp_path / "preds"
    preds.mkdir()
    for f in labels:  # the exported references stand in for predictions
        (preds / f.name).write_bytes(f.read_bytes())
    back = map_back(rep.folder, preds, tmp_path / "back")
    assert len(back.mapped) == len(labels) >= 3 and not back.coarser, back
    index = json.loads((tmp_path / "back" / "map_back.json").read_text())
    roots = _roots(demo_base)
    for name, case in index["cases"].items():
        paths = case["label_paths"]
        path = next(p for p in paths if Path(p).name.startswith(structure + ".")) if structure else paths[0]
        src = nib.load(roots[case["source"]] / path)
        got = nib.load(tmp_path / "back" / f"{name}.nii.gz")
        assert got.shape == src.shape and np.allclose(got.affine, src.affine, atol=1e-3), name
        raw, mapped = np.asarray(src.dataobj), np.asarray(got.dataobj)
        assert mapped.any() and np.array_equal(mapped, raw.astype(mapped.dtype)), (name, np.unique(raw),
                                                                                  np.unique(mapped))


def test_the_source_grid_export_is_the_store_grid_one_mapped_back(rel: Path, demo_base: Path, tmp_path: Path) -> None:
    """`--grid source` on the demo — a DICOM series, TotalSegmentator's masks, MSD's and KiTS'
    label maps, test images without labels, --partial's ignore label — writes what the store-grid
    export mapped back gives (every demo grid is upsampled: nothing is lost), except beyond the
    store's crop: there a mapped-back label is background, and the source grid's ignore label
    reaches out to the scan's edge where a term is unknown outside every known one."""
    from curator.export.source_grid import grids_of, to_source

    terms = ["kidney", "kidney_tumor", "spleen", "pancreas"]
    store = export_nnunet(rel, tmp_path / "a", dataset_id=531, name="Store", terms=terms, partial=True,
                          layers=("original",))
    source = export_nnunet(rel, tmp_path / "b", dataset_id=532, name="Source", terms=terms, partial=True,
                           layers=("original",), grid="source", pipeline=demo_base / "pipeline.yaml")
    assert store.cases == source.cases and store.images_only == source.images_only and len(store.cases) >= 10
    assert {c.split("__")[0] for c in source.cases} >= {"DemoPancreasDICOM", "DemoTotalSeg", "MSD_Spleen", "KiTS23"}
    grids = json.loads((store.folder / "curator_export.json").read_text())["grids"]
    ignore, compared = len(terms) + 1, 0
    for sub in ("labelsTr", "labelsTs"):
        if not (store.folder / sub).is_dir():
            continue
        back = map_back(store.folder, store.folder / sub, tmp_path / f"back_{sub}")
        for name in back.mapped:
            got, want = nib.load(tmp_path / f"back_{sub}" / f"{name}.nii.gz"), nib.load(source.folder / sub / f"{name}.nii.gz")
            assert got.shape == want.shape and np.allclose(got.affine, want.affine, atol=1e-3), name
            a, b = np.asarray(got.dataobj), np.asarray(want.dataobj)
            export_grid, source_grid = grids_of(grids[name])
            inside = to_source(np.ones(export_grid.shape, np.uint8), export_grid, source_grid).astype(bool)
            assert np.array_equal(a[inside], b[inside]), name
            assert not a[~inside].any() and np.isin(b[~inside], [0, ignore]).all(), name
            compared += 1
    assert compared == len(store.cases)  # every labelled case (report.cases leaves out the images_only ones)
