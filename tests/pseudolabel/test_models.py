"""Model adapters, sliding window, ETTA, and the CUDA path."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curator.errors import ConfigError
from curator.pseudolabel.etta import EttaConfig, adapted, norm_parameters
from curator.pseudolabel.infer import infer_case
from curator.pseudolabel.loading import LoadedModel, load_model
from curator.pseudolabel.models import ModelSpec, load_ensemble_file
from curator.pseudolabel.nets import TinyUNet
from curator.pseudolabel.reader import SlabReader, to_source_grid
from curator.pseudolabel.window import axis_map, gaussian_map, sliding_window, starts
from curator.testing.segmodels import BAND_TERMS, BandModel, band_specs

SPEC = {"name": "u", "factory": "curator.pseudolabel.nets:TinyUNet", "kwargs": {"out_channels": 3},
        "terms": ["liver", "spleen"], "patch": [16, 16, 16]}


def test_window_geometry() -> None:
    assert starts(10, 16, 0.5) == [0]
    assert starts(40, 16, 0.5) == [0, 8, 16, 24]
    g = gaussian_map((8, 8, 8))
    assert g.max() == 1 and g.min() > 0 and g[4, 4, 4] > g[0, 0, 0]
    assert axis_map("LPS", "RAS") == ((0, 1, 2), (0, 1))
    assert axis_map("IPL", "RAS") == ((2, 1, 0), (0, 1, 2))


def test_module_weights_and_torchscript_agree(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyUNet(out_channels=3).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    m1 = load_model(ModelSpec.from_dict({**SPEC, "weights": str(tmp_path / "w.pt")}), "cpu")
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.13 but still what many ship
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(tmp_path / "m.ts"), _extra_files={
            "curator.json": json.dumps({"terms": ["liver", "spleen"], "patch": [16, 16, 16]})})
    m2 = load_model(ModelSpec.from_dict({"name": "ts", "kind": "torchscript", "path": str(tmp_path / "m.ts")}), "cpu")
    assert m2.terms == ("liver", "spleen")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(m1.predict(x), m2.predict(x), atol=1e-5)
    # weights are read with weights_only=True: a pickled object is refused
    torch.save({"net": net}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError):
        load_model(ModelSpec.from_dict({**SPEC, "weights": str(tmp_path / "bad.pt")}), "cpu")


def test_monai_bundle(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps({
        "network_def": {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1,
                        "out_channels": 3, "channels": [4, 8], "strides": [2]},
        "preprocessing": {"_target_": "Compose", "transforms": [{"_target_": "LoadImaged", "keys": "image"}]}}))
    (root / "configs" / "metadata.json").write_text(json.dumps({"network_data_format": {"outputs": {"pred": {
        "channel_def": {"0": "background", "1": "liver", "2": "spleen"}}}}}))
    from monai.networks.nets import UNet

    torch.save(UNet(3, 1, 3, (4, 8), (2,)).state_dict(), root / "models" / "model.pt")
    m = load_model(ModelSpec.from_dict({"name": "b", "kind": "monai_bundle", "path": str(root)}), "cpu")
    assert m.terms == ("liver", "spleen")
    assert m.predict(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_a_setting_added_to_model_specs_keeps_the_fingerprints_of_unchanged_declarations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field added to ModelSpec (configuration, fold, mirror_axes) changed the fingerprint of
    every declaration, so an upgrade re-ran every cached pseudo label with byte-identical weights,
    said as "another version of the model files". The fingerprint of this declaration is pinned:
    a new field belongs in models.ADDED_LATER with its default, and is then left out while at it."""
    from curator.pseudolabel import models

    (tmp_path / "w.pt").write_bytes(b"weights")
    spec = ModelSpec.from_dict({"name": "m", "kind": "module", "factory": "torch.nn:Identity",
                                "weights": str(tmp_path / "w.pt"), "terms": ["liver"]})
    pinned = "ef12ed2f54c751a7"
    assert spec.fingerprint() == pinned, "a ModelSpec field was added: list it in models.ADDED_LATER"
    plain = ModelSpec.to_dict
    monkeypatch.setattr(ModelSpec, "to_dict", lambda self: {**plain(self), "smoothing": 0})  # a field added later
    assert spec.fingerprint() != pinned
    monkeypatch.setitem(models.ADDED_LATER, "smoothing", 0)
    assert spec.fingerprint() == pinned
    from curator.pseudolabel.stage import PseudolabelStage
    from curator.runner.stage import Task

    def key(d: dict[str, Any]) -> Any:  # what each case's cache key holds of the ensemble
        task = Task(case_id="c", payload={"ensemble": {"models": [d], "fingerprints": [pinned]}}, fingerprint="")
        return PseudolabelStage.cache_payload(None, task)  # type: ignore[arg-type]

    assert key(spec.to_dict()) == key(plain(spec))  # the cases are not run again either
    monkeypatch.setattr(ModelSpec, "to_dict", lambda self: {**plain(self), "smoothing": 2})  # set: it counts
    assert spec.fingerprint() != pinned


def test_a_model_file_is_read_once_while_it_stays_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run fingerprinted the ensemble for its settings digest, its plan and its record: every
    weights file read three times. A file rewritten (even to the same size) is read again."""
    from curator.pseudolabel import models

    reads: list[str] = []
    plain = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p: reads.append(str(p)) or plain(p))
    models._file_sum.cache_clear()
    w = tmp_path / "w.pt"
    w.write_bytes(b"weights-1")
    spec = ModelSpec.from_dict({"name": "m", "kind": "module", "factory": "torch.nn:Identity", "weights": str(w),
                                "terms": ["liver"]})
    first = [spec.fingerprint() for _ in range(3)]
    assert len(set(first)) == 1 and len(reads) == 1
    before = w.stat().st_mtime_ns
    w.write_bytes(b"weights-2")  # the same size, other content, written later (a clock tick can be ms long)
    os.utime(w, ns=(before + 10**9, before + 10**9))
    assert spec.fingerprint() != first[0] and len(reads) == 2


def test_model_fingerprints_follow_file_content_not_location(tmp_path: Path) -> None:
    """Copies of an ensemble in two folders are the same models (a moved project re-runs no case);
    new weights in one of them are not."""
    import shutil

    from curator.pseudolabel.models import MODELS_DIR

    for d in ("a", "b"):
        shutil.copytree(MODELS_DIR, tmp_path / d)
    a, b = (load_ensemble_file(str(tmp_path / d / "demo.yaml")) for d in ("a", "b"))
    assert a[0].weights != b[0].weights
    assert [s.fingerprint() for s in a] == [s.fingerprint() for s in b]
    state = torch.load(tmp_path / "b" / "demo_unet.pt", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 0.01
    torch.save(state, tmp_path / "b" / "demo_unet.pt")
    b = load_ensemble_file(str(tmp_path / "b" / "demo.yaml"))
    assert [x.fingerprint() == y.fingerprint() for x, y in zip(a, b, strict=True)] == [False, True, True]


def test_demo_ensemble_declared() -> None:
    specs = load_ensemble_file("demo")
    assert len({s.factory for s in specs}) == 3
    assert all(Path(str(s.weights)).is_absolute() for s in specs)


def test_sliding_window_matches_single_pass_for_pointwise_model() -> None:
    """A point-wise model gives the same probabilities whatever the tiling and stored orientation."""
    spec = ModelSpec.from_dict({**band_specs(1)[0], "kwargs": {"bands": [[0.0, 1.0]], "smooth": 1},
                                "terms": ["x"], "orientation": "RAS"})
    model = load_model(spec, "cpu")
    img = np.random.default_rng(0).uniform(-1, 2, (23, 17, 29)).astype(np.float32)
    with torch.no_grad():
        full = model.predict(torch.from_numpy(img)[None, None])[0, 0].numpy()
    rows = [p[0][0].copy()  # the rows are views of the blending buffer: copy before the next step
            for _, _, p in sliding_window(SlabReader(img, {}, {"mean": 0.0, "std": 1.0}), [model], (8, 8, 8),
                                          overlap=0.5, orientation="LPS")]
    got = np.concatenate(rows, axis=-1)
    np.testing.assert_allclose(got, full, atol=1e-5)


def test_float16_blending_halves_the_buffers_and_moves_probabilities_little() -> None:
    torch.manual_seed(0)
    model = load_model(ModelSpec.from_dict(SPEC), "cpu")
    img = np.random.default_rng(1).normal(0, 1, (30, 26, 40)).astype(np.float32)
    reader = SlabReader(img, {}, {"mean": 0.0, "std": 1.0})
    got = {}
    for blend in ("float32", "float16"):
        rows = [(p[0].dtype, p[0].astype(np.float32))
                for _, _, p in sliding_window(reader, [model], (16, 16, 16), overlap=0.5, blend=blend)]
        assert {d for d, _ in rows} == {np.dtype(blend)}
        got[blend] = np.concatenate([r for _, r in rows], axis=-1)
    assert got["float32"].shape == got["float16"].shape == (len(model.terms), 30, 26, 40)
    diff = np.abs(got["float32"] - got["float16"])
    assert diff.max() <= 2e-3 and diff.max() > 0  # rounded, not recomputed in float32
    with pytest.raises(ValueError, match="blend"):
        next(sliding_window(reader, [model], (16, 16, 16), blend="int8"))


def test_resampled_inference_returns_store_grid() -> None:
    model = load_model(ModelSpec.from_dict(band_specs(1)[0]), "cpu")
    img = np.full((30, 24, 18), -50.0, np.float32)
    img[10:20, 8:16, 6:12] = 105.0  # a "liver" block
    reader = SlabReader(img, {}, {"mean": 0.0, "std": 1.0}, (2.0, 2.0, 3.0), (4.0, 4.0, 6.0))
    assert reader.shape == (15, 12, 9)
    res = infer_case(reader, [model], ["liver"], patch=(8, 8, 8), overlap=0.25)
    assert res.plane.shape == img.shape
    liver = res.plane == 1
    assert liver[12:18, 10:14, 7:11].all() and not liver[:6].any()
    assert to_source_grid(np.arange(3)[:, None, None] * np.ones((3, 2, 2)), (6, 2, 2))[:, 0, 0].tolist() == \
        [0, 0, 1, 1, 2, 2]


def test_etta_changes_only_norm_params_and_restores() -> None:
    torch.manual_seed(0)
    model = load_model(ModelSpec.from_dict(SPEC), "cpu")
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    norm_names = {n for n, _ in norm_parameters(model.net)}
    x = torch.randn(2, 1, 16, 16, 16)
    cfg = EttaConfig(enabled=True, steps=3, lr=1e-2)
    with adapted(model.net, model.logits, x, "softmax", cfg) as report:
        during = model.net.state_dict()
        changed = {k for k, v in during.items() if not torch.equal(v, before[k])}
    assert changed and changed <= norm_names, f"non-normalisation tensors changed: {changed - norm_names}"
    assert report["entropy_after"] < report["entropy_before"]
    after = model.net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before), "the model was not restored"
    assert not any(p.requires_grad for p in model.net.parameters())


def test_etta_in_a_case_leaves_model_unchanged() -> None:
    torch.manual_seed(1)
    model = load_model(ModelSpec.from_dict(SPEC), "cpu")
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    reader = SlabReader(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), {}, {})
    res = infer_case(reader, [model], ["liver"], patch=(16, 16, 16), etta=EttaConfig(enabled=True, steps=2))
    assert res.etta and res.etta[0]["changed"]
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize(("setting", "says"), [({"lr": -1}, "etta.lr = -1.0; use a learning rate in (0, 1]"),
                                               ({"lr": float("nan")}, "etta.lr = nan"),
                                               ({"patches": 0}, "etta.patches = 0; use 1 or more"),
                                               ({"steps": 0}, "etta.steps = 0; use 1 or more")])
def test_etta_settings_out_of_range_are_config_errors_at_load(setting: dict[str, Any], says: str) -> None:
    """lr -1 and patches 0 failed every case as an internal_error ("report this as a bug") with
    exit code 0; steps 0 adapted nothing while every attention row said etta = true."""
    from curator.pseudolabel.config import PseudolabelConfig

    for enabled in (True, False):
        with pytest.raises(ConfigError, match=re.escape(says)) as e:
            PseudolabelConfig.from_dict({"ensemble": "demo", "etta": {"enabled": enabled, **setting}})
        assert e.value.kind == "config_error" and "stages.pseudolabel.etta." in str(e.value)
    assert "enabled: false" in str(pytest.raises(ConfigError, EttaConfig.from_dict, {"steps": 0}).value)
    assert PseudolabelConfig.from_dict({"etta": {"enabled": True, "steps": 1, "lr": 1, "patches": 1}}).etta.lr == 1


def test_band_model_is_a_band_detector() -> None:
    m = BandModel(bands=[[0.0, 10.0], [20.0, 30.0]], smooth=1)
    x = torch.tensor([5.0, 25.0, 15.0]).view(1, 1, 3, 1, 1)
    assert m(x).argmax(1).flatten().tolist() == [1, 2, 0] and len(BAND_TERMS) == 4


GPU = "cuda"  # what the gpu tests run on (`cpu` checks the tests themselves on a machine without one)


def _windowed(reader: SlabReader, models: list, **kw: Any) -> list:  # type: ignore[type-arg]
    """Every model's blended probabilities over the whole volume (float32 numpy)."""
    rows = [[p.astype(np.float32) for p in probs] for _, _, probs in sliding_window(reader, models, (48, 48, 48), **kw)]
    return [np.concatenate([r[m] for r in rows], -1) for m in range(len(models))]


def _peak_bytes(run: Any) -> int:
    if GPU != "cuda":
        run()
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.gpu
def test_cuda_path_matches_cpu() -> None:
    """The trained demo ensemble on a phantom (confident outputs, not a random network's ~uniform
    ones, whose label planes were empty on both devices and so always matched): on the GPU, with
    and without autocast and with either blend dtype, every model's probabilities within 0.02 of
    the CPU's (float16 / TF32 rounding), labels and attention alike, memory bounded by the patch
    depth, not the volume's."""
    from curator.pseudolabel import train_demo

    img, _ = train_demo.phantom(3, np.random.default_rng(3))
    img = img[:, :, :48]
    specs = load_ensemble_file("demo")
    cpu = [load_model(s, "cpu") for s in specs]
    gpu = [load_model(s, GPU) for s in specs]
    assert all(p.device.type == GPU for m in gpu for p in m.net.parameters())
    reader = SlabReader(img, {"applied": True}, {})
    ref = _windowed(reader, cpu, amp=False)
    assert all((r > 0.5).mean() > 0.005 for r in ref), "the phantom's organs were not found on the CPU"
    for amp in (False, True):
        for blend in ("float32", "float16"):
            got = _windowed(reader, gpu, amp=amp, blend=blend)
            for m, (a, b) in enumerate(zip(ref, got, strict=True)):
                where = f"{specs[m].name}, amp={amp}, blend={blend}"
                assert b.dtype == np.float32 and np.isfinite(b).all(), where
                assert float(np.abs(a - b).max()) < 0.02, where
                assert ((a > 0.5) != (b > 0.5)).mean() < 1e-3, where
    a = infer_case(reader, cpu, ["liver", "spleen", "pancreas"], patch=(48, 48, 48), amp=False)
    b = infer_case(reader, gpu, ["liver", "spleen", "pancreas"], patch=(48, 48, 48), amp=True)
    assert a.voxels("liver") > 0 and (a.plane == b.plane).mean() > 0.999
    for t in a.targets:
        va, vb = a.summaries[t].attention_voxels, b.summaries[t].attention_voxels
        assert abs(va - vb) <= 0.05 * max(va, 100), (t, va, vb)
    # streaming: a volume three times as deep needs no more device memory (the buffers are one patch deep)
    deep = SlabReader(np.concatenate([img, img[..., ::-1], img], -1), {"applied": True}, {})
    shallow_peak = _peak_bytes(lambda: _windowed(reader, gpu, amp=True))
    deep_peak = _peak_bytes(lambda: _windowed(deep, gpu, amp=True))
    assert deep_peak <= 1.1 * shallow_peak + (8 << 20), (shallow_peak, deep_peak)


@pytest.mark.gpu
def test_etta_on_the_gpu_adapts_then_restores_the_model() -> None:
    """ETTA on GPU-resident parameters: gradients only for the normalisation layers, the entropy
    lowered, every tensor back bit for bit afterwards, and the case's labels as the CPU's."""
    torch.manual_seed(0)
    cpu = load_model(ModelSpec.from_dict(SPEC), "cpu")
    gpu = load_model(ModelSpec.from_dict(SPEC), GPU)
    gpu.net.load_state_dict(cpu.net.state_dict())
    before = {k: v.clone() for k, v in gpu.net.state_dict().items()}
    img = np.random.default_rng(0).normal(size=(40, 36, 44)).astype(np.float32)
    cfg = EttaConfig(enabled=True, steps=3, lr=1e-2)
    a = infer_case(SlabReader(img, {}, {}), [cpu], ["liver", "spleen"], patch=(16, 16, 16), amp=False, etta=cfg)
    b = infer_case(SlabReader(img, {}, {}), [gpu], ["liver", "spleen"], patch=(16, 16, 16), amp=True, etta=cfg)
    rb = b.etta[0]
    assert rb["changed"] and rb["entropy_after"] < rb["entropy_before"]
    assert set(rb["changed"]) <= {n for n, _ in norm_parameters(gpu.net)}
    assert abs(rb["entropy_before"] - a.etta[0]["entropy_before"]) < 1e-3
    assert all(torch.equal(gpu.net.state_dict()[k], v) for k, v in before.items()), "ETTA left the model changed"
    assert not any(p.requires_grad for p in gpu.net.parameters())
    assert (a.plane == b.plane).mean() > 0.99


@pytest.mark.gpu
def test_the_stage_on_the_gpu_with_prefetch_labels_as_on_the_cpu(phantom_ws) -> None:  # type: ignore[no-untyped-def]
    """The whole stage with `device: cuda` (autocast, the next case read ahead in a thread) writes the
    pseudo labels the CPU writes."""
    from curator.config import PipelineConfig
    from curator.pseudolabel.stage import PseudolabelStage
    from curator.runner.context import Context
    from curator.runner.run import run_stage
    from curator.store import CaseStore

    ctx, _ = phantom_ws(device="cpu")
    assert run_stage(ctx, PseudolabelStage).failed == 0
    ws = ctx.workspace
    cases = [p.stem for p in sorted(ws.stores_dir.glob("*.zarr"))]
    on_cpu = {c: {t: CaseStore(ws.stores_dir / f"{c}.zarr").mask(t, "pseudo") for t in ("liver", "aorta")}
              for c in cases}
    d = ctx.config.to_dict()
    d["stages"]["pseudolabel"].update(device=GPU, prefetch="on")
    for c in cases:  # `device` is no part of a case's key: make the cases run again
        ws.case_result_path("pseudolabel", c).unlink()
    report = run_stage(Context(PipelineConfig.from_dict(d), ws), PseudolabelStage)
    assert (report.ran, report.failed) == (len(cases), 0)
    for c in cases:
        for t in ("liver", "aorta"):
            got = CaseStore(ws.stores_dir / f"{c}.zarr").mask(t, "pseudo")
            assert on_cpu[c][t].any() and (got == on_cpu[c][t]).mean() > 0.999, (c, t)


def test_blend_setting_reaches_inference_and_is_checked() -> None:
    from curator.pseudolabel.config import PseudolabelConfig

    assert PseudolabelConfig.from_dict({"blend": "float16"}).blend == "float16"
    assert PseudolabelConfig.from_dict({"blend": "float16"}).config_hash() != PseudolabelConfig().config_hash()
    with pytest.raises(ConfigError):
        PseudolabelConfig.from_dict({"blend": "bfloat8"})
    models = [load_model(ModelSpec.from_dict(s), "cpu") for s in band_specs(3)]
    img = np.full((30, 24, 18), -50.0, np.float32)
    img[10:20, 8:16, 6:12] = 105.0
    reader = SlabReader(img, {}, {"mean": 0.0, "std": 1.0})
    a, b = (infer_case(reader, models, ["liver"], patch=(8, 8, 8), overlap=0.5, blend=blend)
            for blend in ("float32", "float16"))
    assert a.voxels("liver") > 0
    np.testing.assert_array_equal(a.plane, b.plane)


def _archive(path: Path, channels: int, meta: dict) -> None:  # type: ignore[type-arg]
    """A TinyUNet TorchScript archive carrying ``meta`` as its curator.json."""
    torch.manual_seed(0)
    net = TinyUNet(out_channels=channels).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(path), _extra_files={"curator.json": json.dumps(meta)})


def test_a_torchscript_archives_metadata_is_not_overridden_by_defaults(tmp_path: Path) -> None:
    """Only settings a spec gives override the archive's curator.json: a
    sigmoid two-term model stays sigmoid (read as softmax, its second term came out empty)."""
    _archive(tmp_path / "m.ts", 2, {"terms": ["liver", "spleen"], "activation": "sigmoid", "patch": [32, 32, 16],
                                    "divisor": 16})
    m = load_model(ModelSpec.from_dict({"name": "ts", "kind": "torchscript", "path": str(tmp_path / "m.ts")}), "cpu")
    assert (m.spec.activation, m.spec.patch, m.spec.divisor) == ("sigmoid", (32, 32, 16), 16)
    assert m.predict(torch.zeros(1, 1, 32, 32, 16)).shape == (1, 2, 32, 32, 16)
    given = load_model(ModelSpec.from_dict({"name": "ts", "kind": "torchscript", "path": str(tmp_path / "m.ts"),
                                            "patch": [16, 16, 16]}), "cpu")
    assert (given.spec.patch, given.spec.activation) == ((16, 16, 16), "sigmoid")  # what the spec sets wins


@pytest.mark.parametrize("channels", [2, 5])
def test_outputs_that_do_not_match_the_terms_are_a_config_error(channels: int) -> None:
    """1 foreground channel for 3 terms was broadcast into all three; more channels than terms
    crashed in blending without naming the model."""
    spec = ModelSpec.from_dict({**SPEC, "kwargs": {"out_channels": channels}, "terms": ["liver", "spleen", "aorta"]})
    with pytest.raises(ConfigError, match="model 'u' gives .* need 4 channels"):
        load_model(spec, "cpu").predict(torch.zeros(1, 1, 16, 16, 16))


@pytest.mark.parametrize(("shape", "spacing"), [((5, 4, 1), (1.0, 1.0, 3.0)), ((1, 1, 1), (1.0, 1.0, 1.0)),
                                                ((9, 7, 3), (1.0, 1.0, 3.0)), ((40, 30, 1), (1.0, 1.0, 3.0))])
def test_volumes_smaller_than_the_patch_are_padded_not_fed_a_shrunken_patch(shape, spacing) -> None:  # type: ignore[no-untyped-def]
    """The U-Net's 8× downsampling of a patch shrunk to the volume left it a 1-voxel bottleneck
    ("Expected more than 1 spatial element"); padding up to the patch works for any size."""
    torch.manual_seed(0)
    model = load_model(ModelSpec.from_dict(SPEC), "cpu")
    img = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    res = infer_case(SlabReader(img, {}, {"mean": 0.0, "std": 1.0}, spacing), [model], ["liver", "spleen"],
                     patch=(16, 16, 16))
    assert res.plane.shape == shape and len(res.words) == 1 and res.words[0].shape == shape


@pytest.mark.parametrize("text, needle", [
    ("model:\n- name: u\n", "unknown top-level key(s) ['model']"),
    ("", "is empty"),
    ("name: x\n", "has no `models:`"),
    ("models: []\n", "not a non-empty list"),
    ("- name: u\n  factory: a:b\n", "is a YAML list, not a mapping"),
])
def test_an_ensemble_file_without_models_is_a_config_error(tmp_path: Path, text: str, needle: str) -> None:
    """A typo (`model:`), an empty file or a bare list configured no models: the stage skipped
    every case and the release silently had no pseudo labels (or an internal AttributeError)."""
    f = tmp_path / "ens.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_ensemble_file(str(f))
    msg = str(e.value) + " " + (e.value.remedy or "")
    assert needle in msg and str(f) in msg and "models" in msg


def test_an_ensemble_file_with_models_loads() -> None:
    assert [s.name for s in load_ensemble_file("demo")] == ["demo_unet", "demo_resnet", "demo_mixer"]


def test_members_share_one_physical_grid_whatever_their_axis_order(tmp_path: Path) -> None:
    """Spacings were compared in each model's own axes and the reader built from the first
    member's: an SRA member declaring RAS's tuple was accepted (and read on another grid than it
    was trained on), and the same grid written in SRA order was refused."""
    from types import SimpleNamespace

    from curator.pseudolabel.config import check_ensemble
    from curator.pseudolabel.prefetch import make_reader
    from curator.store import CaseStore
    from curator.testing.segmodels import write_phantom_store

    base = {**SPEC, "intensity": {"mean": 0.0, "std": 1.0}, "divisor": 1}
    ras = ModelSpec.from_dict({**base, "name": "ras", "orientation": "RAS", "spacing_mm": [4.5, 6.0, 7.0],
                               "patch": [16, 12, 8]})
    sra = ModelSpec.from_dict({**base, "name": "sra", "orientation": "SRA", "spacing_mm": [7.0, 4.5, 6.0],
                               "patch": [8, 16, 12]})
    lps = ModelSpec.from_dict({**base, "name": "lps", "orientation": "LPS", "spacing_mm": [4.5, 6.0, 7.0],
                               "patch": [16, 12, 8]})
    write_phantom_store(tmp_path / "c.zarr", 1, {}, orientation="LAS")
    store = CaseStore(tmp_path / "c.zarr")
    cfg = SimpleNamespace(resample_tolerance=0.1)

    def grid(specs: tuple[ModelSpec, ...]) -> tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...]]:
        reader, _, patch_s = make_reader(store, specs, check_ensemble(specs, None), cfg)
        return reader.shape, tuple(reader.spacing), patch_s

    alone = grid((ras,))
    assert alone[1] == (4.5, 6.0, 7.0) and alone[2] == (16, 12, 8)
    assert grid((sra,)) == alone == grid((ras, sra)) == grid((sra, ras)) == grid((lps, sra, ras))
    for other in ({"spacing_mm": [4.5, 6.0, 7.0]}, {"patch": [16, 12, 8]}):  # RAS's tuples in SRA axes
        bad = ModelSpec.from_dict({**sra.to_dict(), **other})
        with pytest.raises(ConfigError, match="different (grids|patches).*R-L"):
            check_ensemble((ras, bad), None)
    free = ModelSpec.from_dict({**ras.to_dict(), "orientation": None})  # stored axes: differ per case
    with pytest.raises(ConfigError, match="different grids.*stored axes"):
        check_ensemble((ras, free), None)
    iso = {"spacing_mm": [5.0, 5.0, 5.0], "patch": [16, 16, 16]}
    check_ensemble((ModelSpec.from_dict({**ras.to_dict(), **iso}), ModelSpec.from_dict({**free.to_dict(), **iso})), None)


@pytest.mark.parametrize("bad, needle", [
    ({"orientation": "XYZ"}, "orientation 'XYZ'"), ({"orientation": "RRS"}, "orientation 'RRS'"),
    ({"orientation": "RA"}, "orientation 'RA'"), ({"orientation": "RASI"}, "orientation 'RASI'"),
    ({"spacing_mm": [1.0, 1.0]}, "spacing_mm [1.0, 1.0]"), ({"spacing_mm": [1.0, 0, 1.0]}, "positive"),
    ({"spacing_mm": [1.0, -2.0, 1.0]}, "positive"), ({"patch": [16, 16]}, "patch [16, 16]"),
    ({"patch": [16, 0, 16]}, "positive integers"),
])
def test_a_bad_orientation_spacing_or_patch_is_refused_when_the_spec_is_read(bad: dict, needle: str) -> None:  # type: ignore[type-arg]
    """`orientation: XYZ`/`RRS` or a 2-value spacing were accepted, then failed every case with
    an internal KeyError, ZeroDivisionError or IndexError (and the run exited 0)."""
    with pytest.raises(ConfigError, match=r"model 'u'") as e:
        ModelSpec.from_dict({**SPEC, **bad})
    assert needle in str(e.value)


def test_a_bad_member_of_an_ensemble_file_names_the_file(tmp_path: Path) -> None:
    """A member's own check named the model but not the ensemble file that holds it."""
    import yaml

    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"models": [{**SPEC, "orientation": "XYZ"}]}))
    with pytest.raises(ConfigError, match=r"model 'u'") as e:
        load_ensemble_file(str(f))
    assert e.value.path == str(f) and str(f) in str(e.value)


def test_valid_orientations_spacings_and_patches_are_accepted() -> None:
    for o in ("RAS", "lps", "SRA", "IPL", None):
        assert ModelSpec.from_dict({**SPEC, "orientation": o, "spacing_mm": [0.8, 1, 3.0]}).orientation == o


@pytest.mark.parametrize("intensity, needle", [
    ({"a_min": -200, "a_max": 300, "b_min": -2.5, "b_max": 2.5}, "unknown intensity key(s) ['a_max', 'a_min'"),
    ({"clip": [-200, 300], "mean": 50, "stdev": 100}, "unknown intensity key(s) ['stdev']"),
    ({"clip": [300, -200]}, "clip [300, -200] is not [low, high]"),
    ({"clip": [-200, 300], "mean": 50, "std": 0}, "std 0 is not positive"),
    ({"mean": "fifty"}, "mean 'fifty' is not a number"),
])
def test_intensity_keys_curator_does_not_apply_are_refused(intensity: dict, needle: str) -> None:  # type: ignore[type-arg]
    """MONAI-style a_min/a_max/b_min/b_max were ignored: raw HU went to the network silently."""
    with pytest.raises(ConfigError) as e:
        ModelSpec.from_dict({**SPEC, "intensity": intensity})
    assert needle in str(e.value) and ("['clip', 'mean', 'std', 'zscore']" in str(e.value) or "unknown" not in needle)


def test_monai_scale_intensity_range_as_clip_mean_std_gives_the_same_input() -> None:
    """The remedy's conversion of MONAI's ScaleIntensityRange is the same network input."""
    from curator.pseudolabel.reader import network_input

    a0, a1, b0, b1 = -200.0, 300.0, -2.5, 2.5
    std = (a1 - a0) / (b1 - b0)
    spec = ModelSpec.from_dict({**SPEC, "intensity": {"clip": [a0, a1], "mean": a0 - b0 * std, "std": std}})
    hu = np.array([-1000.0, -200.0, 0.0, 50.0, 300.0, 1000.0])
    monai = (np.clip(hu, a0, a1) - a0) / (a1 - a0) * (b1 - b0) + b0
    np.testing.assert_allclose(network_input(hu, {}, spec.intensity), monai, atol=1e-5)


def test_a_torchscript_entrys_explicit_settings_win_even_at_their_defaults(tmp_path: Path) -> None:
    """An entry's `patch: [96, 96, 96]` or `activation: softmax` (the defaults) was replaced by the
    archive's curator.json; keys the entry leaves out are still the archive's."""
    from curator.pseudolabel.loading import load_ensemble

    _archive(tmp_path / "m.ts", 3, {"terms": ["liver", "spleen"], "activation": "sigmoid", "patch": [48, 48, 48],
                                    "divisor": 16})
    (tmp_path / "ens.yaml").write_text(json.dumps({"models": [
        {"name": "ts", "kind": "torchscript", "path": "m.ts", "patch": [96, 96, 96], "activation": "softmax"}]}))
    spec = load_ensemble_file(str(tmp_path / "ens.yaml"))[0]
    m = load_model(spec, "cpu")
    assert (m.spec.patch, m.spec.activation, m.spec.divisor) == ((96, 96, 96), "softmax", 16)
    assert m.spec.terms == ("liver", "spleen")
    assert load_ensemble((spec,), "cpu")[0].spec == m.spec  # the per-process cache keeps what was given
    again = ModelSpec.from_dict(m.spec.to_dict())  # a case's payload: the merged spec, every key given
    assert load_model(again, "cpu").spec == m.spec
    with pytest.raises(ConfigError, match="unknown setting"):
        ModelSpec.from_dict({**SPEC, "given": ["patch"]})


def test_mirror_axes_average_the_flipped_passes() -> None:
    """Mirroring test-time augmentation (nnU-Net's) averages the logits of the input flipped along
    every combination of the axes, each flipped back: the result is equivariant to those flips,
    which one pass of an asymmetric network is not."""
    from curator.pseudolabel.loading import LoadedModel

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()  # a random, asymmetric kernel
    x = torch.randn(2, 1, 6, 7, 8)

    def member(axes: list[int]) -> LoadedModel:
        spec = ModelSpec.from_dict({"name": "m", "terms": ["liver", "spleen"], "mirror_axes": axes})
        return LoadedModel(spec, net, torch.device("cpu"))

    def equivariant(m: LoadedModel, dims: tuple[int, ...]) -> bool:
        with torch.no_grad():
            return torch.allclose(m.logits(x.flip(dims)), m.logits(x).flip(dims), atol=1e-5)

    every = member([0, 1, 2])
    assert all(equivariant(every, d) for d in ((2,), (3,), (4,), (2, 3), (3, 4), (2, 3, 4)))
    assert not equivariant(member([]), (2,))
    lateral = member([0])  # along the first axis only
    assert equivariant(lateral, (2,)) and not equivariant(lateral, (3,))
    with torch.no_grad():  # the plain pass is one of the averaged ones
        assert torch.allclose(lateral.logits(x), (net(x) + net(x.flip(2)).flip(2)) / 2, atol=1e-6)


@pytest.mark.parametrize("axes", [[0, 3], [1, 1], [True], ["x"]])
def test_bad_mirror_axes_are_config_errors(axes: list[Any]) -> None:
    with pytest.raises(ConfigError, match="mirror_axes"):
        ModelSpec.from_dict({**SPEC, "mirror_axes": axes})


@pytest.mark.parametrize(("norm", "expected"), [
    ({"clip": [-100.0, 200.0], "mean": 50.0, "std": 100.0}, [-1.5, -1.5, -0.5, 1.0, 1.5]),  # the store's window
    ({"clip": [-100.0, 200.0], "mean": 50.0, "std": 100.0, "scale": 2.0}, [-1.5, -1.5, -0.5, 1.5, 1.5]),
    ({"clip": [-100.0, 200.0], "mean": 50.0, "std": 100.0, "applied": True}, [-500, -150, 0, 150, 900]),
])
def test_network_input_from_the_store_normalisation(norm: dict[str, Any], expected: list[float]) -> None:
    """Without a model `intensity`, the store's own parameters: scale to physical values, clip to
    the window, z-score; stored values already normalised (`applied`) go through as they are."""
    from curator.pseudolabel.reader import network_input

    stored = np.array([-500, -150, 0, 150, 900], np.int16).reshape(1, 1, 5)
    np.testing.assert_allclose(network_input(stored, norm, {})[0, 0], expected, atol=1e-6)


def test_members_normalise_their_input_each_their_own_way() -> None:
    """An ensemble of members with different `intensity` (two nnU-Net models of different datasets,
    one and a MONAI-style model) runs: each member sees the input it was trained on, as if it ran alone."""
    from curator.pseudolabel.config import check_ensemble

    torch.manual_seed(0)
    net = TinyUNet(out_channels=3).eval()
    intensities = [{"clip": [-200, 300], "mean": 50, "std": 100}, {"zscore": "image"},
                   {"clip": [-150.0, 250.0], "mean": 60.0, "std": 60.0}]
    members = []
    for i, intensity in enumerate(intensities):
        m = load_model(ModelSpec.from_dict({**SPEC, "name": f"m{i}", "intensity": intensity}), "cpu")
        m.net.load_state_dict(net.state_dict())
        members.append(m)
    assert check_ensemble(tuple(m.spec for m in members), None) == (16, 16, 16)
    raw = np.random.default_rng(0).uniform(-1000, 1000, (24, 20, 30)).astype(np.float32)

    def run(models: list[LoadedModel]) -> list[np.ndarray]:  # type: ignore[type-arg]
        reader = SlabReader(raw, {}, dict(models[0].spec.intensity), per_member=True)  # as the stage makes it
        return [np.concatenate(p, axis=-1) for p in zip(*[[a.copy() for a in probs] for _, _, probs in
                                                           sliding_window(reader, models, (16, 16, 16))],
                                                         strict=True)]

    together = run(members)
    for m, got in zip(members, together, strict=True):
        (alone,) = run([m])
        assert np.array_equal(got, alone)
    assert not np.allclose(together[0], together[1])


def test_one_normalisation_written_two_ways_is_one() -> None:
    """`[-200, 300]` and `[-200.0, 300.0]`, or the keys in another order, were compared as text."""
    from curator.pseudolabel.config import check_ensemble

    a = ModelSpec.from_dict({**SPEC, "name": "a", "intensity": {"clip": [-200, 300], "mean": 50, "std": 100}})
    b = ModelSpec.from_dict({**SPEC, "name": "b", "intensity": {"std": 100.0, "mean": 50.0, "clip": [-200.0, 300.0]}})
    assert check_ensemble((a, b), None) == (16, 16, 16)
    reader = SlabReader(np.zeros((4, 4, 4), np.float32), {}, dict(a.intensity), per_member=True)
    assert reader.for_intensity(b.intensity) is reader  # read and normalised once for both
    assert reader.for_intensity({"mean": 0, "std": 1}) is not reader
