"""PET's own intensity window (stages.preprocess.pet_percentiles / pet_clip): with MR's 0.5–99.5th
percentile clip, an SUV 14.7 lesion gave the network the same input as SUV 2.5 liver (tester 23)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from curator.errors import ConfigError
from curator.io.volume import Geometry
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import Prepared, preprocess_arrays
from curator.preprocess.intensity import normalisation
from curator.store import CaseStore
from curator.testing.layouts import save_nifti
from curator.testing.pipelines import make_pipeline, run, table, write_dataset_yaml
from curator.torch.dataset import PatchDataset

LESION, LIVER = 14.7, 2.5


def _pet() -> tuple[np.ndarray, Geometry]:
    """An SUV phantom: air 0, a body at SUV 1, a liver at 2.5 (2 % of the grid) holding a 5×5×3
    lesion at 14.7 (0.15 %: above MR's 99.5th percentile, so that window ends in the liver)."""
    shape = (64, 64, 12)
    x, y = np.meshgrid(np.arange(64) - 31.5, np.arange(64) - 31.5, indexing="ij")
    suv = np.zeros(shape, np.float32)
    suv[((x / 28) ** 2 + (y / 22) ** 2 < 1)[..., None].repeat(12, axis=2)] = 1.0
    suv[20:36, 20:36, 2:6] = LIVER
    suv[26:31, 26:31, 3:6] = LESION
    return suv, Geometry.from_affine(shape, np.diag([1.0, 1.0, 3.0, 1.0]))


def _prep(settings: dict[str, Any], modality: str = "PET") -> Prepared:
    """The phantom preprocessed on its own grid (1 × 1 × 3 mm), uncropped: the window is the test's subject."""
    suv, geom = _pet()
    return preprocess_arrays(suv, geom, [], modality, PreprocessConfig.from_dict({"crop": "none", **settings}))


def _network_input(tmp_path: Path, prep: Prepared) -> tuple[np.ndarray, CaseStore]:
    """The loader's normalised image of the whole store, from the store's own attributes."""
    store = CaseStore.create(tmp_path / "pet.zarr", geometry=prep.geometry, attrs=prep.attrs, image=prep.image,
                             body=prep.body)
    store = CaseStore(store.path)  # attributes as read back from zarr.json
    shape = prep.geometry.shape
    out = np.empty(shape, np.float32)
    whole = tuple(slice(0, n) for n in shape)
    PatchDataset._image(SimpleNamespace(normalise=True), out, store, "PET", whole, whole)  # type: ignore[arg-type]
    return out, store


def _values(net: np.ndarray, prep: Prepared) -> tuple[float, float]:
    """Network input at the lesion and in the liver around it, on the store grid."""
    suv = prep.image.astype(np.float32) * np.float32(prep.attrs["normalisation"]["scale"])  # type: ignore[union-attr]
    lesion, liver = suv > 10, np.isclose(suv, LIVER)
    assert lesion.sum() == 75 and liver.sum() > 900
    return float(np.median(net[lesion])), float(np.median(net[liver]))


def test_default_pet_window_is_mr_s_and_flattens_the_lesion(tmp_path: Path) -> None:
    """Unchanged unless set: PET takes mr_percentiles, the stored attributes are those of before
    (no new key), and the pipeline's config hash (so every cached case) is the same."""
    prep = _prep({})
    assert prep.attrs["normalisation"] == _prep({}, "MR").attrs["normalisation"]
    assert set(prep.attrs["normalisation"]) == {"kind", "clip", "mean", "std", "scale"}
    assert prep.attrs["normalisation"]["kind"] == "percentile" and prep.attrs["normalisation"]["clip"][1] == LIVER
    net, _ = _network_input(tmp_path, prep)
    lesion, liver = _values(net, prep)
    assert lesion == liver  # what the setting is for
    before = "40b97db9fd4237d3"  # PreprocessConfig().config_hash() before the two settings existed
    assert PreprocessConfig().config_hash() == PreprocessConfig.from_dict({"pet_clip": []}).config_hash() == before
    assert PreprocessConfig.from_dict({"pet_clip": [0, 20]}).config_hash() != before


def test_pet_clip_is_a_fixed_suv_window_the_loader_applies(tmp_path: Path) -> None:
    prep = _prep({"pet_clip": [0, 20]})
    norm = prep.attrs["normalisation"]
    assert norm["kind"] == "fixed" and norm["clip"] == [0.0, 20.0]
    net, store = _network_input(tmp_path, prep)
    # the loader's input is (clip(SUV, 0, 20) − mean) / std with the stored mean and std ...
    suv = store.physical_image().astype(np.float64)
    clipped = np.clip(suv, 0.0, 20.0)
    assert norm["mean"] == pytest.approx(clipped.mean(), rel=1e-6)
    assert norm["std"] == pytest.approx(clipped.std(), rel=1e-6)
    assert np.allclose(net, (clipped - clipped.mean()) / clipped.std(), atol=1e-5)
    # ... so the lesion keeps its contrast: 14.7 / 2.5 above the background, as in SUV
    lesion, liver = _values(net, prep)
    zero = (0.0 - norm["mean"]) / norm["std"]
    assert (lesion - zero) / (liver - zero) == pytest.approx(LESION / LIVER, rel=2e-3)
    # MR in the same pipeline keeps its percentile window
    assert _prep({"pet_clip": [0, 20]}, "MR").attrs["normalisation"] == _prep({}, "MR").attrs["normalisation"]


def test_pet_percentiles_up_to_100_keep_the_hottest_voxel(tmp_path: Path) -> None:
    """100 is the exact maximum (a float image's percentiles come from an even sample)."""
    prep = _prep({"pet_percentiles": [0.5, 100]})
    norm = prep.attrs["normalisation"]
    assert norm["kind"] == "percentile"
    assert norm["clip"] == [0.0, float(np.max(prep.image.astype(np.float32)))]  # type: ignore[union-attr]
    assert norm["clip"][1] == pytest.approx(LESION, abs=0.01)
    net, _ = _network_input(tmp_path, prep)
    lesion, liver = _values(net, prep)
    zero = (0.0 - norm["mean"]) / norm["std"]
    assert (lesion - zero) / (liver - zero) == pytest.approx(LESION / LIVER, rel=2e-3)
    # a sampled float image: the maximum is exact even where the sample skips the hottest voxel
    big = np.ones((4_100_000,), np.float32)
    big[1] = 99.0
    got = normalisation(big, "PET", (-500.0, 1000.0), (0.5, 99.5), pet_percentiles=(0.0, 100.0))
    assert got["clip"] == [1.0, 99.0]


@pytest.mark.parametrize(("settings", "says"), [
    ({"pet_clip": [20, 0]}, "pet_clip = "),
    ({"pet_clip": [5]}, "pet_clip = "),
    ({"pet_percentiles": [0.5, 101]}, "pet_percentiles = "),
    ({"pet_clip": [0, 20], "pet_percentiles": [0.5, 100]}, "both"),
])
def test_bad_pet_windows_are_config_errors(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        PreprocessConfig.from_dict(settings)


BQML = 5000.0  # Bq/mL per SUV (about 350 MBq injected into 70 kg)


def test_a_window_that_flattens_the_body_is_a_warning_naming_the_case(tmp_path: Path) -> None:
    """``pet_clip: [0, 20]`` (SUV) over a PET stored in Bq/mL clipped every body voxel to 20: std 0,
    stored as 1, an all-zero network input, and no problem row (tester 27). The same window over
    the SUV image, and the default percentiles over the Bq/mL one, are not warned of."""
    suv, geom = _pet()
    save_nifti(tmp_path / "raw" / "suv.nii.gz", suv, geom, np.float32)
    save_nifti(tmp_path / "raw" / "bqml.nii.gz", suv * np.float32(BQML), geom, np.float32)
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}.nii.gz"}], {"encoding": "none"}, name="Pet",
                             modality="PET")
    stages = {"preprocess": {"target_spacing_mm": [1.0, 1.0, 3.0], "pet_clip": [0, 20]},
              "harmonize": {"enabled": False}, "qc": {"enabled": False}, "pseudolabel": {"enabled": False}}
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(tmp_path / "raw")}], stages=stages)
    run(pipe, stages=["ingest", "dedup", "preprocess"])
    rows = [(p["case_id"], p["kind"], p["severity"], p["message"]) for p in table(pipe, "problems__preprocess")
            .to_pylist()]
    assert [r[:3] for r in rows] == [("Pet__bqml", "normalisation_no_contrast", "warning")], rows
    msg = rows[0][3]
    assert "[0, 20] (stages.preprocess.pet_clip) clips 100.0 % of the body's voxels to its upper bound 20" in msg
    store = CaseStore(tmp_path / "workspace" / "stores" / "Pet__bqml.zarr")
    body = store.physical_image()[store.body()]
    assert body.min() > 20 and np.isclose(body.max(), LESION * BQML, rtol=1e-3)  # the lesion's Bq/mL
    assert f"run {body.min():.6g}..{body.max():.6g}" in msg
    # every body voxel clipped to 20: the input is constant inside the body; the crop's air margin
    # keeps a std (not std 0 stored as 1, an all-zero input), so the row says "no contrast left"
    assert store.attrs["normalisation"]["std"] > 1.0
    assert "(no contrast left)" in msg and "all zeros" not in msg
    assert "Bq/mL" in msg and "pet_percentiles" in msg.split("What to do:")[1]
    # each image's own window keeps the Bq/mL image's contrast: nothing to say
    assert _prep({"pet_percentiles": [0.5, 100]}).flat_window is None
    own = PreprocessConfig.from_dict({"crop": "none", "pet_percentiles": [0.5, 100]})
    bq = preprocess_arrays(suv * np.float32(BQML), geom, [], "PET", own)
    assert bq.flat_window is None and bq.attrs["normalisation"]["std"] > 1
    # a window of the image's own percentiles clips no more than those percentiles beyond it
    assert _prep({}).flat_window is None


def test_a_ct_not_in_hu_under_ct_clip_is_warned_of_too() -> None:
    """A CT's body stored +3000 (not HU) lies above ct_clip's 1000 throughout."""
    g = Geometry.from_affine((32, 32, 6), np.diag([2.0, 2.0, 3.0, 1.0]))
    ct = np.full(g.shape, -1000, np.int16)
    ct[6:26, 6:26, :] = 40 + (np.arange(20) % 7)[:, None, None].astype(np.int16)
    cfg = PreprocessConfig.from_dict({"crop": "none", "target_spacing_mm": [2.0, 2.0, 3.0]})
    assert preprocess_arrays(ct, g, [], "CT", cfg).flat_window is None
    issue = preprocess_arrays(ct + np.int16(3000), g, [], "CT", cfg).flat_window
    assert issue is not None and issue.kind == "normalisation_no_contrast"
    assert "[-500, 1000] (stages.preprocess.ct_clip)" in str(issue) and "intensity_offset" in str(issue)


def test_both_exports_of_a_pet_clip_release_say_the_window_is_not_applied(tmp_path: Path) -> None:
    """The nnU-Net export said so (tester 27); the MONAI export wrote the same unclipped PET values
    silently, where a MONAI pipeline applies no window unless given one."""
    from curator.export import export_monai, export_nnunet

    suv, geom = _pet()
    save_nifti(tmp_path / "raw" / "p1.nii.gz", suv, geom, np.float32)
    save_nifti(tmp_path / "raw" / "p1_seg.nii.gz", (suv == LIVER).astype(np.uint8), geom, np.uint8)
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}.nii.gz", "label": "{case}_seg.nii.gz"}],
                             {"encoding": "label_map", "values": {1: "liver"}}, name="Pet", modality="PET")
    stages = {"preprocess": {"target_spacing_mm": [1.0, 1.0, 3.0], "pet_clip": [0, 20]},
              "qc": {"enabled": False}, "pseudolabel": {"enabled": False}}
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(tmp_path / "raw")}], stages=stages)
    release = run(pipe, release=True).release
    assert release is not None
    monai = export_monai(release, tmp_path / "monai", terms=["liver"])
    note = [n for n in monai.notes if "pet_clip" in n]
    assert len(note) == 1 and "MONAI's transforms apply no window of their own" in note[0]
    assert "ScaleIntensityRanged(keys, a_min=0, a_max=20, b_min=0, b_max=20, clip=True) for the PET images" in note[0]
    nnunet = export_nnunet(release, tmp_path / "nnunet", terms=["liver"], dataset_id=501, name="Pet")
    assert any("nnU-Net normalises channel" in n and "pet_clip: [0, 20]" in n for n in nnunet.notes)
    # the written image is the unclipped PET, as the notes say
    written = nib.load(tmp_path / "monai" / "images" / "Pet__p1.nii.gz").get_fdata()
    assert written.max() == pytest.approx(LESION, abs=0.01)
