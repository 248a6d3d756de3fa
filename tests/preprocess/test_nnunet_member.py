"""An nnU-Net v2 model planned on curator's own nnU-Net export runs as a pseudolabel member
(``kind: nnunet``) and gives nnUNetPredictor's probabilities.

nnU-Net plans the tiny export and builds its planned network with a fixed seed; nnU-Net's own
trainer saves it as checkpoint_final.pth (no training: the weights only need to be the same on
both sides). Both then label one exported case, already on the model's spacing (no resampling
either side), padded to 1.5 patches per axis so that windows overlap. Runs in
``$CURATOR_TOOLS_PYTHON`` (a venv with nnunetv2); skips when there is none."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from curator.export import export_nnunet
from curator.preprocess.terms import term_id
from curator.pseudolabel.loading import LoadedModel, load_model
from curator.pseudolabel.models import ModelSpec
from curator.pseudolabel.reader import SlabReader
from curator.pseudolabel.window import nnunet_gaussian, sliding_window
from tests.preprocess.conftest import Tiny
from tests.preprocess.test_export import _client

NNUNET_MODEL = r"""
import json, os, shutil, sys
from time import time
import numpy as np, torch
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

if __name__ == "__main__":
    torch.set_num_threads(1)
    dataset_id, name, case, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=False)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,))  # initialize() reads it
    pre = os.path.join(os.environ["nnUNet_preprocessed"], name)
    plans = json.load(open(os.path.join(pre, "nnUNetPlans.json")))
    ds = json.load(open(os.path.join(pre, "dataset.json")))
    plans["continue_training"] = False  # as run_training's get_trainer_from_args sets it
    torch.manual_seed(0)
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, ds, device=torch.device("cpu"))
    trainer.initialize()
    with torch.no_grad():  # nnU-Net's init predicts background everywhere: spread the logits
        for p in trainer.network.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    # one epoch's log as training writes it: numpy scalars (np.mean, np.nanmean of arrays)
    trainer.logger.log("lrs", 0.01, 0)
    trainer.logger.log("train_losses", np.mean(np.array([0.5, 0.4], np.float32)), 0)
    trainer.logger.log("val_losses", np.mean(np.array([0.6], np.float32)), 0)
    trainer.logger.log("dice_per_class_or_region", list(np.array([0.3, 0.2, 0.1])), 0)
    trainer.logger.log("mean_fg_dice", np.nanmean(np.array([0.3, 0.2, 0.1])), 0)
    trainer.logger.log("epoch_start_timestamps", time(), 0)
    trainer.logger.log("epoch_end_timestamps", time(), 0)
    trainer._best_ema = trainer.logger.get_value("ema_fg_dice", step=-1)
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # training's data loaders call it:
    # it sets the mirroring axes the checkpoint keeps for inference
    os.makedirs(trainer.output_folder, exist_ok=True)
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    folder = trainer.output_folder_base  # what on_train_start copies there
    with torch.no_grad():  # a second fold: other weights
        for p in trainer.network.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    os.makedirs(os.path.join(folder, "fold_1"))
    trainer.save_checkpoint(os.path.join(folder, "fold_1", "checkpoint_final.pth"))
    for src, dst in (("nnUNetPlans.json", "plans.json"), ("dataset.json", "dataset.json"),
                     ("dataset_fingerprint.json", "dataset_fingerprint.json")):
        shutil.copyfile(os.path.join(pre, src), os.path.join(folder, dst))

    img, props = SimpleITKIO().read_images([case])
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    assert plans["transpose_forward"] == [0, 1, 2]
    assert np.allclose(props["spacing"], plans["configurations"]["3d_fullres"]["spacing"])
    pad = [(0, 0)] + [(0, max(0, p + p // 2 - n)) for p, n in zip(patch, img.shape[1:])]
    img = np.pad(img, pad, mode="reflect").astype(np.float32)
    img = img[:, :patch[0] + patch[0] // 2, :patch[1] + patch[1] // 2, :patch[2] + patch[2] // 2]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(folder, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    seg, prob = predictor.predict_single_npy_array(img, {"spacing": props["spacing"]}, None, None, True)
    np.save(os.path.join(out, "image.npy"), img[0])
    np.save(os.path.join(out, "probabilities.npy"), prob)
    predictor.use_mirroring = True  # nnUNetv2_predict's default: the checkpoint's mirroring axes
    one = np.ascontiguousarray(img[:, :patch[0], :patch[1], :patch[2]])  # one window: 8 passes, not 64
    _, prob = predictor.predict_single_npy_array(one, {"spacing": props["spacing"]}, None, None, True)
    np.save(os.path.join(out, "probabilities_mirrored.npy"), prob)
    json.dump(list(predictor.allowed_mirroring_axes), open(os.path.join(out, "mirror_axes.json"), "w"))
    folds = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                            perform_everything_on_device=False, device=torch.device("cpu"),
                            verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    folds.initialize_from_trained_model_folder(folder, use_folds=(0, 1), checkpoint_name="checkpoint_final.pth")
    _, prob = folds.predict_single_npy_array(one, {"spacing": props["spacing"]}, None, None, True)
    np.save(os.path.join(out, "probabilities_folds.npy"), prob)
    print("RESULT", folder)
"""


@pytest.fixture(scope="module", params=["CT", "MRI"])
def nnunet_run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
               ) -> tuple[Path, Path, str]:
    """nnU-Net's model and its prediction; with the channel named MRI nnU-Net plans its per-image
    z-score (ZScoreNormalization) where CT gets CTNormalization."""
    python = _client("nnunetv2")
    root = tmp_path_factory.mktemp("nnunet_model")
    rep = export_nnunet(tiny.release, root / "raw", dataset_id=503, name="TinyKidney",
                        terms=[term_id("kidney"), term_id("kidney tumor"), term_id("kidney cyst")],
                        where="p.dataset = 'TinyKits'")
    ds = json.loads((rep.folder / "dataset.json").read_text())
    ds["channel_names"] = {"0": request.param}
    (rep.folder / "dataset.json").write_text(json.dumps(ds))
    case = min((rep.folder / "imagesTr").glob("*_0000.nii.gz"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
                "nnUNet_results": str(root / "results")})
    script = root / "nnunet_model.py"  # a file: nnU-Net's spawned workers re-import the main module
    script.write_text(NNUNET_MODEL)
    res = subprocess.run([python, str(script), "503", rep.folder.name, str(case), str(root)], check=False,
                         capture_output=True, text=True, env=env, timeout=900, cwd=root)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    folder = Path(res.stdout.split("RESULT ")[-1].strip())
    return folder, root, request.param


def test_nnunet_member_matches_nnunet_predictor(nnunet_run: tuple[Path, Path, str]) -> None:
    folder, root, channel = nnunet_run
    assert folder.name == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    entry = {"name": "nn", "kind": "nnunet", "path": str(folder), "orientation": "SAR"}
    model = load_model(ModelSpec.from_dict(entry), "cpu")
    assert model.spec.terms == (term_id("kidney"), term_id("kidney tumor"), term_id("kidney cyst"))
    if channel == "MRI":  # the image's own mean and std (no zero border to crop: the whole image)
        assert model.spec.intensity == {"zscore": "image"} and model.spec.modalities == ("MR",)
    else:
        assert set(model.spec.intensity) == {"clip", "mean", "std"} and model.spec.modalities == ("CT",)
    assert model.spec.fold == 0 and model.spec.configuration == "3d_fullres"
    image = np.load(root / "image.npy")  # nnU-Net's axes (SAR here): curator stores it RAS
    # nnU-Net's mirroring test-time augmentation (nnUNetv2_predict's default) with the checkpoint's
    # axes, given as the entry's mirror_axes (the network's axes are the model's: no transpose here)
    axes = json.loads((root / "mirror_axes.json").read_text())
    assert axes == [0, 1, 2]
    mirrored = load_model(ModelSpec.from_dict({**entry, "mirror_axes": axes}), "cpu")
    folds = load_model(ModelSpec.from_dict({**entry, "fold": [0, 1]}), "cpu")  # nnU-Net's use_folds=(0, 1)
    p = model.spec.patch
    one = image[:p[0], :p[1], :p[2]]
    for m, probs, img in ((model, "probabilities.npy", image), (mirrored, "probabilities_mirrored.npy", one),
                          (folds, "probabilities_folds.npy", one)):
        expected = np.load(root / probs)  # (background + 3 terms, *nnU-Net's axes)
        diff, kept = _difference(m, img, expected)
        print(f"{probs}: max abs difference {diff[:, kept].max():.2e} (all voxels {diff.max():.2e}), mean "
              f"{diff.mean():.2e}, {kept.mean():.1%} of voxels kept, probability range {expected[1:].min():.3f}.."
              f"{expected[1:].max():.3f}")
        assert expected[1:].max() - expected[1:].min() > 0.3  # the network's outputs vary: a real comparison
        # what remains is nnU-Net's float16 blend (logits near 10 to ~0.01); blending probabilities, or
        # curator's own Gaussian (centred at (p - 1) / 2), differed by up to 0.2 and 0.1 here
        assert diff[:, kept].max() < 1e-2 and diff.mean() < 1e-3
    for other in ("probabilities_mirrored.npy", "probabilities_folds.npy"):  # each changes the output: real checks
        assert _difference(model, one, np.load(root / other))[0].max() > 0.05


def _difference(model: LoadedModel, image: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|curator's probabilities - nnU-Net's| per term and voxel, and the voxels where nnU-Net's float16
    Gaussian weights do not underflow (in the image's corners, reached by one window's tail only, its
    own logits lose their digits: nnU-Net blends float16 logits weighted by a float16 Gaussian x10)."""
    stored = np.ascontiguousarray(image.transpose(2, 1, 0))
    reader = SlabReader(stored, {}, model.spec.intensity)
    patch = model.spec.physical(model.spec.patch)
    assert patch is not None
    rows = [p[0].copy() for _, _, p in sliding_window(reader, [model], patch, overlap=0.5, amp=False,
                                                      orientation="RAS")]
    ours = np.concatenate(rows, axis=3).transpose(0, 3, 2, 1)
    assert ours.shape == expected[1:].shape
    p, g = model.spec.patch, nnunet_gaussian(model.spec.patch)
    weight = np.zeros(image.shape, np.float32)  # windows at 0 and, on the 1.5-patch image, half a patch on
    for a, b, c in itertools.product(*[sorted({0, n - q}) for n, q in zip(image.shape, p, strict=True)]):
        weight[a:a + p[0], b:b + p[1], c:c + p[2]] += g
    return np.abs(ours - expected[1:]), weight > 1e-6


NNUNET_ZSCORE = r"""
import sys
import numpy as np
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

image, out = np.load(sys.argv[1]), sys.argv[2]
for masked in (False, True):  # as DefaultPreprocessor.run_case_npy: crop to the nonzero box, then normalise
    data, seg, bbox = crop_to_nonzero(image[None].astype(np.float32))
    norm = ZScoreNormalization(use_mask_for_norm=masked, intensityproperties={})
    np.save(f"{out}/{masked}.npy", norm.run(data[0], seg[0]))
    np.save(f"{out}/bbox.npy", np.asarray(bbox))
"""


@pytest.mark.parametrize("mode", ["image", "nonzero"])
def test_zscore_is_nnunets(mode: str, tmp_path: Path) -> None:
    """A brain-MR-like image (zero background around the head, a zero hole and zero voxels
    inside): the reader's input equals nnU-Net's crop to the nonzero box + ZScoreNormalization."""
    python = _client("nnunetv2")
    rng = np.random.default_rng(3)
    i, j, k = np.indices((30, 34, 26))
    head = ((i - 15) / 12) ** 2 + ((j - 17) / 12.5) ** 2 + ((k - 12) / 10) ** 2 <= 1  # an ellipsoid
    image = np.where(head, 4 * rng.gamma(4, 40, head.shape).astype(np.int16), 0).astype(np.float32)  # x4: exact below
    image[12:16, 14:18, 9:13] = 0  # a hole (filled: inside the mask)
    image[rng.random(image.shape) < 0.02] = 0  # scattered zero voxels
    np.save(tmp_path / "image.npy", image)
    (tmp_path / "z.py").write_text(NNUNET_ZSCORE)
    res = subprocess.run([python, str(tmp_path / "z.py"), str(tmp_path / "image.npy"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = np.load(tmp_path / f"{mode == 'nonzero'}.npy")
    box = tuple(slice(int(a), int(b)) for a, b in np.load(tmp_path / "bbox.npy"))
    assert expected.shape == image[box].shape != image.shape  # nnU-Net cropped the zero border
    # stored as float16 values / 4 (preprocess's MR storage): the reader turns them back first
    stored = (image / 4).astype(np.float16)
    full = SlabReader(stored, {"scale": 4.0}, {"zscore": mode}).slab(0, image.shape[2])
    ours = full[box]
    assert np.abs(ours - expected).max() < 1e-5
    hole = full[12:16, 14:18, 9:13]  # zeros inside the head: normalised, -mean / std
    assert hole.max() == hole.min() < -0.5
    corners = ~head[box]  # the box around the head, outside it: 0 with the mask, normalised without
    assert (ours[corners] == 0).all() if mode == "nonzero" else (ours[corners] == hole.max()).all()
