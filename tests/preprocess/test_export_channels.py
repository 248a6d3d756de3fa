"""Multi-channel nnU-Net exports (``channels=[...]`` / ``--channels``): the sequences of one study
as the channels of one case, each on the first sequence's store grid, as nnU-Net's own
BraTS / MSD converters write them."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from curator.errors import ConfigError
from curator.export import export_nnunet
from curator.export.channels import onto, pet_window_note, studies_of
from curator.export.common import ExportCase, ExportReport
from curator.io.volume import Geometry
from curator.preprocess.terms import term_id
from curator.store import CaseStore
from tests.preprocess.conftest import MultiSeq
from tests.preprocess.test_export import NNUNET_CHECK, _client, _files, _run

TERMS = [term_id("kidney"), term_id("kidney tumor")]
STUDIES = ("TinyBrats__study0", "TinyBrats__study1")


@pytest.fixture(scope="module")
def export(multiseq: MultiSeq, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nnunet_channels")
    rep = export_nnunet(multiseq.release, out, dataset_id=520, name="TinyBrats", terms=TERMS,
                        channels=["t1c", "t2f"])
    assert rep.cases == list(STUDIES)
    return rep.folder


def _store(multiseq: MultiSeq, case_id: str) -> CaseStore:
    return CaseStore(multiseq.release / "stores" / f"{case_id}.zarr")


def test_one_case_per_study_with_its_sequences_as_channels(export: Path) -> None:
    assert sorted(p.relative_to(export).as_posix() for p in export.rglob("*.nii.gz")) == [
        f"imagesTr/{s}_{k:04d}.nii.gz" for s in STUDIES for k in (0, 1)] + [f"labelsTr/{s}.nii.gz" for s in STUDIES]
    ds = json.loads((export / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "t1c", "1": "t2f"} and ds["numTraining"] == 2
    record = json.loads((export / "curator_export.json").read_text())
    assert record["channels"] == {"sequences": ["t1c", "t2f"], "cases": {
        s: [f"{s}__t1c", f"{s}__t2f"] for s in STUDIES}, "resampled": []}


def test_a_study_without_every_sequence_is_skipped_with_a_reason(export: Path) -> None:
    record = json.loads((export / "curator_export.json").read_text())
    assert record["skipped"] == {"TinyBrats__study2": "its study has no t2f case (selected: t1c)"}
    assert not list(export.rglob("TinyBrats__study2*"))


def test_each_channel_is_on_the_label_grid_with_the_stored_values(export: Path, multiseq: MultiSeq) -> None:
    """Study 0's t2f store was cropped to its own body (another shape and origin than its t1c's):
    its channel holds the stored values at the same physical positions, and the loader's fill
    value where the t2f store does not reach."""
    first, second = _store(multiseq, "TinyBrats__study0__t1c"), _store(multiseq, "TinyBrats__study0__t2f")
    assert first.geometry.shape != second.geometry.shape and first.geometry.origin != second.geometry.origin
    filled = 0
    for study in STUDIES:
        label = nib.load(export / "labelsTr" / f"{study}.nii.gz")
        ref = _store(multiseq, f"{study}__t1c")
        assert np.allclose(label.affine, ref.geometry.matrix) and label.shape == ref.geometry.shape
        assert np.array_equal(np.asarray(label.dataobj) == 2, ref.mask(term_id("kidney tumor")))
        for k, seq in enumerate(("t1c", "t2f")):
            img = nib.load(export / "imagesTr" / f"{study}_{k:04d}.nii.gz")
            assert img.shape == label.shape and np.allclose(img.affine, label.affine)
            got, src = np.asarray(img.dataobj), _store(multiseq, f"{study}__{seq}")
            # each exported voxel's index in the source store, through the two affines
            idx = np.indices(got.shape).reshape(3, -1)
            where = np.linalg.inv(src.geometry.matrix) @ img.affine @ np.vstack([idx, np.ones((1, idx.shape[1]))])
            pos = np.rint(where[:3]).astype(int)
            assert np.allclose(where[:3], pos, atol=1e-4)
            inside = np.all((pos >= 0) & (pos < np.array(src.geometry.shape)[:, None]), axis=0)
            stored = src.physical_image()
            assert img.get_data_dtype() == stored.dtype  # copied, not resampled (float32)
            assert np.array_equal(got.reshape(-1)[inside], stored[tuple(pos[:, inside])])
            assert np.all(got.reshape(-1)[~inside] == 0)  # MR background, not a frame of the window's bound
            filled += int((~inside).sum())
    assert filled > 0  # study 0's t2f store does not cover its t1c grid


def test_an_unknown_sequence_is_refused_naming_the_selection_s(multiseq: MultiSeq, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no selected case has the sequence t1n") as e:
        export_nnunet(multiseq.release, tmp_path, dataset_id=521, name="Bad", terms=TERMS, channels=["t1c", "t1n"])
    assert "t1c, t2f" in str(e.value)
    from curator.cli import app

    res = CliRunner().invoke(app, ["export", "nnunet", str(multiseq.release), "--terms", ",".join(TERMS),
                                   "--out", str(tmp_path), "--id", "521", "--channels", "t1c,t2x"])
    assert res.exit_code != 0 and "t2x" in res.output + (res.stderr or "")
    assert not list(tmp_path.glob("Dataset521_*"))


def test_the_cli_exports_channels_and_two_workers_write_the_same_files(multiseq: MultiSeq, export: Path,
                                                                        tmp_path: Path) -> None:
    from curator.cli import app

    res = CliRunner().invoke(app, ["export", "nnunet", str(multiseq.release), "--terms", ",".join(TERMS),
                                   "--out", str(tmp_path), "--id", "520", "--name", "TinyBrats",
                                   "--channels", "t1c, t2f", "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert _files(tmp_path / "Dataset520_TinyBrats") == _files(export)


def test_nnunet_accepts_the_multichannel_export(export: Path) -> None:
    python = _client("nnunetv2")
    assert "INTEGRITY OK" in _run(python, NNUNET_CHECK, str(export))


def test_a_grid_that_is_no_voxel_shift_is_resampled_linearly() -> None:
    """A channel of another spacing: linear interpolation, exact for a linear ramp inside its grid."""
    ref = Geometry.from_affine((12, 10, 6), np.diag([1.0, 1.0, 2.0, 1.0]))
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = (1.0, -1.0, 0.0)
    src = Geometry.from_affine((5, 6, 3), coarse)
    ijk = np.indices(src.shape).reshape(3, -1)
    xyz = (src.matrix @ np.vstack([ijk, np.ones((1, ijk.shape[1]))]))[:3]
    ramp = (3.0 * xyz[0] - 2.0 * xyz[1] + 5.0 * xyz[2] + 7.0).reshape(src.shape).astype(np.float32)
    out, resampled = onto(lambda box: ramp if box is None else ramp[box], src, ref, fill=-5.0)
    assert resampled and out.shape == ref.shape and out.dtype == np.float32
    ijk = np.indices(ref.shape).reshape(3, -1)
    world = ref.matrix @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])
    at = (np.linalg.inv(src.matrix) @ world)[:3]
    inside = np.all((at >= 0) & (at <= np.array(src.shape)[:, None] - 1), axis=0)
    want = 3.0 * world[0] - 2.0 * world[1] + 5.0 * world[2] + 7.0
    assert inside.sum() > 50 and np.allclose(out.reshape(-1)[inside], want[inside], atol=1e-4)
    far = np.any((at < -1) | (at > np.array(src.shape)[:, None]), axis=0)
    assert far.sum() > 50 and np.all(out.reshape(-1)[far] == -5.0)


def test_a_voxel_shift_copies_the_values_and_fills_outside() -> None:
    rng = np.random.default_rng(0)
    src = Geometry.from_affine((6, 5, 4), np.diag([2.0, 2.0, 3.0, 1.0]))
    shifted = np.diag([2.0, 2.0, 3.0, 1.0])
    shifted[:3, 3] = (-4.0, 2.0, 0.0)  # ref voxel (i, j, k) is source voxel (i - 2, j + 1, k)
    ref = Geometry.from_affine((6, 5, 4), shifted)
    image = rng.integers(-100, 100, src.shape).astype(np.int16)
    out, resampled = onto(lambda box: image if box is None else image[box], src, ref, fill=-7.0)
    assert not resampled and out.dtype == np.int16
    assert np.array_equal(out[2:, :4], image[:4, 1:]) and np.all(out[:2] == -7) and np.all(out[:, 4] == -7)


MONAI_CHANNELS_CHECK = """
import sys
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged
items = load_decathlon_datalist(sys.argv[1], True, "training")
for x in items:
    d = LoadImaged(keys=["image", "label"], ensure_channel_first=True)(x)
    print("CASE", x["case_id"], tuple(d["image"].shape), tuple(d["label"].shape))
"""


def test_monai_lists_each_study_s_channels_on_the_label_grid(multiseq: MultiSeq, export: Path,
                                                            tmp_path: Path) -> None:
    """The MONAI export writes the nnU-Net export's images (same channels, same bytes), listed
    per study as ``image: [channel files]``."""
    from curator.export import export_monai

    rep = export_monai(multiseq.release, tmp_path / "monai", terms=TERMS, channels=["t1c", "t2f"])
    assert rep.cases == list(STUDIES) and set(rep.skipped) == {"TinyBrats__study2"}
    data = json.loads((tmp_path / "monai" / "datalist.json").read_text())
    assert data["channel_names"] == {"0": "t1c", "1": "t2f"}
    assert [(e["case_id"], e["image"], e["label"], e["channels"], e["modality"]) for e in data["training"]] == [
        (s, [f"images/{s}_0000.nii.gz", f"images/{s}_0001.nii.gz"], f"labels/{s}.nii.gz",
         [f"{s}__t1c", f"{s}__t2f"], ["MR", "MR"]) for s in STUDIES]
    for s in STUDIES:
        for k in (0, 1):
            assert (tmp_path / "monai" / "images" / f"{s}_{k:04d}.nii.gz").read_bytes() == \
                (export / "imagesTr" / f"{s}_{k:04d}.nii.gz").read_bytes()
        assert (tmp_path / "monai" / "labels" / f"{s}.nii.gz").read_bytes() == \
            (export / "labelsTr" / f"{s}.nii.gz").read_bytes()
    python = _client("monai")
    out = _run(python, MONAI_CHANNELS_CHECK, str(tmp_path / "monai" / "datalist.json"))
    shape = nib.load(export / "labelsTr" / f"{STUDIES[0]}.nii.gz").shape
    assert f"CASE {STUDIES[0]} {(2, *shape)} {(1, *shape)}" in out


def test_a_study_with_a_damaged_channel_store_is_skipped(multiseq: MultiSeq, tmp_path: Path) -> None:
    """A chunk of study 0's t2f store changed on disk: the study is left out, named with the
    reason; the other study is exported."""
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(multiseq.release, rel)
    chunk = next(p for p in sorted((rel / "stores" / "TinyBrats__study0__t2f.zarr" / "image").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes() + b"x")
    rep = export_nnunet(rel, tmp_path / "out", dataset_id=522, name="Damaged", terms=TERMS, channels=["t1c", "t2f"])
    assert rep.cases == ["TinyBrats__study1"] and set(rep.skipped) == {"TinyBrats__study0", "TinyBrats__study2"}
    assert "TinyBrats__study0__t2f" in rep.skipped["TinyBrats__study0"]
    assert not list(rep.folder.rglob("TinyBrats__study0*"))


def _case(case_id: str, modality: str, sequence: str | None, study: str | None) -> ExportCase:
    return ExportCase(case_id, case_id.split("__")[0], modality, Path(f"{case_id}.zarr"), [], "train", sequence, study)


def test_ct_and_pet_channels_are_named_as_nnunet_normalises_them() -> None:
    """HECKTOR-like: CT + PET of one study; a CT channel is "CT" (CTNormalization), the other its
    sequence (z-score). A case without study_key and a study with two PET cases are skipped."""
    cases = [_case("H__p1__ct", "CT", "ct", "s1"), _case("H__p1__pet", "PT", "pet", "s1"),
             _case("H__p2__ct", "CT", "ct", "s2"), _case("H__p2__pet", "PT", "pet", "s2"),
             _case("H__p3__ct", "CT", "ct", None), _case("H__p4__ct", "CT", "ct", "s4"),
             _case("H__p4__pet", "PT", "pet", "s4"), _case("H__p4__pet2", "PT", "pet", "s4")]
    report = ExportReport(Path("out"))
    studies, names = studies_of(cases, ["ct", "pet"], report, Path("rel"))
    assert names == {"0": "CT", "1": "pet"}
    assert [(s.name, [c.case_id for c in s.cases]) for s in studies] == [
        ("H__p1", ["H__p1__ct", "H__p1__pet"]), ("H__p2", ["H__p2__ct", "H__p2__pet"])]
    assert report.skipped == {"H__p3__ct": "has no study_key: its study's other sequences are unknown",
                              "H__p4": "its study has several cases of one sequence: pet: H__p4__pet, H__p4__pet2"}
    with pytest.raises(ConfigError, match=r"channel 1 \(pet\) mixes modalities \['MR', 'PT'\]"):
        studies_of([*cases[:3], _case("H__p2__pet", "MR", "pet", "s2")], ["ct", "pet"], ExportReport(Path("o")),
                   Path("rel"))
    with pytest.raises(ConfigError, match="give each sequence once"):
        studies_of(cases, ["ct", "ct"], ExportReport(Path("o")), Path("rel"))


def test_a_pet_window_the_export_does_not_apply_is_said_in_its_notes() -> None:
    """pet_clip / pet_percentiles reach the torch loader, not nnU-Net: the export writes physical
    values and nnU-Net z-scores the PET channel itself — said, with how to apply the window
    (tester 27: nothing in the notes nor curator_export.json said so)."""
    cases = [_case("H__p1__ct", "CT", "ct", "s1"), _case("H__p1__pet", "PET", "pt", "s1")]
    studies, names = studies_of(cases, ["ct", "pt"], ExportReport(Path("out")), Path("rel"))
    note = pet_window_note({"pet_clip": [0, 20]}, studies, names)
    assert note is not None and note.startswith("the release's PET stores were normalised with "
                                                "stages.preprocess.pet_clip: [0, 20]")
    assert "nnU-Net normalises channel pt itself" in note and "clip the exported pt images to [0, 20]" in note
    pct = pet_window_note({"pet_percentiles": [0.5, 100]}, studies, names)
    assert pct is not None and "clip each exported pt image to its own [0.5, 100] percentiles" in pct
    assert pet_window_note({}, studies, names) is None  # MR's window, nnU-Net's own z-score: nothing to say
    ct_only, ct_names = studies_of(cases[:1], None, ExportReport(Path("out")), Path("rel"))
    assert pet_window_note({"pet_clip": [0, 20]}, ct_only, ct_names) is None
    # MONAI: the transform that applies it, on the PET channel
    monai = pet_window_note({"pet_percentiles": [0.5, 100]}, studies, names, tool="monai")
    assert monai is not None and "nnU-Net" not in monai
    assert "ScaleIntensityRangePercentilesd(keys, lower=0.5, upper=100, b_min=0, b_max=1, clip=True) for channel pt" \
        " (split that channel out first" in monai
