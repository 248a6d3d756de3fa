"""``kind: nnunet``: the spec filled from an nnU-Net v2 result folder, its checkpoint read with
weights_only=True, and the logits blended as nnU-Net does. (Agreement with nnUNetPredictor
itself: tests/preprocess/test_nnunet_member.py.)"""

from __future__ import annotations

import json
import pathlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curator.errors import ConfigError
from curator.pseudolabel.loading import LoadedModel, load_model
from curator.pseudolabel.models import ModelSpec
from curator.pseudolabel.nets import TinyUNet
from curator.pseudolabel.reader import SlabReader
from curator.pseudolabel.terms import term_id
from curator.pseudolabel.window import gaussian_map, nnunet_gaussian, sliding_window

ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [1, 2, 2]],
                        "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
FG = {"max": 900.0, "mean": 80.0, "median": 70.0, "min": -500.0, "percentile_00_5": -100.0,
      "percentile_99_5": 300.0, "std": 50.0}


def result_folder(tmp: Path, *, labels: dict[str, Any] | None = None, scheme: str = "CTNormalization",
                  unet: str = "PlainConvUNet",
                  channels: int = 1, channel: str = "CT", masked: bool | None = None, transpose: list[int] | None = None, fold: str = "0",
                  extra: dict[str, Any] | None = None, old_plans: bool = False) -> Path:
    """An nnU-Net v2 result folder as training leaves it (the checkpoint an empty file here)."""
    root = tmp / "Dataset042_Organs" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (root / f"fold_{fold}").mkdir(parents=True)
    cfg = {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [8, 16, 24], "spacing": [3.0, 1.5, 1.0],
           "normalization_schemes": [scheme],
           "use_mask_for_norm": [scheme != "CTNormalization" if masked is None else masked],
           "architecture": ARCH}
    if old_plans:  # nnU-Net before 2.4 (TotalSegmentator's weights): the same U-Net by other keys
        a = ARCH["arch_kwargs"]
        cfg = {k: v for k, v in cfg.items() if k != "architecture"}
        cfg.update({"UNet_class_name": unet, "UNet_base_num_features": 4, "unet_max_num_features": 16,
                    "n_conv_per_stage_encoder": a["n_conv_per_stage"], "n_conv_per_stage_decoder": [1, 1],
                    "num_pool_per_axis": [1, 2, 2], "pool_op_kernel_sizes": a["strides"],
                    "conv_kernel_sizes": a["kernel_sizes"]})
    plans = {"dataset_name": "Dataset042_Organs", "plans_name": "nnUNetPlans",
             "transpose_forward": transpose or [0, 1, 2],
             "transpose_backward": [(transpose or [0, 1, 2]).index(a) for a in range(3)],
             "configurations": {"3d_fullres": cfg, "3d_cascade_fullres": {"inherits_from": "3d_fullres",
                                                                          "previous_stage": "3d_lowres"}},
             "foreground_intensity_properties_per_channel": {"0": FG}}
    ds = {"channel_names": {str(i): channel for i in range(channels)},
          "labels": labels or {"background": 0, "liver": 1, "Rt Kidney": 2}, "numTraining": 3,
          "file_ending": ".nii.gz", **(extra or {})}
    (root / "plans.json").write_text(json.dumps(plans))
    (root / "dataset.json").write_text(json.dumps(ds))
    (root / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    return root


def nnunet(root: Path, **kw: Any) -> ModelSpec:
    from curator.pseudolabel import nnunet as nn_mod

    return nn_mod.fill_spec(ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(root),
                                                 "orientation": "SAR", **kw}))


def test_spec_from_result_folder(tmp_path: Path) -> None:
    spec = nnunet(result_folder(tmp_path, labels={"background": 0, "liver": 1, "Rt Kidney": 2, "ignore": 3}))
    assert spec.terms == ("liver", "kidney_right")  # names -> term ids; background and ignore left out
    assert spec.activation == "softmax" and spec.fold == 0 and spec.configuration == "3d_fullres"
    assert spec.patch == (8, 16, 24) and spec.spacing_mm == (3.0, 1.5, 1.0)
    assert spec.divisor == 2  # strides' products per axis (2, 4, 4): 2 divides each
    assert spec.intensity == {"clip": [-100.0, 300.0], "mean": 80.0, "std": 50.0}
    assert spec.modalities == ("CT",)
    assert spec.to_dict() == nnunet(Path(str(spec.path)), **{  # filling a filled spec changes nothing
        k: v for k, v in spec.to_dict().items() if k not in ("name", "kind", "path", "orientation")}).to_dict()
    # what the entry gives wins
    assert nnunet(Path(str(spec.path)), patch=[8, 32, 32], modalities=[]).patch == (8, 32, 32)


def test_spec_axes_fold_regions(tmp_path: Path) -> None:
    # plans that permute the read arrays (transpose_forward): patch and spacing come back in the read axes
    spec = nnunet(result_folder(tmp_path / "t", transpose=[2, 0, 1], fold="all"))
    assert spec.patch == (16, 24, 8) and spec.spacing_mm == (1.5, 1.0, 3.0) and spec.fold == "all"
    spec = nnunet(result_folder(tmp_path / "r", labels={"background": 0, "whole tumor": [1, 2, 3],
                                                        "tumor core": [2, 3], "enhancing tumor": 3},
                                extra={"regions_class_order": [1, 2, 3]}))
    assert spec.activation == "sigmoid"  # one output per region, in dataset.json's order
    assert spec.terms == tuple(term_id(n) for n in ("whole tumor", "tumor core", "enhancing tumor"))
    assert nnunet(result_folder(tmp_path / "n", scheme="NoNormalization")).intensity == {"mean": 0.0, "std": 1.0}


@pytest.mark.parametrize(("channel", "masked", "intensity", "modalities"), [
    ("T2", True, {"zscore": "nonzero"}, ("MR",)),  # BraTS-like: nnU-Net's use_mask_for_norm
    ("MRI", False, {"zscore": "image"}, ("MR",)),
    ("PET", False, {"zscore": "image"}, ()),  # not named as an MR channel: any modality, unless given
])
def test_zscore_models(tmp_path: Path, channel: str, masked: bool, intensity: dict[str, str],
                       modalities: tuple[str, ...]) -> None:
    spec = nnunet(result_folder(tmp_path, scheme="ZScoreNormalization", channel=channel, masked=masked))
    assert spec.intensity == intensity and spec.modalities == modalities


@pytest.mark.parametrize("intensity", [{"zscore": "brain"}, {"zscore": "image", "clip": [0, 100]},
                                       {"zscore": True}])
def test_bad_zscore_is_a_config_error(intensity: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="per-image z-score"):
        ModelSpec.from_dict({"name": "m", "intensity": intensity})


@pytest.mark.parametrize(("kw", "message"), [
    ({"scheme": "RescaleTo01Normalization"}, "not one curator implements"),
    ({"channels": 2}, "single-channel"),
    ({"labels": {"background": 0, "liver": 1, "spleen": 3}}, "consecutive"),
])
def test_unsupported_folders_are_config_errors(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        nnunet(result_folder(tmp_path, **kw))


def test_orientation_fold_and_cascade_are_checked(tmp_path: Path) -> None:
    root = result_folder(tmp_path)
    with pytest.raises(ConfigError) as e:
        ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(root)})
    assert "orientation" in str(e.value) and "SimpleITK" in str(e.value)
    with pytest.raises(ConfigError, match="cascade"):
        nnunet(root, configuration="3d_cascade_fullres")
    with pytest.raises(ConfigError, match="fold_0"):
        nnunet(root, fold=3)
    with pytest.raises(ConfigError, match="no configuration '2d'"):
        nnunet(root, configuration="2d")
    spec = ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(root), "orientation": "SAR"})
    assert [p.name for p in spec.files()] == ["plans.json", "dataset.json", "checkpoint_final.pth"]
    assert len(spec.fingerprint()) == 16


class Smuggled:
    """A class a checkpoint could pickle: weights_only must refuse it."""


def _checkpoint(root: Path, weights: dict[str, torch.Tensor], extra: Any = None, fold: str = "0") -> None:
    ck = {"network_weights": weights, "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01}]},
          "grad_scaler_state": None, "_best_ema": np.float64(0.25), "current_epoch": 1,
          "logging": {"train_losses": [np.float32(0.4)], "mean_fg_dice": [np.float64(0.3)], "lrs": [0.01]},
          "init_args": {"plans": {}, "configuration": "3d_fullres", "fold": 0, "device": torch.device("cpu")},
          "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2), "extra": extra}
    (root / f"fold_{fold}").mkdir(exist_ok=True)
    torch.save(ck, root / f"fold_{fold}" / "checkpoint_final.pth")


def trained_folder(tmp: Path, transpose: list[int] | None = None, old_plans: bool = False,
                   unet: str = "PlainConvUNet") -> tuple[Path, torch.nn.Module]:
    """A result folder whose checkpoint holds a seeded PlainConvUNet (or ResidualEncoderUNet), and that network."""
    pytest.importorskip("dynamic_network_architectures")
    from dynamic_network_architectures.architectures import unet as unets

    root = result_folder(tmp, transpose=transpose, old_plans=old_plans, unet=unet)
    kw = {**ARCH["arch_kwargs"], "conv_op": torch.nn.Conv3d, "norm_op": torch.nn.InstanceNorm3d,
          "dropout_op": None, "nonlin": torch.nn.LeakyReLU}
    if unet == "ResidualEncoderUNet":
        kw["n_blocks_per_stage"] = kw.pop("n_conv_per_stage")
    torch.manual_seed(0)
    net = getattr(unets, unet)(input_channels=1, num_classes=3, deep_supervision=False, **kw).eval()
    _checkpoint(root, net.state_dict())  # numpy scalars in the log, as nnU-Net's trainer writes them
    return root, net


def test_network_and_checkpoint(tmp_path: Path) -> None:
    root, net = trained_folder(tmp_path, transpose=[2, 0, 1])
    model = load_model(ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(root),
                                            "orientation": "SAR"}), "cpu")
    x = torch.randn(1, 1, *model.spec.patch)  # read axes; the network's are transposed (2, 0, 1)
    with torch.no_grad():
        want = net(x.permute(0, 1, 4, 2, 3)).softmax(1)[:, 1:].permute(0, 1, 3, 4, 2)
        assert torch.allclose(model.predict(x), want, atol=1e-5)
    _checkpoint(root, net.state_dict(), extra=pathlib.PurePosixPath("/x"))
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_model(ModelSpec.from_dict({"name": "nn2", "kind": "nnunet", "path": str(root), "orientation": "SAR"}),
                   "cpu")
    plans = json.loads((root / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    for ref in ("dynamic_network_architectures.architectures.nowhere.Popen",  # looked up by name: no such class
                "dynamic_network_architectures.architectures.nowhere.OrderedDict"):  # a class, not a network
        arch["network_class_name"] = ref
        (root / "plans.json").write_text(json.dumps(plans))
        with pytest.raises(ConfigError, match="not a network class"):
            load_model(ModelSpec.from_dict({"name": "nn4", "kind": "nnunet", "path": str(root),
                                            "orientation": "SAR"}), "cpu")
    arch["network_class_name"] = "subprocess.Popen"
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ConfigError, match="not a network class"):
        load_model(ModelSpec.from_dict({"name": "nn3", "kind": "nnunet", "path": str(root), "orientation": "SAR"}),
                   "cpu")


def test_folds_average_their_logits(tmp_path: Path) -> None:
    """`fold: [0, 1]`: one member whose logits are the folds' mean (nnUNetPredictor's use_folds)."""
    root, net0 = trained_folder(tmp_path)
    net1 = type(net0)(input_channels=1, num_classes=3, deep_supervision=False, **{
        **ARCH["arch_kwargs"], "conv_op": torch.nn.Conv3d, "norm_op": torch.nn.InstanceNorm3d, "dropout_op": None,
        "nonlin": torch.nn.LeakyReLU}).eval()  # other random weights
    _checkpoint(root, net1.state_dict(), fold="1")
    entry = {"name": "nn", "kind": "nnunet", "path": str(root), "orientation": "SAR", "fold": [0, 1]}
    model = load_model(ModelSpec.from_dict(entry), "cpu")
    assert model.spec.fold == (0, 1)
    x = torch.randn(1, 1, *model.spec.patch)
    with torch.no_grad():
        want = ((net0(x) + net1(x)) / 2).softmax(1)[:, 1:]
        assert torch.allclose(model.predict(x), want, atol=1e-5)
        assert not torch.allclose(model.predict(x), net0(x).softmax(1)[:, 1:], atol=1e-3)
    spec = ModelSpec.from_dict(entry)
    assert [p.parent.name for p in spec.files()[2:]] == ["fold_0", "fold_1"]
    before = spec.fingerprint()
    _checkpoint(root, net0.state_dict(), fold="1")  # fold 1 retrained: the member's cases re-run
    assert spec.fingerprint() != before
    with pytest.raises(ConfigError, match="fold_3"):
        load_model(ModelSpec.from_dict({**entry, "fold": [0, 3]}), "cpu")
    for bad in ([], [0, 0]):
        with pytest.raises(ConfigError, match="fold"):
            ModelSpec.from_dict({**entry, "fold": bad})


def test_nnunet_members_blend_logits(tmp_path: Path) -> None:
    """Overlapping windows are averaged as logits weighted by nnU-Net's Gaussian (centred at p // 2),
    the softmax taken of the blend (nnUNetPredictor's way), not as probabilities (other members)."""
    torch.manual_seed(1)
    net = TinyUNet(out_channels=3).eval()
    spec = ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(tmp_path), "orientation": "RAS",
                                "terms": ["liver", "spleen"], "patch": [16, 16, 16]})
    model = LoadedModel(spec, net, torch.device("cpu"))
    image = np.random.default_rng(0).normal(size=(16, 16, 24)).astype(np.float32) * 3
    rows = [p[0].copy() for _, _, p in sliding_window(SlabReader(image, {}, {}), [model], (16, 16, 16),
                                                      overlap=0.5, amp=False, orientation="RAS")]
    ours = np.concatenate(rows, axis=3)
    g = torch.from_numpy(nnunet_gaussian((16, 16, 16)))
    assert not np.allclose(nnunet_gaussian((16, 16, 16)), gaussian_map((16, 16, 16)), atol=1e-3)
    acc, w = torch.zeros((3, 16, 16, 24)), torch.zeros((16, 16, 24))
    with torch.no_grad():
        for z in (0, 8):
            acc[..., z:z + 16] += net(torch.from_numpy(image[None, None, ..., z:z + 16]))[0] * g
            w[..., z:z + 16] += g
    want = (acc / w).softmax(0)[1:].numpy()
    assert np.abs(ours - want).max() < 1e-5
    # stored L-R: the model's Gaussian (and everything else) is flipped with its input
    rows = [p[0].copy() for _, _, p in sliding_window(SlabReader(image[::-1].copy(), {}, {}), [model], (16, 16, 16),
                                                      overlap=0.5, amp=False, orientation="LAS")]
    assert np.abs(np.concatenate(rows, axis=3)[:, ::-1] - want).max() < 1e-5


def test_nnunet_gaussian_is_nnunets() -> None:
    """nnU-Net's compute_gaussian: scipy's filter of a point at p // 2 (sigma p / 8, truncated at 4 sigma)."""
    from scipy.ndimage import gaussian_filter

    patch = (8, 13, 40)
    point = np.zeros(patch)
    point[tuple(p // 2 for p in patch)] = 1
    want = gaussian_filter(point, [p / 8 for p in patch], 0, mode="constant", cval=0)
    want /= want.max()
    want[want == 0] = want[want > 0].min()
    assert np.allclose(nnunet_gaussian(patch), want, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("unet", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_plans_before_nnunet_2_4(tmp_path: Path, unet: str) -> None:
    """TotalSegmentator's plans.json (nnU-Net 2.1) has no `architecture`: the U-Net keys build the same
    network (a ResidualEncoderUNet converted, as nnU-Net converts it, to a module path that
    dynamic_network_architectures 0.4 does not have: found by name, as nnU-Net finds it)."""
    root, net = trained_folder(tmp_path, old_plans=True, unet=unet)
    model = load_model(ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(root),
                                            "orientation": "SAR"}), "cpu")
    assert model.spec.divisor == 2
    x = torch.randn(1, 1, *model.spec.patch)
    with torch.no_grad():
        assert torch.allclose(model.predict(x), net(x).softmax(1)[:, 1:], atol=1e-5)


@pytest.mark.parametrize("intensity", [None, {"zscore": "nonzero"}])
def test_the_stage_runs_an_nnunet_member(phantom_ws, tmp_path: Path,  # type: ignore[no-untyped-def]
                                         intensity: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """From pipeline.yaml's entry (path + orientation) to the pseudo layer: the spec is filled once
    in plan, travels to the cases and is filled again there to the same spec (also with a per-image
    z-score given in the entry, which wins over the plans' CT normalisation)."""
    import zarr

    from curator.pseudolabel import reader
    from curator.pseudolabel.stage import PseudolabelStage
    from curator.runner.run import run_stage

    modes: list[str] = []
    real_zscore = reader.zscore
    monkeypatch.setattr(reader, "zscore", lambda a, n, mode: modes.append(mode) or real_zscore(a, n, mode))
    root, _ = trained_folder(tmp_path / "model")
    ctx, _ = phantom_ws(models=[{"name": "nn", "kind": "nnunet", "path": str(root), "orientation": "SAR",
                                 "spacing_mm": [14.0, 9.0, 9.0],  # the phantoms' grid: given, so kept
                                 **({"intensity": intensity} if intensity else {})}])
    report = run_stage(ctx, PseudolabelStage)
    assert report.planned == 4 and report.failed == 0
    att = ctx.workspace.read_table("attention").to_pylist()
    assert {r["term_id"] for r in att} == {"liver", "kidney_right"} and all(r["n_models"] == 1 for r in att)
    layer = zarr.open_group(str(ctx.workspace.stores_dir / "Pancreas__0001.zarr" / "labels" / "pseudo"), mode="r")
    (model,) = dict(layer.attrs)["curator"]["models"]
    assert model["name"] == "nn"
    # each case's image z-scored on its own (a prefetched reader that went unused may add one)
    assert (len(modes) >= 4 and set(modes) == {"nonzero"}) if intensity else not modes


@pytest.mark.parametrize("mode", ["image", "nonzero"])
def test_zscore_reader(mode: str) -> None:
    """The reader's per-image z-score against numpy on the whole volume (nnU-Net's own functions:
    tests/preprocess/test_nnunet_member.py): a zero border around a non-box 'head' with a zero
    hole; stored with preprocess's int16 scale; read in slabs smaller than the volume."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    i, j, k = np.indices((40, 36, 150))
    head = ((i - 20) / 15) ** 2 + ((j - 18) / 14) ** 2 + ((k - 80) / 60) ** 2 <= 1
    image = np.where(head, rng.normal(300, 80, head.shape).round(), 0)
    image[18:22, 16:20, 70:90] = 0
    phys = image * 0.5  # physical = stored x 0.5
    filled = ndimage.binary_fill_holes(phys != 0)
    box = ndimage.find_objects(filled.astype(np.uint8))[0]
    region = phys[filled] if mode == "nonzero" else phys[box]
    expected = (phys - region.mean()) / region.std()
    if mode == "nonzero":
        expected[~filled] = 0
    reader = SlabReader(image.astype(np.int16), {"scale": 0.5}, {"zscore": mode})
    assert reader.intensity["mean"] == pytest.approx(region.mean()) and reader.intensity["std"] == pytest.approx(
        region.std())
    assert np.abs(reader.slab(0, 150) - expected).max() < 1e-4
    assert np.abs(reader.slab(100, 150) - expected[..., 100:]).max() < 1e-4
    # resampled to a coarser model grid: normalised (and masked) first, then interpolated, as nnU-Net
    coarse = SlabReader(image.astype(np.int16), {"scale": 0.5}, {"zscore": mode}, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    out = coarse.slab(0, coarse.shape[2])
    assert out.shape == (20, 18, 75)
    far = ~ndimage.binary_dilation(filled, iterations=3)[::2, ::2, ::2]
    assert (out[far] == 0).all() if mode == "nonzero" else np.allclose(out[far], -region.mean() / region.std())


def test_a_dataset_folder_as_path_names_the_result_folders_inside(tmp_path: Path) -> None:
    """`path` at Dataset123_X (or nnUNet_results) said "no fold_0 ... the folder has no checkpoint"."""
    root = result_folder(tmp_path)
    for up in (root.parent, root.parent.parent):
        spec = ModelSpec.from_dict({"name": "nn", "kind": "nnunet", "path": str(up), "orientation": "SAR"})
        for call in (spec.fingerprint, lambda u=up: nnunet(u)):
            with pytest.raises(ConfigError, match="is not an nnU-Net result folder: it holds 1 result folder") as e:
                call()
            assert f"point `path` at the trained result folder (Trainer__Plans__configuration), e.g. {root}" \
                in str(e.value)
