"""``PatchDataset(..., channels=[...])``: a multi-sequence study's sequences (one case each, linked
by study_key) as the channels of one item, each read at the reference patch's physical position
from its own store (stores are cropped to their own body: other shapes and origins)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from curator.errors import ConfigError, ReleaseError
from curator.preprocess.intensity import normalise
from curator.preprocess.terms import term_id
from curator.store import CaseStore
from curator.torch import PatchDataset
from curator.torch.channels import studies
from tests.preprocess.conftest import MultiSeq

TERMS = [term_id("kidney"), term_id("kidney tumor")]
PATCH = (64, 48, 16)  # larger than a store along i: every patch reaches past a store somewhere


def _ds(multiseq: MultiSeq, **kw: Any) -> PatchDataset:
    args: dict[str, Any] = {"terms": TERMS, "patch_size": PATCH, "samples_per_epoch": 16, "seed": 5,
                            "split": None, "channels": ["t1c", "t2f"]}
    args.update(kw)
    return PatchDataset(multiseq.release, **args)


def _store(multiseq: MultiSeq, case_id: str) -> CaseStore:
    return CaseStore(multiseq.release / "stores" / f"{case_id}.zarr")


def _at(store: CaseStore, ref: CaseStore, start: list[int], values: np.ndarray,
        fill: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (``store``'s whole image) at the physical positions of the patch at ``start`` on
    ``ref``'s grid, through the two affines (``fill`` outside ``store``), and which voxels are inside."""
    idx = np.indices(PATCH).reshape(3, -1) + np.asarray(start)[:, None]
    where = np.linalg.inv(store.geometry.matrix) @ ref.geometry.matrix @ np.vstack([idx, np.ones((1, idx.shape[1]))])
    pos = np.rint(where[:3]).astype(int)
    assert np.allclose(where[:3], pos, atol=1e-4)
    inside = np.all((pos >= 0) & (pos < np.asarray(store.geometry.shape)[:, None]), axis=0)
    out = np.full(idx.shape[1], fill, dtype=np.float32)
    out[inside] = values[tuple(pos[:, inside])]
    return out.reshape(PATCH), inside.reshape(PATCH)


@pytest.mark.parametrize("normalised", [True, False])
def test_each_channel_holds_its_store_at_the_reference_patch_s_position(multiseq: MultiSeq, normalised: bool) -> None:
    """Study 0's t2f store was cropped differently from its t1c store: the t2f channel is the t2f
    store's values at the same physical position (its own normalisation), the fill value where the
    t2f store does not reach; the masks are the t1c case's."""
    t1c, t2f = _store(multiseq, "TinyBrats__study0__t1c"), _store(multiseq, "TinyBrats__study0__t2f")
    assert t1c.geometry.shape != t2f.geometry.shape and t1c.geometry.origin != t2f.geometry.origin
    assert t1c.attrs["normalisation"] != t2f.attrs["normalisation"]
    ds = _ds(multiseq, normalise=normalised)
    filled = inside_seen = 0  # t2f voxels filled where the t1c store holds the body / read from the t2f store
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (2, *PATCH) and item["image"].dtype == torch.float32
        assert item["masks"].shape == (2, *PATCH) and item["prompts"] == ["(mri) kidney", "(mri) kidney tumor"]
        study = item["case_id"].removesuffix("__t1c")
        assert item["case_id"] == f"{study}__t1c" and item["channel_ids"] == [item["case_id"], f"{study}__t2f"]
        ref = _store(multiseq, item["case_id"])
        start = item["start"].tolist()
        in_ref = None
        for k, cid in enumerate(item["channel_ids"]):
            src = _store(multiseq, cid)
            norm = src.attrs["normalisation"]
            values = normalise(src.read("image"), norm) if normalised else src.physical_image()
            fill = (norm["clip"][0] - norm["mean"]) / norm["std"] if normalised else 0.0  # MR background
            want, inside = _at(src, ref, start, values, fill)
            assert np.allclose(item["image"][k].numpy(), want, rtol=0, atol=1e-6), (i, cid)
            if not k:
                in_ref = inside
            else:
                filled += int((in_ref & ~inside).sum())
                inside_seen += int(inside.sum())
        box = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, PATCH, ref.geometry.shape))
        want_masks = np.zeros((len(TERMS), *PATCH), dtype=bool)
        want_masks[(slice(None), *(slice(b.start - s, b.stop - s) for b, s in zip(box, start)))] = ref.masks(TERMS, box=box)
        assert np.array_equal(item["masks"].numpy().astype(bool), want_masks)
    assert filled > 0 and inside_seen > 0
    assert {ds[i]["case_id"] for i in range(len(ds))} == {"TinyBrats__study0__t1c", "TinyBrats__study1__t1c"}


def test_a_study_lacking_a_sequence_is_left_out_and_said(multiseq: MultiSeq, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="curator"):
        ds = _ds(multiseq)
    assert [c["case_id"] for c in ds.cases] == ["TinyBrats__study0__t1c", "TinyBrats__study1__t1c"]
    assert ds.left_out == {"TinyBrats__study2": "its study has no t2f case (selected: t1c)"}  # as the exports say
    assert "1 study left out" in caplog.text and "TinyBrats__study2: its study has no t2f" in caplog.text
    plain = _ds(multiseq, channels=None)  # one case per sequence, as before
    assert len(plain.cases) == 5 and plain.left_out == {} and plain[0]["image"].shape == (1, *PATCH)
    assert "channel_ids" not in plain[0]


def test_a_study_whose_grids_are_no_voxel_shift_is_left_out_not_resampled() -> None:
    ref = np.diag([2.0, 2.0, 2.5, 1.0])
    shifted, finer, half = ref.copy(), np.diag([1.0, 2.0, 2.5, 1.0]), ref.copy()
    shifted[:3, 3], half[:3, 3] = (4.0, -2.0, 5.0), (1.0, 0.0, 0.0)
    cases = [{"case_id": f"D__s{i}__{seq}", "dataset": "D", "modality": "MR", "store": f"stores/D__s{i}__{seq}.zarr",
              "sequence": seq, "study_key": f"k{i}", "affine": list(a.ravel())}
             for i, other in enumerate((shifted, finer, half)) for seq, a in (("t1c", ref), ("t2f", other))]
    refs, left = studies(cases, ["t1c", "t2f"])
    assert [r["case_id"] for r in refs] == ["D__s0__t1c"] and refs[0]["channels"][0]["shift"] == (-2, 1, -2)
    assert sorted(left) == ["D__s1", "D__s2"]
    # the reason says how the grids differ: HECKTOR's CT and PET stores (same spacing and direction,
    # origins a fraction of a voxel apart) were told "another spacing or direction" (tester 27)
    assert left["D__s1"].startswith("the grid of its t2f case is not its t1c case's shifted by whole voxels: "
                                    "another spacing (2×2×2.5 mm vs 1×2×2.5 mm)")
    assert left["D__s2"].startswith("the grid of its t2f case is not its t1c case's shifted by whole voxels: offset "
                                    "by a fraction of a voxel: (-1, 0, 0) mm along the grid axes (same spacing and "
                                    "direction)")
    assert all("the loader does not resample (the nnU-Net and MONAI exports with --channels resample" in why
               for why in left.values())
    # none left: the error gives the reasons, not "check the sequences and study_key" (they are right)
    with pytest.raises(ReleaseError, match=r"has a case of each of \['t1c', 't2f'\] \(2 left out: D__s1: the grid") as e:
        PatchDataset._studies(SimpleNamespace(root=Path("rel")), cases[2:], "true", ["t1c", "t2f"], [])  # type: ignore[arg-type]
    assert "offset by a fraction of a voxel" in str(e.value) and "study_key" not in str(e.value.remedy)
    assert "export them (curator export nnunet/monai --channels resample linearly)" in str(e.value.remedy)


def test_grid_advice_stays_when_the_selection_also_holds_cases_without_a_sequence() -> None:
    """The studies whose grids are a fraction of a voxel apart keep their remedy (export them, the
    exports resample) beside single-sequence cases of other datasets, and are named first: a
    "has no sequence" case hid it behind "check channels, where and split" (tester 35 #3)."""
    ref, half = np.diag([2.0, 2.0, 2.5, 1.0]), np.diag([2.0, 2.0, 2.5, 1.0])
    half[:3, 3] = (1.0, 0.0, 0.0)
    cases = [{"case_id": f"D__s0__{seq}", "dataset": "D", "modality": "MR", "store": f"stores/D__s0__{seq}.zarr",
              "sequence": seq, "study_key": "k0", "affine": list(a.ravel())} for seq, a in (("t1c", ref), ("t2f", half))]
    cases += [{"case_id": f"A__ct{i}", "dataset": "A", "modality": "CT", "store": f"stores/A__ct{i}.zarr",
               "sequence": None, "study_key": f"a{i}", "affine": list(ref.ravel())} for i in range(3)]
    with pytest.raises(ReleaseError, match=r"\(4 left out: D__s0: the grid of its t2f case") as e:
        PatchDataset._studies(SimpleNamespace(root=Path("rel")), cases, "true", ["t1c", "t2f"], [])  # type: ignore[arg-type]
    assert str(e.value.remedy).startswith("1 of them hold every channel but their grids do not line up (above): "
                                          "export them (curator export nnunet/monai --channels resample linearly); "
                                          "for the other 3, check channels, where and split"), e.value.remedy


def test_a_first_channel_without_labels_says_which_channel_holds_them(multiseq: MultiSeq, tmp_path: Path) -> None:
    """The t2f cases hold no label (their store_terms rows gone: a t2f whose own label ingest
    rejected), the t1c cases of the same studies do: with channels=["t2f", "t1c"] the refusal
    says to list t1c first, as the nnU-Net export does — not labelled_only=False, whose items
    would have no labels at all (tester 35 #2)."""
    import shutil

    import pyarrow.parquet as pq

    from curator.schema import to_arrow
    from curator.testing.releases import reseal

    rel = tmp_path / "rel"
    shutil.copytree(multiseq.release, rel)
    rows = pq.read_table(rel / "store_terms.parquet").to_pylist()
    assert any(r["case_id"].endswith("__t2f") for r in rows)
    pq.write_table(to_arrow("store_terms", [r for r in rows if not r["case_id"].endswith("__t2f")]),
                   rel / "store_terms.parquet")
    reseal(rel)
    with pytest.raises(ReleaseError, match="no selected case holds any of") as e:
        PatchDataset(rel, terms=TERMS, patch_size=PATCH, split=None, channels=["t2f", "t1c"])
    assert str(e.value.remedy) == (
        "the t2f cases of 2 studies (the first channel, whose labels are read) hold no kidney, kidney_tumor, but "
        "their t1c cases do: list t1c first in channels= to use their labels"), e.value.remedy
    assert PatchDataset(rel, terms=TERMS, patch_size=PATCH, split=None, channels=["t1c", "t2f"]).cases


def test_bad_channels_are_refused_with_what_to_give(multiseq: MultiSeq) -> None:
    with pytest.raises(ConfigError, match="no selected case has the sequence t1n") as e:
        _ds(multiseq, channels=["t1c", "t1n"])
    assert "t1c, t2f" in str(e.value.remedy)
    with pytest.raises(ConfigError, match="give each sequence once"):
        _ds(multiseq, channels=["t1c", "t1c"])
    with pytest.raises(ReleaseError, match=r"channels = 't1c': give a list"):
        _ds(multiseq, channels="t1c")
    with pytest.raises(ReleaseError, match="no study WHERE .* has a case of each of"):
        _ds(multiseq, channels=["t1c", "t2f"], where="case_id in ('TinyBrats__study2__t1c', 'TinyBrats__study0__t2f')")


def test_a_channel_mixing_modalities_is_refused_as_the_exports_refuse_it(multiseq: MultiSeq, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Study 1's t2f case relabelled CT: channel 1 would hold MR in some studies and CT in others."""
    import shutil

    import pyarrow.parquet as pq

    from curator.schema import to_arrow
    from curator.testing.releases import reseal

    rel = tmp_path / "rel"
    shutil.copytree(multiseq.release, rel)
    for table in ("cases", "preprocessed"):
        rows = pq.read_table(rel / f"{table}.parquet").to_pylist()
        for r in rows:
            if r["case_id"] == "TinyBrats__study1__t2f":
                r["modality"] = "CT"
        pq.write_table(to_arrow(table, rows), rel / f"{table}.parquet")
    reseal(rel)
    with pytest.raises(ReleaseError, match=r"channel 1 \(t2f\) mixes modalities \['CT', 'MR'\]"):
        PatchDataset(rel, terms=TERMS, patch_size=PATCH, split=None, channels=["t1c", "t2f"])
    assert PatchDataset(rel, terms=TERMS, patch_size=PATCH, split=None, channels=["t1c", "t2f"],
                        where="case_id not like '%study1%'").cases  # without that study: one meaning per channel


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
            and a["case_id"] == b["case_id"] and list(a["channel_ids"]) == list(b["channel_ids"]))


def test_spawned_workers_and_one_open_store_draw_the_same_items(multiseq: MultiSeq) -> None:
    """Two spawn workers (the dataset pickles) and max_open=1 (a study's stores evict each other)
    give the in-process items."""
    ds = _ds(multiseq, samples_per_epoch=6)
    ds.set_epoch(2)
    here = [ds[i] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert all(_same(a, b) for a, b in zip(loader, here, strict=True))
    tight = _ds(multiseq, samples_per_epoch=6, max_open=1)
    tight.set_epoch(2)
    assert all(_same(tight[i], here[i]) for i in range(len(ds)))
    assert len(tight._stores) == 1
