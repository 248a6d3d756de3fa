"""Release step (stores, locations, checksums) and the PyTorch PatchDataset over the release."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import curator
from curator.preprocess.terms import term_id
from curator.release.query import Release
from curator.release.training import training_view, with_parts
from curator.store import CaseStore, store_sha256
from curator.taxonomy import load_taxonomy
from curator.testing.releases import reseal
from curator.torch import PatchDataset
from tests.preprocess.conftest import MultiSeq, Tiny


def test_release_holds_linked_stores_with_checksums(tiny: Tiny) -> None:
    info = json.loads((tiny.release / "release.json").read_text())
    hashes = {cid: meta["sha256"] for cid, meta in info["stores"].items()}
    assert len(hashes) == 5
    for cid, h in hashes.items():
        assert store_sha256(tiny.release / "stores" / f"{cid}.zarr") == h
    src = tiny.workspace / "stores" / "TinyKits__case_00000.zarr" / "image" / "zarr.json"
    dst = tiny.release / "stores" / "TinyKits__case_00000.zarr" / "image" / "zarr.json"
    assert src.stat().st_ino == dst.stat().st_ino  # hard link, no copy


def test_store_terms_match_the_masks(tiny: Tiny) -> None:
    rel = curator.open_release(str(tiny.release))
    rows = rel.sql("select case_id, term_id, layer, voxels, locations from store_terms").fetchall()
    assert rows
    for cid, term, layer, voxels, loc in rows:
        s = CaseStore(tiny.release / "stores" / f"{cid}.zarr")
        m = s.mask(term, layer)
        assert int(m.sum()) == voxels
        with np.load(tiny.release / loc) as z:
            pts = z[f"{layer}/{term}"]
        assert len(pts) == min(voxels, 2000) and m[tuple(pts.T)].all()


def _ds(tiny: Tiny, **kw: object) -> PatchDataset:
    args = {"terms": [term_id("kidney"), term_id("liver"), term_id("kidney tumor")], "patch_size": (24, 24, 8),
            "samples_per_epoch": 12, "seed": 3}
    args.update(kw)
    return PatchDataset(tiny.release, **args)  # type: ignore[arg-type]


def _boxes(start: list[int], patch: tuple[int, ...], shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The patch's box in the store (clipped) and the part of the patch it fills."""
    box = tuple(slice(max(x, 0), min(x + p, n)) for x, p, n in zip(start, patch, shape))
    return box, tuple(slice(b.start - x, b.stop - x) for b, x in zip(box, start))


def test_items_are_deterministic_and_masks_match_store(tiny: Tiny) -> None:
    ds = _ds(tiny)
    a, b = ds[4], ds[4]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
    assert a["image"].shape == (1, 24, 24, 8) and a["masks"].shape == (3, 24, 24, 8)
    assert a["prompts"][0] == f"(ct) {a['prompts'][0][5:]}" and a["prompts"][0].startswith("(ct) ")
    for i in range(len(ds)):
        it = ds[i]
        s = CaseStore(tiny.release / "stores" / f"{it['case_id']}.zarr")
        start = it["start"].tolist()
        box, inner = _boxes(start, (24, 24, 8), s.geometry.shape)
        for k, t in enumerate(ds.terms):
            assert np.array_equal(it["masks"][k].numpy()[inner].astype(bool), s.mask(t, box=box))
            assert bool(it["present"][k]) == (t in s.terms())
    ds.set_epoch(1)
    assert not torch.equal(ds[4]["image"], a["image"]) or ds[4]["case_id"] != a["case_id"]


def test_iterating_the_dataset_ends_after_one_epoch(tiny: Tiny) -> None:
    """`for item in ds` (and list(ds)) never ended: any index gave a patch, and Python's iteration
    stops only at an IndexError. Indices are [-len, len) as for a list."""
    ds = _ds(tiny)
    items = list(itertools.islice(iter(ds), len(ds) + 3))  # bounded: the old dataset never stopped
    assert len(items) == len(ds)
    assert torch.equal(ds[-1]["image"], items[-1]["image"])
    for bad in (len(ds), len(ds) + 5, -len(ds) - 1):
        with pytest.raises(IndexError):
            ds[bad]


def test_foreground_oversampling_hits_foreground(tiny: Tiny) -> None:
    fg = _ds(tiny, foreground_fraction=1.0, samples_per_epoch=30)
    hits = sum(bool(fg[i]["masks"].any()) for i in range(len(fg)))
    assert hits == len(fg)


def _foreground_hits(tiny: Tiny, terms: list[str], **kw: object) -> np.ndarray:
    """How many one-voxel foreground patches fall in each term (TinyTotalSeg holds kidney and
    both its sides, liver and spleen)."""
    ds = PatchDataset(tiny.release, terms=[term_id(t) for t in terms], patch_size=(1, 1, 1),
                      samples_per_epoch=400, foreground_fraction=1.0, split=None,
                      where="p.dataset = 'TinyTotalSeg'", **kw)  # type: ignore[arg-type]
    return np.sum([ds[i]["masks"][:, 0, 0, 0].numpy() for i in range(len(ds))], axis=0)


def test_foreground_is_shared_between_requested_terms_not_their_parts(tiny: Tiny) -> None:
    """Each requested term the case holds is one draw, whatever the number of its parts: the
    kidney (held itself, with both sides as parts) counted three times against the spleen."""
    kidney, spleen = _foreground_hits(tiny, ["kidney", "spleen"])
    assert kidney + spleen == 400
    assert 150 <= spleen <= 250, (kidney, spleen)


@pytest.mark.parametrize("order", [["kidney", "left kidney"], ["left kidney", "kidney"]])
def test_term_weights_hold_for_a_term_that_is_part_of_another(tiny: Tiny, order: list[str]) -> None:
    """A requested term that is also a part of another requested term keeps its own weight,
    whichever is listed first."""
    weights = {term_id("kidney"): 0.0, term_id("left kidney"): 1.0}
    hits = dict(zip(order, _foreground_hits(tiny, order, term_weights=weights), strict=True))
    assert hits["left kidney"] == 400


def test_where_filters_and_balancing_weights(tiny: Tiny) -> None:
    with pytest.warns(UserWarning, match=f"no selected case holds '{term_id('liver')}'"):  # KiTS labels no liver
        ds = _ds(tiny, where="p.dataset = 'TinyKits'")
    assert {c["dataset"] for c in ds.cases} == {"TinyKits"}
    both = _ds(tiny, repeat=False)
    w = {c["dataset"]: x for c, x in zip(both.cases, both.weights)}
    # 1/sqrt(N): each TinyKits case (N=3) weighs sqrt(2/3) of a TinyTotalSeg case (N=2)
    assert w["TinyKits"] / w["TinyTotalSeg"] == pytest.approx((2 / 3) ** 0.5)


def test_case_weights_steer_which_cases_are_drawn(tiny: Tiny) -> None:
    """Setting the public ``weights`` changed nothing (the draws used a copy made once), and there
    was no other way to oversample the cases holding a rare term."""
    from curator.errors import ReleaseError

    tumour = term_id("kidney tumor")
    plain = _ds(tiny, samples_per_epoch=60)
    ids = [c["case_id"] for c in plain.cases]
    holders = {c for c in ids if tumour in plain._held[c]}
    assert holders and set(ids) - holders
    drawn = [plain[i]["case_id"] for i in range(len(plain))]
    assert set(drawn) - holders  # without case weights, cases without the tumour are drawn too

    def only_tumours(case: dict) -> float:
        assert set(case) == {"case_id", "dataset", "modality", "terms"}
        return 1.0 if tumour in case["terms"] else 0.0

    for given in (only_tumours, {c: 0.0 for c in ids if c not in holders}):
        ds = _ds(tiny, samples_per_epoch=60, case_weights=given)
        assert {ds[i]["case_id"] for i in range(len(ds))} <= holders
        assert [w > 0 for w in ds.weights] == [c in holders for c in ids]
    # a factor on SAT's weights, renormalised
    three = _ds(tiny, case_weights={ids[0]: 3.0})
    expect = plain.weights * np.where(np.asarray(ids) == ids[0], 3.0, 1.0)
    assert three.weights == pytest.approx(expect / expect.sum()) and three.weights.sum() == pytest.approx(1.0)
    with pytest.raises(AttributeError, match="read-only.*case_weights"):
        plain.weights = np.ones(len(ids)) / len(ids)
    with pytest.raises(ValueError, match="read-only"):
        plain.weights[0] = 1.0
    for bad, says in (({"Nobody__1": 2.0}, "does not hold"), ({ids[0]: -1.0}, "finite number >= 0"),
                      ({ids[0]: float("nan")}, "finite number >= 0"), ({c: 0 for c in ids}, "weight 0"),
                      ([1.0, 2.0], "give a mapping")):
        with pytest.raises(ReleaseError, match=says):
            _ds(tiny, case_weights=bad)


def test_dataloader_workers_and_distributed_sampler(tiny: Tiny) -> None:
    ds = _ds(tiny)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2)
        for batch in loader:
            seen += list(batch["case_id"])
            assert batch["image"].dtype == torch.float32
            # the default collate: per term a tuple of the items' layers, as for prompts
            assert len(batch["layers"]) == len(ds.terms) and all(len(x) == len(batch["case_id"]) for x in batch["layers"])
            assert all(x in ("original", "") for x in itertools.chain(*batch["layers"]))
            assert [[x != "" for x in per] for per in batch["layers"]] == batch["present"].T.tolist()
    assert len(seen) == len(ds)
    single = [ds[i]["case_id"] for i in range(len(ds))]
    assert sorted(seen) == sorted(single)


def test_each_term_comes_from_its_best_layer(tiny: Tiny, tmp_path) -> None:
    """A case with a revised layer (reviewed pseudo labels) still trains on its annotated terms:
    the layer is chosen per term (original, then revised; pseudo on request), not per case."""
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    cid = "TinyTotalSeg__s0000"
    store = CaseStore(rel / "stores" / f"{cid}.zarr")
    liver, kidney, spleen = term_id("liver"), term_id("kidney"), term_id("spleen")
    orig_liver = store.mask(liver, "original")
    revised = np.zeros(store.geometry.shape, np.uint8)
    revised[orig_liver] = 1  # a reviewer's label for a term the case holds (ignored: original wins) ...
    revised[:4] = 2  # ... and for a term it does not annotate
    store.write_layer("revised", [(revised, {1: [liver], 2: ["aorta"]})], {"origin": "revised"})
    pseudo = np.zeros_like(revised)
    pseudo[-4:] = 1
    store.write_layer("pseudo", [(pseudo, {1: ["aorta"], 2: [spleen]})], {"origin": "pseudo"})
    store = CaseStore(store.path)
    reseal(rel)  # as if the release had been built with these layers
    assert store.term_layers([liver, "aorta"], ("original", "revised")) == {liver: "original", "aorta": "revised"}
    terms = [liver, kidney, "aorta"]
    shape = store.geometry.shape
    with pytest.warns(UserWarning, match="no case of the release holds 'aorta'"):  # store_terms predates the layers
        item = PatchDataset(rel, terms=terms, where=f"p.case_id = '{cid}'", patch_size=shape, normalise=False)[0]
    assert item["present"].tolist() == [True, True, True]
    got = item["masks"].numpy().astype(bool)
    assert np.array_equal(got[0], orig_liver)
    kidney_parts = [p for p in with_parts(load_taxonomy(), kidney) if p in store.terms("original")]
    assert np.array_equal(got[1], store.masks(kidney_parts, "original").any(axis=0))
    assert np.array_equal(got[2], revised == 2)
    assert item["layers"] == ["original", "original", "revised"]  # where each term's mask came from
    with pytest.warns(UserWarning, match="no case of the release holds 'aorta'"):
        only_pseudo = PatchDataset(rel, terms=["aorta"], where=f"p.case_id = '{cid}'", patch_size=shape,
                                   normalise=False, layers=("pseudo",), labelled_only=False)[0]
    assert np.array_equal(only_pseudo["masks"][0].numpy().astype(bool), pseudo == 1)
    assert only_pseudo["layers"] == ["pseudo"]
    with pytest.warns(UserWarning) as said:
        mixed = PatchDataset(rel, terms=["aorta", spleen, term_id("kidney tumor")], where=f"p.case_id = '{cid}'",
                             patch_size=shape, layers=("pseudo", "original"))[0]
    assert ["no case of the release holds 'aorta'" in str(w.message) for w in said] == [True, False]
    assert f"no selected case holds '{term_id('kidney tumor')}'" in str(said[1].message)
    assert mixed["layers"] == ["pseudo", "pseudo", ""] and mixed["present"].tolist() == [True, True, False]


def test_a_term_is_built_from_its_parts_only_when_they_complete_it(tiny: Tiny, tmp_path) -> None:
    """Half a partition is not the term: one pseudo kidney is no "kidney", and TotalSegmentator's
    kidney without any mass label is no "kidney and mass" — absent, not the part that exists."""
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    ts, kits = "TinyTotalSeg__s0000", "TinyKits__case_00000"
    store = CaseStore(rel / "stores" / f"{ts}.zarr")
    shape = store.geometry.shape
    left, right = store.mask("kidney_left", "original"), store.mask("kidney_right", "original")
    assert left.any() and right.any()
    one = np.where(left, 1, 0).astype(np.uint8)
    store.write_layer("pseudo", [(one, {1: ["kidney_left"]})], {"origin": "pseudo"})

    def item(cid: str, terms: list[str], layers: tuple[str, ...] = ("original", "revised")) -> dict:
        reseal(rel)  # as if the release had been built with the layers written
        ds = PatchDataset(rel, terms=terms, where=f"p.case_id = '{cid}'", patch_size=shape, normalise=False,
                          layers=layers, foreground_fraction=1.0, labelled_only=False)  # store_terms predates edits
        return ds[0]

    with pytest.warns(UserWarning, match="no case of the release holds 'kidney'"):  # store_terms predates it
        got = item(ts, ["kidney"], ("pseudo",))
    assert got["present"].tolist() == [False] and not got["masks"].any()
    with pytest.warns(UserWarning, match="no selected case holds 'kidney_and_mass'"):
        got = item(ts, ["kidney_and_mass", "kidney_left"])
    assert got["present"].tolist() == [False, True] and not got["masks"][0].any()
    assert np.array_equal(got["masks"][1].numpy().astype(bool), left)
    both = np.where(left, 1, np.where(right, 2, 0)).astype(np.uint8)
    store.write_layer("pseudo", [(both, {1: ["kidney_left"], 2: ["kidney_right"]})], {"origin": "pseudo"})
    with pytest.warns(UserWarning):  # store_terms predates the new layer
        got = item(ts, ["kidney"], ("pseudo",))
    assert got["present"].tolist() == [True] and np.array_equal(got["masks"][0].numpy().astype(bool), left | right)
    whole = item(kits, ["kidney_and_mass"])  # KiTS labels kidney, tumour and cyst: the whole organ
    kstore = CaseStore(rel / "stores" / f"{kits}.zarr")
    assert whole["present"].tolist() == [True]
    assert int(whole["masks"][0].sum()) == int(kstore.mask("kidney_and_mass", "original").sum()) > 0


def test_leaf_terms_inside_the_volume_match_the_store(tiny: Tiny) -> None:
    """Leaf terms all held by the case, patch inside the volume: masks come straight from the store read."""
    terms = [term_id("liver"), term_id("spleen")]
    ds = _ds(tiny, terms=terms, where="p.dataset = 'TinyTotalSeg'", samples_per_epoch=16)
    inside = 0
    for i in range(len(ds)):
        it = ds[i]
        s = CaseStore(tiny.release / "stores" / f"{it['case_id']}.zarr")
        start = it["start"].tolist()
        box, inner = _boxes(start, (24, 24, 8), s.geometry.shape)
        inside += all(b.stop - b.start == p for b, p in zip(box, (24, 24, 8)))
        assert it["masks"].dtype == torch.uint8 and it["present"].all()
        for k, t in enumerate(terms):
            assert np.array_equal(it["masks"][k].numpy()[inner].astype(bool), s.mask(t, box=box))
    assert inside > 0


def _with_decisions(tiny: Tiny, tmp_path, dropped: str, kept: str, excluded: tuple[str, str, str]):
    """A copy of the tiny release with a duplicate group (``dropped`` not kept) and one label QC excluded."""
    import shutil

    import polars as pl

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    pl.DataFrame({"group_id": ["dup-1", "dup-1"], "case_id": [kept, dropped], "kept": [True, False],
                  "kept_case_id": [kept, kept]}).write_parquet(rel / "duplicates.parquet")
    labels = rel / "labels.parquet"
    rows = pl.read_parquet(labels) if labels.exists() else pl.DataFrame(
        {"case_id": [excluded[0]], "term_id": [excluded[1]], "layer": [excluded[2]]})
    flag = (pl.col("case_id") == excluded[0]) & (pl.col("term_id") == excluded[1]) & (pl.col("layer") == excluded[2])
    rows = rows.with_columns(pl.when(flag).then(pl.lit("exclude")).otherwise(pl.lit("include")).alias("qc_decision"))
    assert rows.filter(pl.col("qc_decision") == "exclude").height == 1
    rows.write_parquet(labels)
    reseal(rel)
    return rel


def test_training_view_leaves_out_dropped_duplicates_and_excluded_labels(tiny: Tiny, tmp_path) -> None:
    """By default the loader and the exports read the training view: no dropped duplicate, no
    QC-excluded label (nothing deleted: both come back on request)."""
    from curator.export import export_monai, export_nnunet

    a, b = "TinyTotalSeg__s0000", "TinyTotalSeg__s0001"
    liver, kidney = term_id("liver"), term_id("kidney")
    rel = _with_decisions(tiny, tmp_path, dropped=b, kept=a, excluded=(a, "kidney_left", "original"))
    shape = tuple(CaseStore(rel / "stores" / f"{a}.zarr").geometry.shape)
    ds = PatchDataset(rel, terms=[liver, kidney], where="dataset = 'TinyTotalSeg'", patch_size=shape)
    # one member of the group: b, as a's kidney is excluded (a label QC excluded does not count)
    assert [c["case_id"] for c in ds.cases] == [b] and ds.view.stand_ins == {a: b}
    with pytest.warns(UserWarning, match="no selected case holds 'kidney'"):
        item = PatchDataset(rel, terms=[liver, kidney], where=f"p.case_id = '{a}'", patch_size=shape)[0]
    # kidney_left was excluded: the derived kidney (left + right) has no trustworthy mask left in a
    assert item["present"].tolist() == [True, False] and not item["masks"][1].any()
    full = PatchDataset(rel, terms=[liver, kidney], where="dataset = 'TinyTotalSeg'", patch_size=shape,
                        duplicates=True, qc_filter=False)
    assert [c["case_id"] for c in full.cases] == [a, b]
    got = {full[i]["case_id"]: full[i] for i in range(len(full))}
    assert got[a]["present"].tolist() == [True, True] and got[a]["masks"][1].any()

    report = export_nnunet(rel, tmp_path / "raw", dataset_id=7, name="K", terms=[kidney], where="modality = 'CT'")
    assert a not in report.cases and b in report.cases  # b stands in for its kept copy a
    report = export_nnunet(rel, tmp_path / "raw2", dataset_id=7, name="K", terms=[kidney], where="modality = 'CT'",
                           duplicates=True)
    # a's kidney is there but QC excluded it: said so, with the option that exports it anyway
    assert report.skipped[a].startswith("QC excluded its kidney label") and "--no-qc-filter" in report.skipped[a]
    assert b in report.cases
    both = export_monai(rel, tmp_path / "monai", terms=[liver, kidney], where="dataset = 'TinyTotalSeg'",
                        duplicates=True, qc_filter=False)
    assert both.cases == [a, b]


def test_loader_and_exports_refuse_what_cannot_be_meant(tiny: Tiny, tmp_path) -> None:
    from curator.errors import ReleaseError
    from curator.export import export_monai, export_nnunet

    with pytest.raises(ReleaseError, match="unknown term id 'livr'") as e:
        PatchDataset(tiny.release, terms=["livr"])
    assert "liver" in str(e.value)
    with pytest.raises(ReleaseError, match="unknown term id"):
        export_monai(tiny.release, tmp_path / "m", terms=["livr"])
    with pytest.raises(ReleaseError, match="unknown label layers"):
        PatchDataset(tiny.release, terms=[term_id("liver")], layers=("pseudoo",))
    liver = term_id("liver")
    for bad, says in (({"patch_size": (0, 0, 0)}, "three positive whole numbers"),
                      ({"patch_size": 96}, "three positive whole numbers"),
                      ({"patch_size": (96.7, 96, 32)}, "three positive whole numbers"),
                      ({"foreground_fraction": 2.0}, "foreground_fraction in"),
                      ({"terms": "liver"}, r"terms = 'liver': give a list"),
                      ({"layers": "original"}, r"layers = 'original': give a list"),
                      ({"terms": [liver, "spleen", liver]}, f"term '{liver}' requested more than once"),
                      ({"samples_per_epoch": 0}, "give a positive whole number"),
                      ({"samples_per_epoch": 2.5}, "give a positive whole number"),
                      ({"term_weights": {"spleen": 2.0}}, "not among the terms"),
                      ({"term_weights": {liver: -1}}, "a finite number >= 0"),
                      ({"term_weights": {liver: float("nan")}}, "a finite number >= 0"),
                      ({"where": "dataset = 'Nope'"}, r"matches WHERE dataset = 'Nope'\. What to do: widen"),
                      ({"split": "training"}, "give train, val and/or test")):
        with pytest.raises(ReleaseError, match=says):
            PatchDataset(tiny.release, **{"terms": [liver], **bad})  # type: ignore[arg-type]
    assert len(PatchDataset(tiny.release, terms=[liver], split=None, where="s.split = 'train'").cases) == len(
        PatchDataset(tiny.release, terms=[liver]).cases)  # the splits table as `s`, as in the exports
    with pytest.raises(ReleaseError, match="no case of the release holds 'heart'"):
        export_monai(tiny.release, tmp_path / "m", terms=["heart"], partial=True)
    with pytest.warns(UserWarning, match="no case of the release holds 'heart'"):
        PatchDataset(tiny.release, terms=["heart", term_id("liver")])
    with pytest.raises(ReleaseError, match="query_error|Referenced column") as e:
        PatchDataset(tiny.release, terms=[term_id("liver")], where="no_such_column = 1")
    # what the condition can name, not every table of the release as for `curator query`
    assert e.value.kind == "query_error" and "where 'no_such_column = 1'" in e.value.detail
    assert "over preprocessed p, cases c and splits s" in (e.value.remedy or "") and "tables:" not in e.value.remedy
    with pytest.raises(ReleaseError) as e:
        export_monai(tiny.release, tmp_path / "m0", terms=[liver], where="datset = 'TinyKits'")
    assert e.value.detail.startswith("--where \"datset = 'TinyKits'\"") and '"c.dataset"' in e.value.detail
    assert (e.value.remedy or "").startswith("--where is a SQL condition on one row per case")
    for make in (lambda: PatchDataset(tiny.release, terms=[liver], where="nonsense ==="),  # a syntax error:
                 lambda: export_nnunet(tiny.release, tmp_path / "n", dataset_id=8, name="S", terms=[liver],
                                       where="nonsense ==="),
                 lambda: export_monai(tiny.release, tmp_path / "m", terms=[liver], where="nonsense ===")):
        with pytest.raises(ReleaseError, match="syntax error") as e:  # the user's, not a raw ParserException
            make()
        assert e.value.kind == "query_error" and "fix the SQL" in str(e.value)
    export_nnunet(tiny.release, tmp_path / "raw", dataset_id=9, name="A", terms=[term_id("liver")])
    with pytest.raises(ReleaseError, match="id 9 is taken by Dataset009_A"):
        export_nnunet(tiny.release, tmp_path / "raw", dataset_id=9, name="B", terms=[term_id("liver")])


def test_nnunet_export_keeps_test_cases_out_of_training_and_writes_the_release_fold(tiny: Tiny, tmp_path) -> None:
    import shutil

    import polars as pl

    from curator.export import export_nnunet

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    splits = pl.read_parquet(rel / "splits.parquet")
    cases = sorted(splits["case_id"])
    test, val = cases[0], cases[1]
    splits = splits.with_columns(pl.when(pl.col("case_id") == test).then(pl.lit("test"))
                                 .when(pl.col("case_id") == val).then(pl.lit("val"))
                                 .otherwise(pl.lit("train")).alias("split"))
    splits.write_parquet(rel / "splits.parquet")
    reseal(rel)
    kidney = term_id("kidney")
    report = export_nnunet(rel, tmp_path / "raw", dataset_id=11, name="K", terms=[kidney])
    folder = report.folder
    assert (folder / "imagesTs" / f"{test}_0000.nii.gz").exists() and (folder / "labelsTs" / f"{test}.nii.gz").exists()
    assert not (folder / "imagesTr" / f"{test}_0000.nii.gz").exists()
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["numTraining"] == len(list((folder / "imagesTr").iterdir())) == len(report.cases) - 1
    (fold,) = json.loads((folder / "splits_final.json").read_text())
    assert fold["val"] == [val] and test not in fold["train"] and val not in fold["train"]
    assert sorted(fold["train"] + fold["val"]) == sorted(c for c in report.cases if c != test)
    # TotalSegmentator's whole-organ kidney may hold a tumour, KiTS' not: said once
    said = [n for n in report.notes if not n.startswith("the exported cases come from")]
    assert len(said) == 1 and said[0].startswith("warning: 'kidney' may mean different things"), report.notes
    # a test image of a dataset that annotates none of the terms went to imagesTs "for inference",
    # though it can never be scored (and brought its dataset's licence): left out and named
    # (an unlabelled test image of a dataset annotating the terms still goes: tests/release/test_release_exports.py)
    store_terms = pl.read_parquet(rel / "store_terms.parquet")
    lacking = sorted(set(store_terms["term_id"]) - set(store_terms.filter(
        pl.col("case_id").str.starts_with(test.split("__")[0] + "__"))["term_id"]))
    report = export_nnunet(rel, tmp_path / "raw3", dataset_id=13, name="T", terms=[lacking[0]])
    assert test not in report.images_only and "annotates none of" in report.skipped[test]
    assert not (report.folder / "imagesTs" / f"{test}_0000.nii.gz").exists()
    assert json.loads((report.folder / "curator_export.json").read_text())["test_images_without_labels"] == []
    from curator.export import export_monai

    monai = export_monai(rel, tmp_path / "monai3", terms=[lacking[0]])
    assert "test" not in json.loads((monai.folder / "datalist.json").read_text()) and test in monai.skipped
    # no exported training case in val: folds that keep each split unit together (tester 29: a
    # cine's ED and ES frames, one patient, fell on both sides of nnU-Net's own folds by case)
    alone = export_nnunet(rel, tmp_path / "raw2", dataset_id=12, name="K", terms=[kidney],
                          where=f"case_id <> '{val}'")
    folds = json.loads((alone.folder / "splits_final.json").read_text())
    training = sorted(c for c in alone.cases if c != test)
    unit = dict(zip(splits["case_id"], splits["group_key"], strict=True))
    assert len(folds) == min(5, len({unit[c] for c in training})) >= 2
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == training and fold["val"]
        assert not {unit[c] for c in fold["train"]} & {unit[c] for c in fold["val"]}
    assert sorted(c for fold in folds for c in fold["val"]) == training  # each case validated once
    said = [n for n in alone.notes if not n.startswith(("the exported cases come from", "warning: 'kidney' may mean"))]
    assert len(said) == 1 and f"holds {len(folds)} folds that keep each split unit" in said[0], alone.notes
    # one unit: no fold to write, and the export says so
    one = export_nnunet(rel, tmp_path / "raw4", dataset_id=14, name="K", terms=[kidney],
                        where=f"case_id = '{training[0]}' or case_id = '{test}'")
    assert not (one.folder / "splits_final.json").exists()
    assert any("so no splits_final.json" in n for n in one.notes), one.notes


def test_unnormalised_items_are_in_physical_units(tiny: Tiny, tmp_path) -> None:
    """normalise=False gives HU: the stored values times the store's scale (float16 stores of a
    wide-range float CT carry scale 2, 4, ...)."""
    import shutil

    import zarr

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    cid = "TinyTotalSeg__s0000"
    path = rel / "stores" / f"{cid}.zarr"
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs["curator"])
    meta["normalisation"] = {**meta["normalisation"], "scale": 2.0}
    group.attrs["curator"] = meta
    reseal(rel)
    store = CaseStore(path)
    shape = store.geometry.shape
    item = PatchDataset(rel, terms=["liver"], where=f"p.case_id = '{cid}'", patch_size=shape, normalise=False)[0]
    assert np.array_equal(item["image"][0].numpy(), store.physical_image().astype(np.float32))
    assert np.array_equal(item["image"][0].numpy(), store.read("image").astype(np.float32) * 2)


@pytest.fixture
def tiny_copy(tiny: Tiny, tmp_path):  # type: ignore[no-untyped-def]
    """A copy of the tiny release whose TotalSegmentator s0000 is labelled for a gallbladder it
    lacks (annotated, no voxel) and whose s0001 is a test case."""
    import shutil

    import pyarrow.parquet as pq

    from curator.schema import to_arrow

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    row = {"case_id": "TinyTotalSeg__s0000", "dataset": "TinyTotalSeg", "term_id": "gallbladder",
           "term": "gallbladder", "origin": "original", "layer": "original", "derived": False, "annotated": True,
           "present": False, "voxels": 0, "volume_ml": 0.0}
    pq.write_table(to_arrow("labels", [row]), rel / "labels.parquet")
    splits = pq.read_table(rel / "splits.parquet").to_pylist()
    for r in splits:
        if r["case_id"] == "TinyTotalSeg__s0001":
            r["split"] = "test"
    pq.write_table(to_arrow("splits", splits), rel / "splits.parquet")
    reseal(rel)
    return rel


def test_a_term_labelled_absent_is_present_with_an_empty_mask(tiny_copy) -> None:  # type: ignore[no-untyped-def]
    """"The dataset labels gallbladders; this scan has none" is a true negative to train on, not
    "unknown" — in the loader and both exports; a case whose dataset does not label it stays unknown."""
    from curator.export import export_monai

    with pytest.warns(UserWarning, match="1 case.s. annotate it as absent"):
        ds = PatchDataset(tiny_copy, terms=["gallbladder", term_id("liver")], patch_size=(24, 24, 8), split=None,
                          samples_per_epoch=12)
    seen = {}
    for i in range(12):
        item = ds[i]
        seen[item["case_id"]] = item
        if item["case_id"] == "TinyTotalSeg__s0000":
            assert item["present"].tolist() == [True, True] and not item["masks"][0].any()
        elif item["case_id"] == "TinyTotalSeg__s0001":
            assert item["present"].tolist() == [False, True]
    assert {"TinyTotalSeg__s0000", "TinyTotalSeg__s0001"} <= set(seen)
    with pytest.warns(UserWarning, match="annotate it as absent"):
        rep = export_monai(tiny_copy, tiny_copy.parent / "monai", terms=["gallbladder"])
    assert rep.cases == ["TinyTotalSeg__s0000"]  # held as absent; the KiTS cases do not label it
    label = np.asarray(__import__("nibabel").load(tiny_copy.parent / "monai" / "labels"
                                                  / "TinyTotalSeg__s0000.nii.gz").dataobj)
    assert not label.any()


def test_the_default_split_is_train(tiny_copy) -> None:  # type: ignore[no-untyped-def]
    args = {"terms": [term_id("liver")], "patch_size": (24, 24, 8), "labelled_only": False}
    train = PatchDataset(tiny_copy, **args)  # type: ignore[arg-type]
    assert "TinyTotalSeg__s0001" not in {c["case_id"] for c in train.cases} and len(train.cases) == 4
    test = PatchDataset(tiny_copy, split="test", **args)  # type: ignore[arg-type]
    assert [c["case_id"] for c in test.cases] == ["TinyTotalSeg__s0001"]
    assert len(PatchDataset(tiny_copy, split=None, **args).cases) == 5  # type: ignore[arg-type]


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_padding_outside_the_volume_is_air(tiny: Tiny, multiseq: MultiSeq, modality: str) -> None:
    """A patch reaching past the volume: −1000 HU in physical units for CT (0 HU was a water border),
    0 for MR (its background: the window's lower bound was a bright frame), the window's lower
    bound once normalised."""
    release, term = (tiny.release, "liver") if modality == "CT" else (multiseq.release, "kidney")
    for normalise in (False, True):
        ds = PatchDataset(release, terms=[term_id(term)], patch_size=(96, 96, 8), normalise=normalise)
        item = ds[0]
        img = item["image"][0].numpy()
        shape = tuple(next(c["shape"] for c in ds.cases if c["case_id"] == item["case_id"]))
        start = item["start"].tolist()
        _, inside = _boxes(start, ds.patch, shape)
        outside = np.ones(ds.patch, bool)
        outside[inside] = False
        assert outside.any()
        store = CaseStore(release / "stores" / f"{item['case_id']}.zarr")
        norm = store.attrs["normalisation"]
        assert norm["clip"][0] > 0 or modality == "CT"  # an MR window above 0: padding with it differs
        want = ({"CT": -1000.0, "MR": 0.0}[modality] if not normalise
                else (norm["clip"][0] - norm["mean"]) / norm["std"])
        assert np.allclose(img[outside], want)


def test_the_dataset_pickles_and_set_epoch_reaches_persistent_workers(tiny: Tiny) -> None:
    """spawn / forkserver workers get a pickled dataset (it held a DuckDB connection); workers
    kept alive between epochs must see set_epoch (they kept drawing epoch 0)."""
    import pickle

    ds = _ds(tiny)
    ds[0]  # opens stores and the release's connection
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[5]["image"], ds[5]["image"]) and clone.epoch == ds.epoch
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    epochs = []
    for e in range(2):
        ds.set_epoch(e)
        epochs.append(torch.cat([b["start"] for b in loader]))
    assert not torch.equal(epochs[0], epochs[1])
    ds.set_epoch(1)
    assert torch.equal(epochs[1], torch.stack([ds[i]["start"] for i in range(len(ds))]))


def test_exports_build_a_term_from_parts_that_complete_it(tiny_copy) -> None:  # type: ignore[no-untyped-def]
    """A store holding the left and right kidney but no `kidney` of its own: the loader gave the
    union, the exports skipped the case ("holds no kidney")."""
    import shutil

    import nibabel as nib

    from curator.export import export_monai

    path = tiny_copy / "stores" / "TinyTotalSeg__s0000.zarr"
    old = CaseStore(path)
    left, right = old.mask("kidney_left"), old.mask("kidney_right")
    plane = left.astype(np.uint8) + 2 * right.astype(np.uint8)
    image, geometry, attrs = old.read("image"), old.geometry, old.attrs
    shutil.rmtree(path)
    CaseStore.create(path, geometry=geometry, attrs=attrs, image=image,
                     labels=[(plane, {1: ["kidney_left"], 2: ["kidney_right"]})])
    reseal(tiny_copy)
    rep = export_monai(tiny_copy, tiny_copy.parent / "m", terms=["kidney"], where="case_id = 'TinyTotalSeg__s0000'")
    assert rep.cases == ["TinyTotalSeg__s0000"], rep.skipped
    got = np.asarray(nib.load(tiny_copy.parent / "m" / "labels" / "TinyTotalSeg__s0000.nii.gz").dataobj)
    assert np.array_equal(got == 1, left | right) and left.any() and right.any()


def test_cases_holding_none_of_the_terms_are_left_out(tiny: Tiny) -> None:
    """terms=[liver]: the KiTS cases label no liver; their items would all be present = False."""
    liver = term_id("liver")
    ds = PatchDataset(tiny.release, terms=[liver], patch_size=(24, 24, 8), samples_per_epoch=6)
    assert {c["dataset"] for c in ds.cases} == {"TinyTotalSeg"}
    assert all(bool(ds[i]["present"][0]) for i in range(6))
    every = PatchDataset(tiny.release, terms=[liver], patch_size=(24, 24, 8), labelled_only=False)
    assert len(every.cases) == 5
    with pytest.raises(Exception, match="no selected case holds any of"):
        PatchDataset(tiny.release, terms=[liver], patch_size=(24, 24, 8), where="dataset = 'TinyKits'")


def test_repeat_factor_counts_the_annotation_the_dataset_trains_on(tiny: Tiny, tmp_path, monkeypatch) -> None:
    """SAT's R = (annotated foreground box / patch) × (annotated classes / 32): a pseudo layer's
    terms (not trained on by default) and a term held in two layers are no more annotation."""
    import shutil

    import polars as pl

    from curator.torch import sampling

    monkeypatch.setattr(sampling, "SAT_PATCH_VOXELS", 1)  # tiny volumes: R = box voxels × classes
    monkeypatch.setattr(sampling, "SAT_CLASSES", 1)
    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    cid = "TinyKits__case_00000"
    st = pl.read_parquet(rel / "store_terms.parquet")
    mine = st.filter((pl.col("case_id") == cid) & (pl.col("layer") == "original"))
    assert mine.height >= 2
    box = [int(np.prod(np.subtract(b1, b0))) for b0, b1 in zip(mine["bbox_start"].to_list(), mine["bbox_stop"].to_list())]

    def repeat(**kw: object) -> float:
        ds = PatchDataset(rel, terms=[term_id("kidney")], where=f"p.case_id = '{cid}'", patch_size=(8, 8, 4),
                          labelled_only=False, **kw)  # type: ignore[arg-type]
        return ds._repeat(ds.cases[0])

    before = repeat()
    assert before >= max(box) * mine["term_id"].n_unique()
    shape = CaseStore(rel / "stores" / f"{cid}.zarr").geometry.shape
    extra = pl.concat([
        mine.with_columns(pl.lit("revised").alias("layer")),  # the same terms reviewed again
        mine.head(1).with_columns(pl.lit("pseudo").alias("layer"), pl.lit("aorta").alias("term_id"),
                                  pl.lit([0, 0, 0]).cast(st.schema["bbox_start"]).alias("bbox_start"),
                                  pl.lit(list(shape)).cast(st.schema["bbox_stop"]).alias("bbox_stop")),
    ])
    pl.concat([st, extra]).write_parquet(rel / "store_terms.parquet")
    reseal(rel)
    assert repeat() == before
    assert repeat(layers=("original", "revised", "pseudo")) > before  # trained on: it counts


def _flip_a_byte(store: Path) -> Path:
    """Flip one bit in the middle of the largest shard of ``store``'s image (the bytes of a chunk)."""
    shard = max((p for p in (store / "image").rglob("*") if p.is_file() and p.name != "zarr.json"),
                key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x10
    shard.write_bytes(bytes(data))
    return shard


def test_a_damaged_store_is_refused_by_name_before_it_is_read(tiny: Tiny, tmp_path: Path) -> None:
    """A bit flipped in a chunk decodes into other voxels without a word, a label layer gone reads
    as "no such label", a location file gone as a bare FileNotFoundError in a worker: the loader and
    the exports check each store (and location file) against release.json first."""
    import shutil

    from curator.errors import ReleaseError
    from curator.export import export_monai

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    kits = sorted(p.name.removesuffix(".zarr") for p in (rel / "stores").glob("TinyKits__*.zarr"))
    flipped, no_layer, no_locations = kits[0], kits[1], kits[2]
    kidney = term_id("kidney")

    def item(cid: str, **kw: object) -> dict:
        ds = PatchDataset(rel, terms=[kidney], where=f"p.case_id = '{cid}'", patch_size=(24, 24, 8),
                          foreground_fraction=1.0, **kw)  # type: ignore[arg-type]
        return ds[0]

    before = {c: item(c) for c in kits}  # intact: read as ever (and remembered as checked)
    _flip_a_byte(rel / "stores" / f"{flipped}.zarr")
    shutil.rmtree(rel / "stores" / f"{no_layer}.zarr" / "labels" / "original")
    (rel / "locations" / f"{no_locations}.npz").unlink()
    for cid, says in ((flipped, f"the store of case {flipped}: its files differ"),
                      (no_layer, f"the store of case {no_layer}: its files differ"),
                      (no_locations, f"locations/{no_locations}.npz cannot be read")):
        with pytest.raises(ReleaseError, match=says) as e:
            item(cid)
        assert e.value.kind == "release_corrupt" and e.value.case_id == cid and "curator verify" in str(e.value)
    # the check is what stands between the damage and the training data: without it, a layer gone is "no kidney"
    assert item(no_layer, verify=False, labelled_only=False)["present"].tolist() == [False]
    assert before[no_layer]["present"].tolist() == [True]
    rep = export_monai(rel, tmp_path / "m", terms=[kidney], where="dataset = 'TinyKits'")
    assert flipped in rep.skipped and no_layer in rep.skipped and "its files differ" in rep.skipped[flipped]
    assert no_locations in rep.cases  # exports do not read the location files
    assert any(flipped in n and "curator verify" in n for n in rep.notes)
    assert not (tmp_path / "m" / "images" / f"{flipped}.nii.gz").exists()


@pytest.mark.parametrize("cases", [False, True])
def test_a_damaged_store_read_in_a_dataloader_worker_says_so(tiny: Tiny, tmp_path: Path, cases: bool) -> None:
    """torch re-raises a worker's error as ``type(e)(text)``: a curator error arrived with an empty
    message and torch's text as its kind. It keeps torch's text (the original message and
    traceback) and its kind."""
    import shutil

    from curator.errors import ReleaseError
    from curator.torch import CaseDataset

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    flipped = min(p.name.removesuffix(".zarr") for p in (rel / "stores").glob("TinyKits__*.zarr"))
    _flip_a_byte(rel / "stores" / f"{flipped}.zarr")
    where = f"p.case_id = '{flipped}'"
    ds = (CaseDataset(rel, terms=[term_id("kidney")], where=where, split=None) if cases else
          PatchDataset(rel, terms=[term_id("kidney")], where=where, patch_size=(24, 24, 8), samples_per_epoch=4))
    with pytest.raises(ReleaseError) as e:
        for _ in DataLoader(ds, batch_size=1, num_workers=2):
            pass
    said = str(e.value)
    assert "in DataLoader worker process" in said and f"the store of case {flipped}: its files differ" in said
    assert "curator verify" in said and e.value.kind == "release_corrupt"


def test_stores_are_hashed_once_while_their_files_stay_the_same(tiny: Tiny, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shutil

    from curator.release import integrity, verify_cache

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})
    hashed: list[str] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(str(p)) or real(p))

    def read_all() -> set[str]:
        ds = PatchDataset(rel, terms=[term_id("kidney")], patch_size=(24, 24, 8), split=None, labelled_only=False)
        seen = {ds[i]["case_id"] for i in range(len(ds))}
        for c in ds.cases:  # every store, whichever cases the items drew
            ds._store(c)
        return seen

    read_all()
    in_stores = [h for h in hashed if "/stores/" in h]
    n_files = sum(1 for p in (rel / "stores").rglob("*") if p.is_file() and p.parent != rel / "stores")
    assert len(in_stores) == n_files  # each file of each store once
    hashed.clear()
    read_all()
    assert not [h for h in hashed if "/stores/" in h]  # this process remembers
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})  # a new process: the cache file remembers
    monkeypatch.setattr(verify_cache, "_DISK", {})
    read_all()
    assert not [h for h in hashed if "/stores/" in h]
    touched = next((rel / "stores").glob("TinyKits__*.zarr"))
    os.utime(touched / "zarr.json")  # touched: that store is checked again, the others are not
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})
    read_all()
    assert {h.split("/stores/")[1].split("/")[0] for h in hashed if "/stores/" in h} == {touched.name}
    checks: list[str] = []  # a loader closing and reopening stores (max_open) checks each one once
    real_check = integrity.changed_store
    monkeypatch.setattr(integrity, "changed_store", lambda r, c, m: checks.append(c) or real_check(r, c, m))
    ds = PatchDataset(rel, terms=[term_id("kidney")], patch_size=(24, 24, 8), split=None, max_open=1,
                      samples_per_epoch=24, seed=5)
    drawn = [ds[i]["case_id"] for i in range(len(ds))]
    assert sum(a != b for a, b in itertools.pairwise(drawn)) > len(set(drawn))  # reopened more often than cases
    assert sorted(checks) == sorted(set(drawn))


def test_labelled_only_follows_the_qc_rule_of_the_items(tiny: Tiny, tmp_path: Path) -> None:
    """A derived term loses its mask where one of its parts was QC excluded: such a case holds
    none of the requested terms, and labelled_only leaves it out (its items were present = False)."""
    kits = sorted(p.name.removesuffix(".zarr") for p in (tiny.release / "stores").glob("TinyKits__*.zarr"))
    other = next(c for c in sorted(p.name.removesuffix(".zarr") for p in (tiny.release / "stores").glob("*.zarr"))
                 if c not in kits)
    rel = _with_decisions(tiny, tmp_path, dropped=other, kept=kits[1], excluded=(kits[0], "kidney_cyst", "original"))
    assert "kidney_cyst" in CaseStore(rel / "stores" / f"{kits[0]}.zarr").terms("original")
    ds = PatchDataset(rel, terms=["kidney_mass"], where="dataset = 'TinyKits'", patch_size=(24, 24, 8),
                      samples_per_epoch=12)
    assert kits[0] not in [c["case_id"] for c in ds.cases] and len(ds.cases) == len(kits) - 1
    assert ds.unlabelled == [kits[0]]  # said, not dropped silently
    assert all(bool(ds[i]["present"][0]) for i in range(len(ds)))
    every = PatchDataset(rel, terms=["kidney_mass"], where="dataset = 'TinyKits'", patch_size=(24, 24, 8),
                         labelled_only=False, samples_per_epoch=12)
    assert kits[0] in [c["case_id"] for c in every.cases] and every.unlabelled == []
    with pytest.raises(Exception, match="seed = -1"):
        PatchDataset(rel, terms=["kidney_mass"], seed=-1)


def test_a_part_lost_to_qc_takes_only_the_terms_it_is_part_of() -> None:
    """The cyst excluded took kidney_tumor with kidney_mass when both were requested: the parts of
    a lost term were dropped even when another requested term needed them whole."""
    from curator.release.training import usable_parts

    held = {"original": {"kidney", "kidney_tumor", "kidney_cyst"}}
    parts = {"kidney_tumor": ("kidney_tumor",), "kidney_mass": ("kidney_mass", "kidney_tumor", "kidney_cyst"),
             "kidney": ("kidney",)}
    got = usable_parts(held, parts, ["original"], excluded={("kidney_cyst", "original")})
    assert got == {"kidney_tumor": "original", "kidney": "original"}
    alone = usable_parts(held, {"kidney_mass": parts["kidney_mass"]}, ["original"], {("kidney_cyst", "original")})
    assert alone == {}  # training kidney_mass on the tumour alone would call the cyst background
    assert usable_parts(held, parts, ["original"], ()) == {p: "original" for p in held["original"]}


def test_preprocessed_lists_each_term_of_a_case_once(tiny: Tiny) -> None:
    """A derived term held by several plane codes was listed once per code (kidney_mass three times)."""
    rows = curator.open_release(str(tiny.release)).sql("select case_id, terms from preprocessed").fetchall()
    assert rows and any(len(terms) > 1 for _, terms in rows)
    for cid, terms in rows:
        assert len(terms) == len(set(terms)), (cid, terms)


def _group_of_two(tiny: Tiny, tmp_path: Path, *, copy_warned: bool) -> tuple[Path, str, str, str]:
    """A copy of the tiny release whose first case without a tumour is the kept member of a
    duplicate group with a case holding one (with an ingest warning when ``copy_warned``)."""
    import shutil

    import polars as pl

    from curator.schema import to_arrow

    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    tumour = term_id("kidney tumor")
    held = pl.read_parquet(rel / "store_terms.parquet").filter(pl.col("voxels") > 0)
    with_t = sorted(set(held.filter(pl.col("term_id") == tumour)["case_id"]))
    kept, copy = min(set(held["case_id"]) - set(with_t)), with_t[0]
    rows = [{"group_id": "g1", "case_id": c, "dataset": c.split("__")[0], "kept": c == kept, "kept_case_id": kept,
             "group_size": 2, "reason": "same scan"} for c in (kept, copy)]
    pl.from_arrow(to_arrow("duplicates", rows)).write_parquet(rel / "duplicates.parquet")
    if copy_warned:
        problems = pl.read_parquet(rel / "problems.parquet").to_dicts()
        problems.append({"stage": "ingest", "dataset": copy.split("__")[0], "case_id": copy, "path": "x.nii.gz",
                         "kind": "ct_intensity_offset", "severity": "warning", "message": "stored +1024"})
        pl.from_arrow(to_arrow("problems", problems)).write_parquet(rel / "problems.parquet")
    reseal(rel)
    return rel, tumour, kept, copy


def test_a_duplicate_holding_the_requested_terms_stands_in_for_the_kept_copy(tiny: Tiny, tmp_path: Path) -> None:
    """The keep policy kept the copy with more structures (a TotalSegmentator copy of a KiTS scan)
    and the tumour left the training set with the dropped copy; --partial then wrote the kept
    copy with a tumour-free label."""
    import polars as pl

    from curator.export import export_monai

    rel, tumour, kept, copy = _group_of_two(tiny, tmp_path, copy_warned=False)  # kept lacks the copy's tumour
    with_t = sorted(set(pl.read_parquet(rel / "store_terms.parquet").filter(
        (pl.col("voxels") > 0) & (pl.col("term_id") == tumour))["case_id"]))
    ds = PatchDataset(rel, terms=[tumour], split=None, samples_per_epoch=2)
    assert ds.view.stand_ins == {kept: copy} and copy in {c["case_id"] for c in ds.cases}
    assert kept not in {c["case_id"] for c in ds.cases}
    report = export_monai(rel, tmp_path / "m", terms=[tumour], where=f"case_id in ('{kept}', '{copy}')")
    assert report.cases == [copy] and any(f"instead of the kept {kept}" in n for n in report.notes)
    plain = PatchDataset(rel, terms=[term_id("kidney")], split=None, samples_per_epoch=2)
    assert plain.view.stand_ins == {} and kept in {c["case_id"] for c in plain.cases}  # both hold kidney: kept
    # the stand-in's store damaged: it is left out, and no note says it was exported for its group
    other = with_t[1]  # a case with the tumour outside the group, so the export is not empty
    (rel / "stores" / f"{copy}.zarr" / "zarr.json").write_text((rel / "stores" / f"{copy}.zarr" / "zarr.json").read_text()
                                                                 + " ")
    report = export_monai(rel, tmp_path / "damaged", terms=[tumour],
                          where=f"case_id in ('{kept}', '{copy}', '{other}')")
    assert report.cases == [other] and copy in report.skipped
    said = [n for n in report.notes if n.startswith(copy)]
    assert any(f"{copy} was left out" in n for n in said), report.notes
    assert not any("is exported for its duplicate group" in n for n in said), report.notes
    assert any(f"{copy} would stand in for the kept {kept}" in n and "the group has no case in the export" in n
               for n in said), report.notes


def test_pseudo_and_excluded_labels_do_not_make_a_copy_stand_in(tiny: Tiny, tmp_path: Path) -> None:
    """A dropped copy stood in for the kept one when it held more of the terms counting its pseudo
    labels as equal to the kept copy's annotations (validation then scored against a model's
    liver instead of a person's), and counting labels QC excluded."""
    import polars as pl

    rel, tumour, kept, copy = _group_of_two(tiny, tmp_path, copy_warned=False)
    liver, spleen = term_id("liver"), term_id("spleen")
    st = pl.read_parquet(rel / "store_terms.parquet")
    people = {t for t in st.filter((pl.col("case_id") == kept) & (pl.col("layer") == "original"))["term_id"]}
    assert {liver, spleen} <= people and tumour not in people
    mine = st.filter((pl.col("case_id") == copy) & (pl.col("layer") == "original") & (pl.col("term_id") == tumour))
    fake = pl.concat([mine.with_columns(pl.lit("pseudo").alias("layer"), pl.lit(t).alias("term_id")) for t in (liver, spleen)])
    pl.concat([st, fake]).write_parquet(rel / "store_terms.parquet")
    reseal(rel)
    every = ("original", "revised", "pseudo")

    def used(terms: list[str], layers: tuple[str, ...] = every, **kw: object) -> str:
        view = training_view(Release(rel), terms=terms, layers=layers, **kw)  # type: ignore[arg-type]
        (member,) = {kept, copy} - view.dropped_duplicates
        assert view.stand_ins == ({kept: copy} if member == copy else {})
        return member

    # 1 term by a person + 2 pseudo against 2 by people: the people's labels win, whatever the total
    assert used([tumour, liver, spleen]) == kept
    assert used([tumour]) == copy  # the tumour only the copy has still brings it in
    assert used([tumour, liver, spleen], layers=("pseudo", "original")) == kept  # whatever the layers' order
    # the copy's tumour excluded by QC: it holds nothing the loader would read; without the filter it does
    pl.DataFrame({"case_id": [copy], "term_id": [tumour], "layer": ["original"], "qc_decision": ["exclude"]}
                 ).write_parquet(rel / "labels.parquet")
    reseal(rel)
    assert used([tumour]) == kept and used([tumour], qc_filter=False) == copy


def test_a_copy_with_more_ingest_warnings_never_stands_in(tiny: Tiny, tmp_path: Path) -> None:
    """The tester's case: the KiTS copy of an MSD scan, stored +1024 HU off (a ct_intensity_offset
    warning, which is why the keep policy dropped it), stood in for the kept copy because it holds
    the tumour: the loader and both exports trained on a saturated image."""
    from curator.export import export_monai

    rel, tumour, kept, copy = _group_of_two(tiny, tmp_path, copy_warned=True)
    ds = PatchDataset(rel, terms=[tumour, term_id("kidney")], split=None, samples_per_epoch=2)
    assert ds.view.stand_ins == {} and copy not in {c["case_id"] for c in ds.cases}
    assert "ct_intensity_offset" in ds.view.passed_over[copy] and kept in ds.view.passed_over[copy]
    report = export_monai(rel, tmp_path / "m", terms=[tumour, term_id("kidney")], partial=True,
                          where=f"case_id in ('{kept}', '{copy}')")
    assert report.cases == [kept], report.cases
    assert any(n.startswith(f"the duplicate {copy} is not exported") and "ct_intensity_offset" in n
               for n in report.notes), report.notes
    # selected alone, the copy is the selection's only member of its group: used, warning and all
    alone = PatchDataset(rel, terms=[tumour], split=None, samples_per_epoch=2, where=f"case_id = '{copy}'")
    assert [c["case_id"] for c in alone.cases] == [copy] and alone.view.passed_over == {}
    # ... and said: the kept copy, which the selection leaves out, has fewer warnings
    assert "ct_intensity_offset" in alone.view.caveats[copy] and f"kept {kept}" in alone.view.caveats[copy]
    report = export_monai(rel, tmp_path / "alone", terms=[tumour], where=f"case_id = '{copy}'")
    assert report.cases == [copy] and any(n.startswith(f"warning: {copy} is exported, but") for n in report.notes)
    assert training_view(Release(rel), terms=[tumour]).caveats == {}  # the whole release: the kept copy is used


def test_a_selection_is_never_emptied_by_a_copy_it_does_not_hold(tiny: Tiny, tmp_path: Path) -> None:
    """The member of a duplicate group to use was chosen over the whole release before `where` ran:
    a KiTS-only export lost a KiTS case whose kept copy was in another dataset, and leaving one
    dataset out (for its licence) dropped whole groups. The member is chosen among the cases
    selected."""
    from curator.export import export_nnunet

    rel, _, kept, copy = _group_of_two(tiny, tmp_path, copy_warned=False)
    kidney = term_id("kidney")
    whole = PatchDataset(rel, terms=[kidney], split=None, samples_per_epoch=2)
    assert kept in {c["case_id"] for c in whole.cases} and copy not in {c["case_id"] for c in whole.cases}
    assert copy in whole.view.dropped_duplicates
    for where, used in ((f"case_id <> '{kept}'", copy), (f"case_id <> '{copy}'", kept)):
        ds = PatchDataset(rel, terms=[kidney], split=None, samples_per_epoch=2, where=where)
        ids = {c["case_id"] for c in ds.cases}
        assert used in ids and ds.view.dropped_duplicates == frozenset(), (where, ids)
        assert len(ids) == len(whole.cases), (where, ids)  # the group is still there, through the selected member
    report = export_nnunet(rel, tmp_path / "nn", dataset_id=7, name="T", terms=[kidney], where=f"case_id <> '{kept}'")
    written = json.loads((tmp_path / "nn" / "Dataset007_T" / "curator_export.json").read_text())
    assert copy in report.cases + report.images_only and written["left_out_duplicates"] == []


def test_a_term_no_case_holds_is_refused_without_a_warning_first(tiny: Tiny) -> None:
    """PatchDataset(release, terms=['prostate']) warned "no case of the release holds 'prostate'"
    and then raised "no selected case holds any of ['prostate']": the refusal alone is said."""
    import warnings

    from curator.errors import ReleaseError

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(ReleaseError, match=r"no selected case holds any of \['prostate'\]"):
            PatchDataset(tiny.release, terms=["prostate"])
    assert [str(w.message) for w in said if issubclass(w.category, UserWarning)] == []
    with pytest.warns(UserWarning, match="no case of the release holds 'prostate'") as kept:  # the dataset is made:
        ds = PatchDataset(tiny.release, terms=["prostate", term_id("liver")])  # said once, at the caller's line
    assert ds.cases and len(kept) == 1 and kept[0].filename == __file__


def test_a_term_no_selected_case_holds_is_warned_of(tiny: Tiny, tmp_path: Path) -> None:
    """The release-wide check warned of a term no case of the release holds, but a ``where`` or
    ``split`` leaving out every case that holds it built without a word: all-background masks."""
    import shutil
    import warnings

    import pyarrow.parquet as pq

    from curator.schema import to_arrow

    liver, tumour = term_id("liver"), term_id("kidney tumor")
    args = {"terms": [liver, tumour], "split": None, "patch_size": (24, 24, 8)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole release holds both: nothing to say
        PatchDataset(tiny.release, **args)  # type: ignore[arg-type]
    with pytest.warns(UserWarning) as said:
        ds = PatchDataset(tiny.release, where="dataset = 'TinyTotalSeg'", **args)  # type: ignore[arg-type]
    notes = [str(w.message) for w in said]
    assert len(notes) == 1 and f"no selected case holds '{tumour}' in layers ['original', 'revised'] (2 cases " \
        "selected" in notes[0] and "widen where or split" in notes[0] and "masks will be empty" in notes[0]
    assert said[0].filename == __file__ and not ds[0]["present"][1]
    # held by the selection only as annotated absent (a true negative): said as the release-wide check says it
    rel = tmp_path / "rel"
    shutil.copytree(tiny.release, rel)
    row = {"case_id": "TinyTotalSeg__s0000", "dataset": "TinyTotalSeg", "term_id": tumour, "term": "kidney tumor",
           "origin": "original", "layer": "original", "derived": False, "annotated": True, "present": False,
           "voxels": 0, "volume_ml": 0.0}
    pq.write_table(to_arrow("labels", [row]), rel / "labels.parquet")
    reseal(rel)
    with pytest.warns(UserWarning) as said:
        ds = PatchDataset(rel, where="case_id = 'TinyTotalSeg__s0000'", **args)  # type: ignore[arg-type]
    said_once = (f"no selected case has a voxel of '{tumour}'; 1 of the 1 selected case annotates it as absent "
                 "(their masks are empty)")
    assert [str(w.message) for w in said] == [said_once]
    assert ds[0]["present"].tolist() == [True, True] and not ds[0]["masks"][1].any()


def test_with_duplicates_a_copy_with_more_ingest_warnings_is_said(tiny: Tiny, tmp_path: Path) -> None:
    """Tester 21's F1: `--with-duplicates` exported the KiTS copy stored +1024 HU off without the
    warning the default export gives (the caveats were only built when duplicates were left out)."""
    from curator.export import export_monai

    rel, tumour, kept, copy = _group_of_two(tiny, tmp_path, copy_warned=True)
    view = training_view(Release(rel), duplicates=True, terms=[tumour])
    assert view.dropped_duplicates == frozenset() and set(view.caveats) == {copy}
    assert "ct_intensity_offset" in view.caveats[copy] and f"kept {kept}" in view.caveats[copy]
    assert training_view(Release(rel), duplicates=True, selected={kept}).caveats == {}  # the copy not selected
    report = export_monai(rel, tmp_path / "m", terms=[tumour, term_id("kidney")], partial=True, duplicates=True,
                          where=f"case_id in ('{kept}', '{copy}')")
    assert copy in report.cases, report.cases
    assert any(n.startswith(f"warning: {copy} is exported, but") and "ct_intensity_offset" in n
               for n in report.notes), report.notes
    ds = PatchDataset(rel, terms=[tumour], split=None, samples_per_epoch=2, duplicates=True)
    assert copy in ds.view.caveats
