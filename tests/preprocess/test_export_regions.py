"""BraTS-style exports: nested terms (whole tumour ⊃ tumour core ⊃ enhancing tumour) as nnU-Net
regions with --regions, and organ + lesion (liver ⊃ liver_tumor) as one label each otherwise, skip reasons that say why a term is missing (QC, another channel's
label), and studies whose sequences are named otherwise listed as left out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from curator.export import export_monai, export_nnunet
from curator.export.common import ExportCase, ExportReport, write_case
from curator.export.regions import disjoint_pieces
from curator.release.query import Release
from curator.release.training import TrainingView
from curator.store import CaseStore
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import grid
from tests.preprocess.conftest import MULTISEQ_YAML, _ingest_and_preprocess
from tests.preprocess.test_export import NNUNET_CHECK, _client, _run

BRATS_YAML = (MULTISEQ_YAML.replace("TinyBrats", "TinyGli").replace("t1c: MR", "t1n: MR").replace("study", "gli")
              .replace("{1: kidney, 2: kidney tumor}",
                       "{1: necrotic_brain_tumor_core, 2: brain_edema, 3: enhancing_brain_tumor}"))
MSD_YAML = BRATS_YAML.replace("TinyGli", "TinyMsd").replace("{t1n: MR, t2f: MR}", "{T1w: MR, FLAIR: MR}") \
    .replace("gli", "msd")
REGIONS = ["brain_tumor", "brain_tumor_core", "enhancing_brain_tumor"]
LEAVES = ["necrotic_brain_tumor_core", "brain_edema", "enhancing_brain_tumor"]


@dataclass
class Gli:
    release: Path
    segs: dict[str, np.ndarray]  # study name -> the BraTS label map as written


def _seg(shape: tuple[int, int, int], shift: int) -> np.ndarray:
    """Nested balls: edema (2) outside, necrotic core (1) inside it, enhancing tumour (3) at the centre."""
    idx = np.indices(shape)
    r = np.sqrt(sum((idx[k] - (shape[k] // 2 + (shift if k == 0 else 0))) ** 2 for k in range(3)))
    seg = np.zeros(shape, np.uint8)
    seg[r <= 6] = 2
    seg[r <= 4] = 1
    seg[r <= 2] = 3
    return seg


@pytest.fixture(scope="module")
def gli(tmp_path_factory: pytest.TempPathFactory) -> Gli:
    """TinyGli: studies gli0-gli2 with t1n and t2f (gli2's t2f on a 2x coarser grid, so ingest
    rejects the shared seg for it: shape_mismatch); TinyMsd: one study, the same contrasts named
    T1w / FLAIR."""
    root = tmp_path_factory.mktemp("gli")
    rng = np.random.default_rng(0)
    segs = {}
    g = grid((24, 24, 16), (4.0, 4.0, 5.0), "LPS")
    coarse = grid((12, 12, 16), (8.0, 8.0, 5.0), "LPS")
    for ds, seqs, n in (("gli", ("t1n", "t2f"), 3), ("msd", ("T1w", "FLAIR"), 1)):
        for i in range(n):
            case = f"{ds}{i}"
            seg = _seg(g.shape, i)
            save_nifti(root / ds / case / f"{case}-seg.nii.gz", seg, g)
            segs[f"{'TinyGli' if ds == 'gli' else 'TinyMsd'}__{case}"] = seg
            for k, seq in enumerate(seqs):
                on = coarse if ds == "gli" and i == 2 and k == 1 else g
                img = (200 + 100 * k + 50 * rng.random(on.shape) + 300 * (_seg(on.shape, 0) > 0)).astype(np.int16)
                save_nifti(root / ds / case / f"{case}-{seq}.nii.gz", img, on)
    return Gli(_ingest_and_preprocess(root, {"gli": BRATS_YAML, "msd": MSD_YAML}, "gli"), segs)


def _written(folder: Path, name: str) -> np.ndarray:
    return np.asarray(nib.load(folder / "labelsTr" / f"{name}.nii.gz").dataobj)


def _seg_on_store(gli: Gli, name: str, seq: str) -> np.ndarray:
    """The study's BraTS label map on its ``seq`` store's grid (the store is cropped to the body)."""
    store = CaseStore(gli.release / "stores" / f"{name}__{seq}.zarr")
    out = np.zeros(store.geometry.shape, np.uint8)
    for value, term in ((2, "brain_edema"), (1, "necrotic_brain_tumor_core"), (3, "enhancing_brain_tumor")):
        out[store.mask(term)] = value
    return out


def test_nested_terms_are_nnunet_regions(gli: Gli, tmp_path: Path) -> None:
    """brain_tumor must be every tumour voxel (1|2|3 in BraTS values), not only the edema the later
    terms leave it; the terms may be given in any order."""
    rep = export_nnunet(gli.release, tmp_path, dataset_id=530, name="Regions", channels=["t1n", "t2f"],
                        terms=["enhancing_brain_tumor", "brain_tumor", "brain_tumor_core"], where="c.dataset = 'TinyGli'",
                        regions=True)
    ds = json.loads((rep.folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "brain_tumor": [1, 2, 3], "brain_tumor_core": [2, 3],
                            "enhancing_brain_tumor": [3]}
    assert ds["regions_class_order"] == [1, 2, 3]
    assert not rep.overlaps and any("nnU-Net regions" in n for n in rep.notes)
    for name in ("TinyGli__gli0", "TinyGli__gli1"):
        got, brats = _written(rep.folder, name), _seg_on_store(gli, name, "t1n")
        assert (brats > 0).sum() > 0
        for term, values in (("brain_tumor", (1, 2, 3)), ("brain_tumor_core", (1, 3)), ("enhancing_brain_tumor", (3,))):
            assert np.array_equal(np.isin(got, ds["labels"][term]), np.isin(brats, values)), term


def test_nnunet_reads_the_region_labels(gli: Gli, tmp_path: Path) -> None:
    rep = export_nnunet(gli.release, tmp_path, dataset_id=531, name="Regions", channels=["t1n", "t2f"],
                        terms=REGIONS, where="c.dataset = 'TinyGli'", regions=True)
    python = _client("nnunetv2")
    got = _run(python, """
import json, sys
from nnunetv2.utilities.label_handling.label_handling import LabelManager
dj = json.load(open(sys.argv[1] + "/dataset.json"))
lm = LabelManager(dj["labels"], regions_class_order=dj.get("regions_class_order"))
print("REGIONS", lm.has_regions, lm.foreground_regions, lm.num_segmentation_heads)
""", str(rep.folder))
    assert "REGIONS True [(1, 2, 3), (2, 3), (3,)] 3" in got
    assert "INTEGRITY OK" in _run(python, NNUNET_CHECK, str(rep.folder))


def test_disjoint_terms_stay_one_label_each(gli: Gli, tmp_path: Path) -> None:
    rep = export_nnunet(gli.release, tmp_path, dataset_id=532, name="Leaves", channels=["t1n", "t2f"],
                        terms=LEAVES, where="c.dataset = 'TinyGli'")
    ds = json.loads((rep.folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, **{t: i for i, t in enumerate(LEAVES, start=1)}}
    assert "regions_class_order" not in ds
    assert np.array_equal(_written(rep.folder, "TinyGli__gli0"), _seg_on_store(gli, "TinyGli__gli0", "t1n"))


def test_disjoint_pieces_keep_every_requested_term() -> None:
    """Split only along a partition holding the inner terms: never suggest dropping liver_tumor."""
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    assert disjoint_pieces(tax, REGIONS) == ["necrotic_brain_tumor_core", "enhancing_brain_tumor", "brain_edema"]
    for terms in (["liver", "liver_tumor"], ["pancreas", "pancreas_tumor"], ["lung", "lung_nodule"]):
        assert disjoint_pieces(tax, terms) == [], terms


def test_a_term_inside_two_unnested_terms_is_refused_as_regions() -> None:
    """lung_upper_lobe_left is part of lung_left and of lung_upper_lobe, neither inside the other:
    no painting order gives each its voxels, so --regions refuses and the plain export's note says so."""
    from curator.errors import ConfigError
    from curator.export.nnunet import _nesting_note
    from curator.export.regions import regions
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    terms = ["lung_left", "lung_upper_lobe", "lung_upper_lobe_left"]
    with pytest.raises(ConfigError, match="lung_upper_lobe_left is part of both lung_left and lung_upper_lobe") as e:
        regions(tax, terms)
    assert "--terms lung_upper_lobe_left,lung_lower_lobe_left,lung_upper_lobe_right" in (e.value.remedy or "")
    note = _nesting_note(tax, terms)
    assert note is not None and "--regions refuses these terms" in note
    assert "label 1 'lung_left' holds the lung_left voxels outside lung_upper_lobe_left" in note
    assert regions(tax, ["lung_left", "lung_upper_lobe_left"]) is not None  # nested once: regions


def test_a_label_qc_excluded_is_said_to_be(gli: Gli, tmp_path: Path) -> None:
    """The case holds brain_edema; QC excluded it: the reason names QC and --no-qc-filter."""
    rel = Release(gli.release)
    case = ExportCase("TinyGli__gli0__t1n", "TinyGli", "MR", gli.release / "stores" / "TinyGli__gli0__t1n.zarr",
                      [], None, "t1n", None)
    report = ExportReport(tmp_path)
    view = TrainingView(excluded={case.case_id: frozenset({("brain_edema", "original")})})
    got = write_case(case, LEAVES, False, tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", report, view=view, release=rel)
    assert got is None
    why = report.skipped[case.case_id]
    assert "QC excluded its brain_edema label" in why and "--no-qc-filter" in why and "holds no" not in why


def test_a_first_channel_without_the_label_is_said_to_be(gli: Gli, tmp_path: Path) -> None:
    """gli2's t2f is not on the seg's grid: ingest rejected its label, its t1n holds the terms."""
    rep = export_nnunet(gli.release, tmp_path, dataset_id=533, name="T2f", channels=["t2f", "t1n"],
                        terms=LEAVES, where="c.dataset = 'TinyGli'")
    why = rep.skipped["TinyGli__gli2"]
    assert why.startswith("its t2f case (the first channel, whose labels are exported) holds no "
                          "necrotic_brain_tumor_core, brain_edema, enhancing_brain_tumor (ingest rejected its label: "
                          "shape_mismatch")
    assert why.endswith("but its t1n case does: list t1n first in --channels to export its labels")


@pytest.mark.parametrize("export", [export_nnunet, export_monai])
def test_no_study_left_because_the_first_channel_lacks_the_label_says_which_to_list_first(
        gli: Gli, tmp_path: Path, export: Any) -> None:
    """Every selected study skipped for it: the error said "no selected training case holds ...
    check --terms and --where" though their t1n cases hold the terms (tester 27: --channels PT,CT
    of HECKTOR, whose label is on the CT grid)."""
    from curator.errors import ReleaseError

    kw = {"dataset_id": 535, "name": "T2fOnly"} if export is export_nnunet else {}
    with pytest.raises(ReleaseError, match="no selected .* holds every term of") as e:
        export(gli.release, tmp_path / "out", channels=["t2f", "t1n"], terms=LEAVES,
               where="c.dataset = 'TinyGli' and c.case_id like 'TinyGli__gli2%'", **kw)
    msg = str(e.value)
    assert "the first channel's labels are exported, and the t1n case of 1 study holds them (e.g. TinyGli__gli2: " \
           "its t2f case (the first channel, whose labels are exported) holds no" in msg and "shape_mismatch" in msg
    assert (e.value.remedy or "").startswith("list t1n first in --channels (e.g. --channels t1n,...)")
    assert "check --terms" not in (e.value.remedy or "")


def test_studies_of_other_sequence_names_are_listed_as_left_out(gli: Gli, tmp_path: Path) -> None:
    rep = export_nnunet(gli.release, tmp_path, dataset_id=534, name="Mixed", channels=["t1n", "t2f"], terms=LEAVES)
    why = rep.skipped["TinyMsd__msd0"]
    assert why.startswith("none of its sequences (FLAIR, T1w) is among the channels t1n, t2f: its 2 selected case(s) "
                          "TinyMsd__msd0__FLAIR, TinyMsd__msd0__T1w are left out (the selection's sequences: "
                          "FLAIR, T1w, t1n, t2f;")
    record = json.loads((rep.folder / "curator_export.json").read_text())
    assert record["skipped"]["TinyMsd__msd0"] == why


LIVER_YAML = (MULTISEQ_YAML.replace("TinyBrats", "TinyLiver").replace("{t1c: MR, t2f: MR}", "{t1c: MR}")
              .replace("study", "liv").replace("{1: kidney, 2: kidney tumor}", "{1: liver, 2: liver tumor}"))


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TinyLiver: studies liv0-liv2, MSD Task03 / LiTS values (1 = liver outside the tumour, 2 = tumour)."""
    root = tmp_path_factory.mktemp("liver")
    rng = np.random.default_rng(1)
    g = grid((24, 24, 16), (4.0, 4.0, 5.0), "LPS")
    for i in range(3):
        seg = np.minimum(_seg(g.shape, i), 2)  # edema (2) -> liver (1) outside, the inner balls -> tumour (2)
        seg = np.where(seg == 2, 1, np.where(seg == 1, 2, 0)).astype(np.uint8)
        case = f"liv{i}"
        save_nifti(root / "liver" / case / f"{case}-seg.nii.gz", seg, g)
        img = (200 + 50 * rng.random(g.shape) + 300 * (seg > 0)).astype(np.int16)
        save_nifti(root / "liver" / case / f"{case}-t1c.nii.gz", img, g)
    return _ingest_and_preprocess(root, {"liver": LIVER_YAML}, "liver")


def test_organ_and_lesion_stay_one_label_each_in_nnunet(liver: Path, tmp_path: Path) -> None:
    """liver,liver_tumor without --regions: plain labels, tumour voxels 2, the liver label the rest;
    a note says so and names --regions. Given in either order."""
    rep = export_nnunet(liver, tmp_path, dataset_id=540, name="Liver", terms=["liver_tumor", "liver"])
    ds = json.loads((rep.folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "liver": 1, "liver_tumor": 2}
    assert "regions_class_order" not in ds
    assert any("label 1 'liver' holds the liver voxels outside liver_tumor" in n and "--regions" in n
               and "liver = [1, 2]" in n for n in rep.notes), rep.notes
    name = rep.cases[0]
    store = CaseStore(liver / "stores" / f"{name}.zarr")
    got = _written(rep.folder, name)
    assert store.mask("liver_tumor").sum() > 0
    assert np.array_equal(got == 2, store.mask("liver_tumor"))
    assert np.array_equal(got > 0, store.mask("liver") | store.mask("liver_tumor"))


def test_monai_exports_organ_and_lesion(liver: Path, tmp_path: Path) -> None:
    rep = export_monai(liver, tmp_path / "m", terms=["liver", "liver_tumor"])
    dl = json.loads((tmp_path / "m" / "datalist.json").read_text())
    assert dl["labels"] == {"0": "background", "1": "liver", "2": "liver_tumor"}
    assert any("label 1 'liver' holds the liver voxels outside liver_tumor" in n for n in rep.notes), rep.notes


def test_the_monai_brats_recipe_gives_the_enhancing_tumour(gli: Gli, tmp_path: Path) -> None:
    """Tester 21's F2: the docs' recipe, MONAI's ConvertToMultiChannelBasedOnBratsClassesd with its
    default et_label=4, gave an empty ET channel on curator's labels (enhancing tumour = 3). The
    export's note says which et_label to pass, and the docs pass it."""
    import re

    transforms = pytest.importorskip("monai.transforms")
    rep = export_monai(gli.release, tmp_path / "m", terms=LEAVES, where="c.dataset = 'TinyGli'", channels=["t1n", "t2f"])
    (note,) = [n for n in rep.notes if "ConvertToMultiChannelBasedOnBratsClassesd" in n]
    et = int(re.search(r"et_label=(\d+)", note).group(1))  # type: ignore[union-attr]
    label = np.asarray(nib.load(tmp_path / "m" / "labels" / "TinyGli__gli0.nii.gz").dataobj)
    got = np.asarray(transforms.ConvertToMultiChannelBasedOnBratsClassesd("label", et_label=et)({"label": label})["label"])
    store = CaseStore(gli.release / "stores" / "TinyGli__gli0__t1n.zarr")
    enhancing = store.mask("enhancing_brain_tumor")
    assert enhancing.any() and np.array_equal(got[2], enhancing)  # ET
    assert np.array_equal(got[1], enhancing | store.mask("brain_edema") | store.mask("necrotic_brain_tumor_core"))
    docs = (Path(__file__).parents[2] / "docs" / "preprocess.md").read_text()
    said = re.search(r"ConvertToMultiChannelBasedOnBratsClassesd\(keys=\"label\",\s+et_label=(\d+)\)", docs)
    assert said is not None and int(said.group(1)) == et
    # another order: the note says to request the BraTS order (the transform reads 1 and 2 as fixed)
    rep = export_monai(gli.release, tmp_path / "r", terms=LEAVES[::-1], where="c.dataset = 'TinyGli'",
                       channels=["t1n", "t2f"])
    assert any(n.startswith("label 1 is enhancing_brain_tumor") and ",".join(LEAVES) in n for n in rep.notes), rep.notes


def test_a_case_whose_label_ingest_rejected_is_said_to_be_without_channels(gli: Gli, tmp_path: Path) -> None:
    """Tester 21's F5: without --channels a case skipped because ingest rejected its label
    (shape_mismatch) was said to hold none of the terms, as if its anatomy lacked them."""
    rep = export_nnunet(gli.release, tmp_path, dataset_id=535, name="Plain", terms=LEAVES,
                        where="c.dataset = 'TinyGli'")
    why = rep.skipped["TinyGli__gli2__t2f"]
    assert why.startswith("holds no necrotic_brain_tumor_core, brain_edema, enhancing_brain_tumor (ingest rejected "
                          "its label: shape_mismatch"), why
    assert all("ingest rejected" not in w for c, w in rep.skipped.items() if c != "TinyGli__gli2__t2f"), rep.skipped
