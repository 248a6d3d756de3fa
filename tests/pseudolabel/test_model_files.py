"""Model files from elsewhere: what a MONAI bundle's configs say, and broken or mismatched files
as config errors that name the model, its file and the entry's ensemble file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curator.errors import ConfigError
from curator.pseudolabel.config import check_ensemble
from curator.pseudolabel.loading import load_ensemble, load_model
from curator.pseudolabel.models import ModelSpec, load_ensemble_file
from curator.pseudolabel.nets import TinyUNet
from curator.pseudolabel.reader import SlabReader

pytest.importorskip("monai")

NET = {"_target_": "curator.pseudolabel.nets.TinyUNet", "out_channels": 3}
PRE = [{"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
       {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
       {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
       {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0.0,
        "b_max": 1.0, "clip": True}]
META = {"network_data_format": {
    "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                         "spatial_shape": ["16*n", "16*n", "16*n"]}},
    "outputs": {"pred": {"channel_def": {"0": "background", "1": "liver", "2": "spleen"}}}}}


def _bundle(root: Path, config: dict[str, Any], weights: bool = True) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": NET, **config}))
    (root / "configs" / "metadata.json").write_text(json.dumps(META))
    if weights:
        torch.manual_seed(0)
        torch.save(TinyUNet(out_channels=3).state_dict(), root / "models" / "model.pt")
    return root


def _load(root: Path, **entry: Any) -> Any:
    return load_model(ModelSpec.from_dict({"name": "b", "kind": "monai_bundle", "path": str(root), **entry}), "cpu")


def test_a_bundles_preprocessing_inferer_and_metadata_fill_the_spec(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b", {"preprocessing": {"_target_": "Compose", "transforms": PRE},
                                    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16]}})
    s = _load(root).spec
    assert (s.orientation, s.spacing_mm, s.patch, s.modalities, s.divisor) == ("RAS", (1.5, 1.5, 2.0), (32, 32, 16),
                                                                               ("CT",), 16)
    # ScaleIntensityRanged: (clip(x, a_min, a_max) - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
    x = np.linspace(-300, 400, 71, dtype=np.float32).reshape(71, 1, 1)
    monai = (np.clip(x, -57, 164) + 57) / 221
    assert np.allclose(SlabReader(x, {}, s.intensity).slab(0, 1), monai, atol=1e-6)
    # a setting the entry gives wins over the bundle's (even null: the stored grid)
    t = _load(root, spacing_mm=None, intensity={"mean": 0, "std": 1}, patch=[16, 16, 16]).spec
    assert (t.spacing_mm, t.intensity, t.patch, t.orientation) == (None, {"mean": 0, "std": 1}, (16, 16, 16), "RAS")


def test_a_bundle_and_the_same_network_as_a_module_predict_alike(tmp_path: Path) -> None:
    """Same weights, once in a bundle (its configs say the preprocessing), once as a module entry
    that restates it: the same spec, the same network input and the same probabilities."""
    root = _bundle(tmp_path / "b", {"preprocessing": {"_target_": "Compose", "transforms": PRE},
                                    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16]}})
    b = _load(root)
    m = load_model(ModelSpec.from_dict({
        "name": "m", "factory": "curator.pseudolabel.nets:TinyUNet", "kwargs": {"out_channels": 3},
        "weights": str(root / "models" / "model.pt"), "terms": ["liver", "spleen"], "patch": [16, 16, 16],
        "spacing_mm": [1.5, 1.5, 2], "orientation": "RAS", "modalities": ["CT"],
        "intensity": {"clip": [-57, 164], "mean": -57, "std": 221}}), "cpu")
    assert check_ensemble((b.spec, m.spec), None) == (16, 16, 16)  # one normalisation, written as floats and ints
    raw = np.random.default_rng(0).uniform(-1000, 1000, (16, 16, 16)).astype(np.float32)
    xs = [torch.from_numpy(SlabReader(raw, {}, lm.spec.intensity).slab(0, 16))[None, None] for lm in (b, m)]
    assert torch.equal(xs[0], xs[1])
    with torch.no_grad():
        assert torch.allclose(b.predict(xs[0]), m.predict(xs[1]), atol=1e-6)


@pytest.mark.parametrize(("config", "field"), [
    ({}, "intensity"),  # no preprocessing at all
    ({"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "ScaleIntensityd", "keys": "image"}]}}, "intensity"),  # min-max per image: not curator's
    ({"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Spacingd", "keys": "image", "pixdim": "$[1.5 * k for k in (1, 1, 2)]"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0,
         "b_max": 1}]}}, "spacing_mm"),  # an expression is not run
])
def test_a_setting_the_bundle_does_not_say_and_the_entry_does_not_give_is_refused(
        tmp_path: Path, config: dict[str, Any], field: str) -> None:
    root = _bundle(tmp_path / "b", config)
    with pytest.raises(ConfigError, match=f"do not say the model's `{field}`") as e:
        _load(root)
    assert "b" in str(e.value) and str(root) in str(e.value) and f"give the entry `{field}:`" in str(e.value)
    entry = {"intensity": {"mean": 0, "std": 1}, "spacing_mm": None, "orientation": None}
    assert _load(root, **entry).spec.intensity == {"mean": 0, "std": 1}


def test_a_bundles_values_are_read_as_data_never_run(tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    root = _bundle(tmp_path / "b", {
        "pixdim": "$[2.0, 2.0, 3.0]",  # a literal behind `$`: read with literal_eval
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Orientationd", "keys": "image", "axcodes": "LPS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": f"$open({str(flag)!r}, 'w')",
             "a_max": 1, "b_min": 0, "b_max": 1}]}})
    with pytest.raises(ConfigError, match="intensity"):
        _load(root)
    assert not flag.exists()
    s = _load(root, intensity={"mean": 0, "std": 1}).spec
    assert (s.spacing_mm, s.orientation) == ((2.0, 2.0, 3.0), "LPS")


def test_a_bundle_without_its_weights_is_refused(tmp_path: Path) -> None:
    """It ran with the network's random initial weights, silently."""
    root = _bundle(tmp_path / "b", {"preprocessing": {"_target_": "Compose", "transforms": PRE}}, weights=False)
    with pytest.raises(ConfigError, match="has no models/model.pt"):
        _load(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(TinyUNet(out_channels=3)), str(root / "models" / "model.ts"))
    with pytest.raises(ConfigError, match=r"model\.ts is TorchScript: declare it as `kind: torchscript"):
        _load(root)


def _write_ensemble(tmp_path: Path, entry: dict[str, Any]) -> Path:
    f = tmp_path / "ens.yaml"
    f.write_text(json.dumps({"models": [{"name": "mine", "terms": ["liver", "spleen"], "patch": [16, 16, 16],
                                         **entry}]}))
    return f


def test_weights_of_another_network_are_a_summarised_config_error(tmp_path: Path) -> None:
    torch.save(TinyUNet(out_channels=3, width=16).state_dict(), tmp_path / "w16.pt")
    f = _write_ensemble(tmp_path, {"factory": "curator.pseudolabel.nets:TinyUNet", "kwargs": {"out_channels": 3},
                                   "weights": "w16.pt"})
    with pytest.raises(ConfigError) as e:
        load_ensemble(load_ensemble_file(str(f)), "cpu")
    msg = str(e.value)
    assert "model 'mine'" in msg and "w16.pt do not fit factory curator.pseudolabel.nets:TinyUNet" in msg
    assert "size mismatch(es) (e.g." in msg and str(f) in msg and msg.count("\n") < 3


def test_a_kwargs_typo_is_a_config_error_naming_the_arguments(tmp_path: Path) -> None:
    f = _write_ensemble(tmp_path, {"factory": "curator.pseudolabel.nets:TinyUNet", "kwargs": {"out_chanels": 3}})
    with pytest.raises(ConfigError, match=r"cannot build factory .*out_chanels.*takes \[.*'out_channels'") as e:
        load_ensemble(load_ensemble_file(str(f)), "cpu")
    assert str(f) in str(e.value)


def test_a_damaged_torchscript_or_weights_file_is_a_config_error(tmp_path: Path) -> None:
    net = TinyUNet(out_channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(tmp_path / "m.ts"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    for name in ("m.ts", "w.pt"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 3])
    f = _write_ensemble(tmp_path, {"kind": "torchscript", "path": "m.ts"})
    with pytest.raises(ConfigError, match="cannot read TorchScript archive .*m.ts.*damaged, truncated") as e:
        load_ensemble(load_ensemble_file(str(f)), "cpu")
    assert str(f) in str(e.value)
    f = _write_ensemble(tmp_path, {"factory": "curator.pseudolabel.nets:TinyUNet", "kwargs": {"out_channels": 3},
                                   "weights": "w.pt"})
    with pytest.raises(ConfigError, match="the file is damaged or truncated") as e:
        load_ensemble(load_ensemble_file(str(f)), "cpu")
    assert "plain state_dict" not in str(e.value)


def test_a_weights_file_that_is_not_there_is_said_missing_not_damaged(tmp_path: Path) -> None:
    """The Python API's load path met torch's FileNotFoundError, reported as a damaged file."""
    from curator.pseudolabel.loading import _state_dict

    with pytest.raises(ConfigError, match=r"weights file .*nope\.pt does not exist") as e:
        _state_dict(str(tmp_path / "nope.pt"), where="member 0")
    assert "damaged" not in str(e.value) and "member 0: " in str(e.value)
