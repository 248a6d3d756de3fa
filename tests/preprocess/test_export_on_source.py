"""Exports on the source grid (`--grid source --pipeline pipeline.yaml`): each case's image as its
dataset ships it and its label from the dataset's label files through the harmonize mapping,
checked against the release — so a test reference is the dataset's annotation, not a resampled
copy (tester 40's finding 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from curator.config import PipelineConfig
from curator.errors import ConfigError, ReleaseError
from curator.export import export_monai, export_nnunet
from curator.export.map_back import map_back
from curator.pipeline import run_pipeline
from curator.preprocess.terms import term_id
from tests.preprocess.conftest import MultiSeq, Oriented, Tiny
from tests.preprocess.test_export import NNUNET_CHECK, _client, _run

TERMS = [term_id("kidney"), term_id("kidney tumor"), term_id("kidney cyst")]  # raw values 1, 2, 3
ORIGINAL = ("original",)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_a_source_grid_export_holds_the_dataset_own_files(oriented: Oriented, tmp_path: Path) -> None:
    """LPS, RAS, IPL and oblique sources: each label file is the dataset's segmentation (its raw
    values are the export's 1, 2, 3), each image its imaging file in HU (the dataset's +1024 offset
    undone), on the file's own grid; two workers write the same files."""
    pipeline = oriented.root / "pipeline.yaml"
    reports = {w: export_nnunet(oriented.release, tmp_path / f"nn{w}", dataset_id=550, name="Src", terms=TERMS,
                                grid="source", pipeline=pipeline, layers=ORIGINAL, workers=w) for w in (1, 2)}
    folder = reports[1].folder
    assert sorted(reports[1].cases) == sorted(oriented.sources)
    one, two = _files(folder), _files(reports[2].folder)
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one)
    info = json.loads((folder / "curator_export.json").read_text())
    assert info["grid"].startswith("source:")
    for name in oriented.sources:
        case = oriented.root / "kits" / "dataset" / name.split("__")[1]
        seg, img = nib.load(case / "segmentation.nii.gz"), nib.load(case / "imaging.nii.gz")
        lab, out = nib.load(folder / "labelsTr" / f"{name}.nii.gz"), nib.load(folder / "imagesTr" / f"{name}_0000.nii.gz")
        assert lab.shape == seg.shape and np.allclose(lab.affine, seg.affine, atol=1e-4), name
        assert np.array_equal(_array(folder / "labelsTr" / f"{name}.nii.gz"), np.asarray(seg.dataobj)), name
        assert out.shape == img.shape and np.allclose(out.affine, img.affine, atol=1e-4), name
        assert np.array_equal(np.asarray(out.dataobj), np.asarray(img.dataobj).astype(np.int32) - 1024), name
        rec = info["grids"][name]
        assert rec["export_shape"] == rec["source_shape"] == list(seg.shape) and rec["crop_start"] is None
        assert np.allclose(rec["export_affine"], rec["source_affine"])
    back = map_back(folder, folder / "labelsTr", tmp_path / "back")  # the identity on the source grid
    assert sorted(back.mapped) == sorted(oriented.sources) and not back.coarser
    mon = export_monai(oriented.release, tmp_path / "monai", terms=TERMS, grid="source", pipeline=pipeline,
                       layers=ORIGINAL)
    for name in oriented.sources:
        assert _array(mon.folder / "labels" / f"{name}.nii.gz").tobytes() == \
            _array(folder / "labelsTr" / f"{name}.nii.gz").tobytes()


def test_the_source_grid_export_decides_as_the_store_grid_one(tiny: Tiny, tmp_path: Path) -> None:
    """Which cases, which terms each holds, --partial's ignore voxels (TotalSegmentator's kidneys,
    which may hold the tumour it does not label) and per-structure masks are the store grid's
    choices: where resampling loses nothing (8 x 8 x 10 mm at 4 x 4 x 5) the store-grid export
    mapped back is the source-grid export, voxel for voxel."""
    terms = [term_id("kidney"), term_id("kidney tumor")]
    store = export_nnunet(tiny.release, tmp_path / "a", dataset_id=551, name="Store", terms=terms, partial=True,
                          layers=ORIGINAL)
    source = export_nnunet(tiny.release, tmp_path / "b", dataset_id=552, name="Source", terms=terms, partial=True,
                           layers=ORIGINAL, grid="source", pipeline=tiny.root / "pipeline.yaml")
    assert store.cases == source.cases and store.unknown == source.unknown and len(store.cases) == 5
    assert any(c.startswith("TinyTotalSeg") for c in source.ignored), source.ignored  # the ignore label is there
    back = map_back(store.folder, store.folder / "labelsTr", tmp_path / "back")
    for name in store.cases:
        got, want = nib.load(tmp_path / "back" / f"{name}.nii.gz"), nib.load(source.folder / "labelsTr" / f"{name}.nii.gz")
        assert got.shape == want.shape and np.allclose(got.affine, want.affine, atol=1e-4), name
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj)), name
    assert back.mapped


def _copy_sources(oriented: Oriented, tmp_path: Path, **source: object) -> Path:
    """A copy of the oriented sources and a pipeline.yaml naming it (``source``: more settings)."""
    shutil.copytree(oriented.root / "kits", tmp_path / "kits")
    cfg = yaml.safe_load((oriented.root / "pipeline.yaml").read_text())
    cfg["sources"][0].update(root=str(tmp_path / "kits"), **source)
    cfg["workspace"] = str(tmp_path / "ws")
    cfg["release"]["root"] = str(tmp_path / "releases")
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "pipeline.yaml"


def test_source_files_changed_since_the_release_are_refused(oriented: Oriented, tmp_path: Path) -> None:
    pipeline = _copy_sources(oriented, tmp_path)
    case = tmp_path / "kits" / "dataset" / "case_00002"
    seg_file, img_file = case / "segmentation.nii.gz", case / "imaging.nii.gz"
    released = {f: f.read_bytes() for f in (seg_file, img_file)}
    seg = nib.load(seg_file)
    a = np.asarray(seg.dataobj).copy()
    a[a == 2] = 1  # the tumour relabelled kidney
    nib.save(nib.Nifti1Image(a, seg.affine), seg_file)

    def export() -> None:
        export_nnunet(oriented.release, tmp_path / "out", dataset_id=553, name="Changed", terms=TERMS,
                      grid="source", pipeline=pipeline, layers=ORIGINAL)

    with pytest.raises(ReleaseError) as e:
        export()
    assert e.value.path == str(seg_file), e.value
    assert "case TinyKits__case_00002" in e.value.detail and "differs from the store's" in e.value.detail
    assert not list((tmp_path / "out").glob("Dataset553_*"))  # nothing left behind
    seg_file.write_bytes(released[seg_file])
    img = nib.load(img_file)
    b = np.asarray(img.dataobj).copy()
    b[0, 0, 0] += 1
    nib.save(nib.Nifti1Image(b, img.affine), img_file)
    with pytest.raises(ReleaseError, match="voxel_sha256") as e:
        export()
    assert e.value.path == str(img_file)
    img_file.write_bytes(released[img_file])
    export()  # the files as released: written


def test_a_source_with_pseudonymous_ids_is_read_from_the_workspace(oriented: Oriented, tmp_path: Path) -> None:
    """Its release publishes no file paths; the pipeline's workspace holds them."""
    pipeline = _copy_sources(oriented, tmp_path, pseudonymous_ids=True)
    result = run_pipeline(PipelineConfig.load(pipeline), stages=["ingest", "preprocess"])
    assert result.release is not None
    rep = export_nnunet(result.release, tmp_path / "out", dataset_id=554, name="Pseudo", terms=TERMS,
                        grid="source", pipeline=pipeline, layers=ORIGINAL)
    info = json.loads((rep.folder / "curator_export.json").read_text())
    assert len(rep.cases) == 4 and all(r["image_path"] is None and r["label_paths"] is None
                                       for r in info["grids"].values())
    segs = sorted(_array(p).tobytes() for p in (tmp_path / "kits" / "dataset").glob("*/segmentation.nii.gz"))
    assert sorted(_array(p).tobytes() for p in (rep.folder / "labelsTr").glob("*.nii.gz")) == segs


def test_channels_on_the_source_grid_are_the_sequence_files(multiseq: MultiSeq, tmp_path: Path) -> None:
    """Study 0's t2f store was cropped apart from its t1c's; on the source grid both are the files."""
    rep = export_nnunet(multiseq.release, tmp_path, dataset_id=555, name="Chan", terms=[term_id("kidney")],
                        channels=["t1c", "t2f"], grid="source", pipeline=multiseq.root / "pipeline.yaml",
                        layers=ORIGINAL)
    assert sorted(rep.cases) == ["TinyBrats__study0", "TinyBrats__study1"] and not rep.resampled
    for study in ("study0", "study1"):
        for k, seq in enumerate(("t1c", "t2f")):
            g, image = multiseq.images[f"TinyBrats__{study}__{seq}"]
            out = nib.load(rep.folder / "imagesTr" / f"TinyBrats__{study}_{k:04d}.nii.gz")
            assert np.array_equal(np.asarray(out.dataobj), image) and np.allclose(out.affine, g.matrix, atol=1e-4)
        seg = _array(multiseq.root / "brats" / study / f"{study}-seg.nii.gz")
        assert np.array_equal(_array(rep.folder / "labelsTr" / f"TinyBrats__{study}.nii.gz"), (seg == 1).astype(np.uint8))


def test_what_a_source_grid_export_needs_is_asked_for(oriented: Oriented, tmp_path: Path) -> None:
    pipeline = oriented.root / "pipeline.yaml"
    cases = [({"grid": "source"}, "add --pipeline"),
             ({"grid": "source", "pipeline": pipeline}, "add --layers original"),
             ({"pipeline": pipeline, "layers": ORIGINAL}, "add --grid source"),
             ({"grid": "native", "pipeline": pipeline, "layers": ORIGINAL}, "give preprocessed")]
    for kw, said in cases:
        with pytest.raises(ConfigError) as e:
            export_nnunet(oriented.release, tmp_path, dataset_id=556, name="Ask", terms=TERMS, **kw)  # type: ignore[arg-type]
        assert said in f"{e.value.detail} {e.value.remedy}", (kw, e.value)
    other = tmp_path / "other.yaml"
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["sources"] = [{"dataset": "MSD_Spleen", "root": str(tmp_path)}]
    other.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="source 'TinyKits' is not among the sources of other.yaml"):
        export_nnunet(oriented.release, tmp_path / "o", dataset_id=557, name="Other", terms=TERMS, grid="source",
                      pipeline=other, layers=ORIGINAL)
    from curator.cli import app

    res = CliRunner().invoke(app, ["export", "monai", str(oriented.release), "--terms", "kidney", "--out",
                                   str(tmp_path / "m"), "--grid", "source"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "--grid source reads each case's source files" in said and "add --pipeline" in said


def test_nnunet_accepts_a_source_grid_export(oriented: Oriented, tmp_path: Path) -> None:
    """nnU-Net's integrity check compares each image's geometry with its label's: oblique and
    permuted source grids alike."""
    rep = export_nnunet(oriented.release, tmp_path, dataset_id=558, name="SrcCheck", terms=TERMS, grid="source",
                        pipeline=oriented.root / "pipeline.yaml", layers=ORIGINAL)
    assert "INTEGRITY OK" in _run(_client("nnunetv2"), NNUNET_CHECK, str(rep.folder))
