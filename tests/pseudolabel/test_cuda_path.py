"""The CUDA path's logic, exercised on the CPU (no CUDA API is called: ``torch.cuda.is_available``
and ``device_count`` are replaced where a test needs a worker that sees GPUs, or none).

What only a GPU can check is in ``test_models.py::test_cuda_path_matches_cpu`` (marked ``gpu``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from curator.errors import ConfigError, CuratorError
from curator.pseudolabel import train_demo, window
from curator.pseudolabel.config import PseudolabelConfig
from curator.pseudolabel.etta import EttaConfig
from curator.pseudolabel.infer import infer_case
from curator.pseudolabel.loading import LoadedModel, load_model
from curator.pseudolabel.models import ModelSpec, load_ensemble_file
from curator.pseudolabel.reader import SlabReader
from curator.pseudolabel.stage import PseudolabelStage
from curator.runner.run import run_stage
from curator.testing.segmodels import band_specs


class _OutOfMemoryAbove(nn.Module):
    """``net``, raising CUDA's out-of-memory error for batches of more than ``limit`` windows."""

    def __init__(self, net: nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.batches = net, limit, []  # type: ignore[var-annotated]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.77 GiB total)")
        out: torch.Tensor = self.net(x)
        return out


def _band_case() -> tuple[SlabReader, list[LoadedModel]]:
    img = np.full((30, 24, 18), -50.0, np.float32)
    img[10:20, 8:16, 6:12] = 105.0
    img[4:9, 2:8, 2:6] = 120.0
    return SlabReader(img, {}, {"mean": 0.0, "std": 1.0}), [load_model(ModelSpec.from_dict(s), "cpu")
                                                           for s in band_specs(3, (8, 8, 8))]


def test_out_of_memory_starts_the_case_again_at_a_smaller_batch() -> None:
    """A GPU that cannot hold 4 windows at once: the case runs at 2, then 1, with the same
    result (it was an internal_error 'report this as a bug', the case lost)."""
    reader, models = _band_case()
    ref = infer_case(reader, models, ["liver", "spleen"], patch=(8, 8, 8), batch=1)
    tight = [LoadedModel(m.spec, _OutOfMemoryAbove(m.net, 1), m.device) for m in models]
    got = infer_case(reader, tight, ["liver", "spleen"], patch=(8, 8, 8), batch=4)
    assert tight[0].net.batches[:2] == [4, 2] and set(tight[0].net.batches[2:]) == {1}
    assert ref.voxels("liver") > 0 and ref.voxels("spleen") > 0
    np.testing.assert_array_equal(got.plane, ref.plane)
    for a, b in zip(got.words, ref.words, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got.summaries == ref.summaries


def test_out_of_memory_at_one_window_is_a_problem_the_next_run_retries(phantom_ws, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Out of memory even one window at a time: a `gpu_out_of_memory` row naming what to lower, and
    not cached, so a run with a smaller patch or on a bigger GPU labels the case."""
    reader, models = _band_case()
    never = [LoadedModel(m.spec, _OutOfMemoryAbove(m.net, 0), m.device) for m in models]
    with pytest.raises(CuratorError) as e:
        infer_case(reader, never, ["liver"], patch=(8, 8, 8), batch=4)
    assert e.value.kind == "gpu_out_of_memory" and "patch" in (e.value.remedy or "")
    assert never[0].net.batches == [4, 2, 1]

    ctx, _ = phantom_ws()
    real = PseudolabelStage.process.__func__  # type: ignore[attr-defined]

    def oom(cls: Any, task: Any, config: Any, env: Any) -> Any:
        raise CuratorError("gpu_out_of_memory", "cuda ran out of memory on this case")

    monkeypatch.setattr(PseudolabelStage, "process", classmethod(oom))
    report = run_stage(ctx, PseudolabelStage)
    assert report.failed == 4
    probs = ctx.workspace.read_table("problems__pseudolabel")
    assert probs is not None and set(probs.column("kind").to_pylist()) == {"gpu_out_of_memory"}
    monkeypatch.setattr(PseudolabelStage, "process", classmethod(real))
    report = run_stage(ctx, PseudolabelStage)
    assert (report.ran, report.cached, report.failed) == (4, 0, 0)


def test_a_gpu_the_worker_does_not_see_is_retried_on_a_gpu_worker(phantom_ws, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`device: cuda` run where no GPU is visible (a login node) failed every case with a cached
    config_error; `device` is no part of a case's key, so the same run on a GPU worker reused
    those failures and labelled nothing. Now `gpu_unavailable`, not cached."""
    ctx, _ = phantom_ws(device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = run_stage(ctx, PseudolabelStage)
    assert report.failed == 4
    probs = ctx.workspace.read_table("problems__pseudolabel")
    assert probs is not None and set(probs.column("kind").to_pylist()) == {"gpu_unavailable"}
    # a GPU worker now (its device stood in for by the CPU: no CUDA call is made here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(PseudolabelConfig, "resolved_device", lambda self: "cpu")
    report = run_stage(ctx, PseudolabelStage)
    assert (report.ran, report.cached, report.failed) == (4, 0, 0)


def test_a_cuda_index_the_worker_does_not_have_or_a_misspelt_device_is_said_so(monkeypatch) -> None:
    """`cuda:1` on a Dask worker started with CUDA_VISIBLE_DEVICES=1 (it sees one GPU, cuda:0) was
    CUDA's 'invalid device ordinal' as an internal error per case; `gpu` failed each case too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert PseudolabelConfig.from_dict({"device": "cuda:0"}).resolved_device() == "cuda:0"
    assert PseudolabelConfig.from_dict({"device": "auto"}).resolved_device() == "cuda"
    with pytest.raises(CuratorError) as e:
        PseudolabelConfig.from_dict({"device": "cuda:1"}).resolved_device()
    assert e.value.kind == "gpu_unavailable" and "sees 1 CUDA device" in str(e.value)
    assert "device: cuda" in (e.value.remedy or "")
    for bad in ("gpu", "cuda0", "cuda:x", "CUDA"):
        with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
            PseudolabelConfig.from_dict({"device": bad})


def test_weights_are_read_onto_the_cpu_whatever_the_device() -> None:
    """A module's weights were loaded onto the model's device, then copied into the network built
    on the CPU and moved back: on a GPU two copies of every weight, on `meta` a failure."""
    m = load_model(load_ensemble_file("demo")[0], "meta")
    assert m.device.type == "meta" and all(p.device.type == "meta" for p in m.net.parameters())


def _demo_case() -> tuple[SlabReader, list[LoadedModel]]:
    img, _ = train_demo.phantom(3, np.random.default_rng(3))  # a trained network's confident outputs
    return SlabReader(img[4:60, 4:56, 10:58], {"applied": True}, {}), [load_model(s, "cpu")
                                                                     for s in load_ensemble_file("demo")]


def _probs(reader: SlabReader, models: list[LoadedModel], **kw: Any) -> list[np.ndarray]:  # type: ignore[type-arg]
    rows = [[p.astype(np.float32) for p in probs]
            for _, _, probs in window.sliding_window(reader, models, (48, 48, 48), **kw)]
    return [np.concatenate([r[m] for r in rows], -1) for m in range(len(models))]


def test_the_autocast_path_on_the_cpu_in_bfloat16(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The `amp` branch of the window (autocast around the forward pass only; low-precision logits
    cast to float32 before softmax; float32 Gaussian weights and buffers) run on the CPU in bfloat16,
    whose 8-bit mantissa is coarser than float16's 11: the blended probabilities stay float32 and
    within 0.08 of the float32 run, and the labels agree on all but 1e-4 of the voxels."""
    reader, models = _demo_case()
    seen: list[torch.dtype] = []
    hooks = [m.net.register_forward_hook(lambda mod, i, o: seen.append(o.dtype)) for m in models]
    ref = _probs(reader, models, amp=True)  # no autocast on the CPU by default
    assert set(seen) == {torch.float32}
    monkeypatch.setattr(window, "AMP_DTYPE", {**window.AMP_DTYPE, "cpu": torch.bfloat16})
    seen.clear()
    for blend in ("float32", "float16"):
        got = _probs(reader, models, amp=True, blend=blend)
        assert set(seen) == {torch.bfloat16}, "the networks did not run under autocast"
        for a, b in zip(ref, got, strict=True):
            assert (a > 0.5).mean() > 0.005  # the phantom's organs are found
            assert float(np.abs(a - b).max()) < 0.08
            assert ((a > 0.5) != (b > 0.5)).mean() < 1e-4
    seen.clear()
    off = _probs(reader, models, amp=False)
    assert set(seen) == {torch.float32}
    for a, b in zip(ref, off, strict=True):
        np.testing.assert_array_equal(a, b)
    for h in hooks:
        h.remove()


def test_every_window_tensor_lives_on_the_models_device() -> None:
    """On `meta` models every tensor the window makes (input slab, batch, Gaussian, buffers) must be
    on `meta` too — one left on the CPU is an error there, as it is on CUDA — until the copy to the
    host, which `meta` cannot do."""
    reader, models = _demo_case()
    meta = [LoadedModel(m.spec, m.net.to("meta"), torch.device("meta")) for m in models]
    for blend in ("float32", "float16"):
        with pytest.raises(NotImplementedError, match="meta"):
            next(window.sliding_window(reader, meta, (48, 48, 48), blend=blend))


class _OverflowsInHalf(nn.Module):
    """``net``, whose logits overflow (inf) when it runs under autocast — as a network trained in float32
    does in float16 once an activation passes 65504 (bfloat16, the CPU's, has float32's range)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        if torch.is_autocast_enabled(x.device.type):
            out = out.clone()
            out[:, 1:, :2] = float("inf")  # some voxels' term logits
        return out


def test_a_batch_whose_logits_overflow_under_autocast_runs_again_in_float32(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """float16 overflow gave inf logits, NaN probabilities after softmax, and NaN spread through the
    blend into the statistics: no label where it happened and NaN attention sizes. The batch now
    runs again without autocast."""
    reader, models = _band_case()
    ref = infer_case(reader, models, ["liver", "spleen"], patch=(8, 8, 8), amp=False)
    monkeypatch.setattr(window, "AMP_DTYPE", {**window.AMP_DTYPE, "cpu": torch.bfloat16})
    hot = [LoadedModel(m.spec, _OverflowsInHalf(m.net), m.device) for m in models]
    got = infer_case(reader, hot, ["liver", "spleen"], patch=(8, 8, 8), amp=True)
    assert all(np.isfinite(s.attention_size) for s in got.summaries.values())
    assert (got.plane == ref.plane).mean() > 0.999


def test_etta_cases_on_threads_of_one_worker_do_not_adapt_each_others_model() -> None:
    """A Dask GPU worker started without `--resources GPU=1` runs as many cases at once as it has
    threads, on the process's one cached copy of each model. ETTA adapts that copy in place: a case
    started while another was adapting took the other's half-adapted weights as its starting point
    (and later restored them). ETTA cases of one process now run one at a time."""
    import threading

    torch.manual_seed(0)
    model = load_model(ModelSpec.from_dict({"name": "u", "factory": "curator.pseudolabel.nets:TinyUNet",
                                            "kwargs": {"out_channels": 3}, "terms": ["liver", "spleen"],
                                            "patch": [16, 16, 16]}), "cpu")
    rng = np.random.default_rng(0)
    first, second = (SlabReader(rng.normal(size=(20, 20, 20)).astype(np.float32), {}, {}) for _ in range(2))
    cfg = EttaConfig(enabled=True, steps=3, lr=0.05)

    def run(reader: SlabReader) -> Any:
        return infer_case(reader, [model], ["liver"], patch=(16, 16, 16), etta=cfg)

    alone = run(second).etta[0]["entropy_before"]
    out: dict[str, Any] = {}
    done = threading.Event()
    calls = [0]

    def other() -> None:
        out["second"] = run(second)
        done.set()

    def hook(mod: Any, inputs: Any, output: Any) -> None:
        calls[0] += 1
        if calls[0] == 2 and torch.is_grad_enabled():  # the first case mid-adaptation (one step taken)
            threading.Thread(target=other).start()
            done.wait(2.0)  # the second case runs now, unless it has to wait for the first

    h = model.net.register_forward_hook(hook)
    try:
        run(first)
    finally:
        h.remove()
    assert done.wait(60)
    assert out["second"].etta[0]["entropy_before"] == alone, "the second case started from adapted weights"
