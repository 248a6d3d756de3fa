"""The nnU-Net and MONAI exports of the demo release (four datasets under three licences, a test
image of MSD_Spleen without labels, pseudo labels of every dataset): what their errors advise
and which test images they take."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from curator.errors import ReleaseError
from curator.export import export_monai, export_nnunet


@pytest.fixture(scope="module")
def rel(demo_base: Path) -> Path:
    return demo_base / "releases" / "demo" / "0.1.0"


@pytest.mark.parametrize("kind", ["nnunet", "monai"])
def test_an_empty_export_names_the_layer_holding_the_terms_not_partial_again(rel: Path, tmp_path: Path,
                                                                             kind: str) -> None:
    # KiTS23 holds liver only in the pseudo layer (the demo's pseudolabel stage)
    def export(**kw: object) -> None:
        if kind == "nnunet":
            export_nnunet(rel, tmp_path / "raw", dataset_id=506, name="L", where="dataset = 'KiTS23'", **kw)  # type: ignore[arg-type]
        else:
            export_monai(rel, tmp_path / "m", where="dataset = 'KiTS23'", **kw)  # type: ignore[arg-type]

    with pytest.raises(ReleaseError) as e:
        export(terms=["liver"], partial=True)
    text = f"{e.value.detail} {e.value.remedy}"
    assert "--partial" not in text, text  # it is given
    assert "'pseudo' layer" in text and "--layers original,revised,pseudo" in text, text
    assert re.search("the 5 selected (training )?cases hold liver", text), text  # KiTS23's two copies of kept cases are left out
    with pytest.raises(ReleaseError) as e:  # one term: --partial changes nothing
        export(terms=["liver"])
    assert "--partial" not in f"{e.value.detail} {e.value.remedy}" and "--layers" in (e.value.remedy or "")
    with pytest.raises(ReleaseError) as e:  # two terms, each held by some case: --partial would keep them
        if kind == "nnunet":
            export_nnunet(rel, tmp_path / "raw2", dataset_id=507, name="L", terms=["kidney", "spleen"],
                          where="dataset in ('KiTS23', 'MSD_Spleen')")
        else:
            export_monai(rel, tmp_path / "m2", terms=["kidney", "spleen"], where="dataset in ('KiTS23', 'MSD_Spleen')")
    assert "--partial" in (e.value.remedy or "")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_nnunet_takes_test_images_only_of_datasets_annotating_a_term(rel: Path, tmp_path: Path) -> None:
    rep = export_nnunet(rel, tmp_path / "raw", dataset_id=501, name="Kidney", terms=["kidney", "kidney_tumor"])
    folder = rep.folder
    assert not (folder / "imagesTs").exists() or not any((folder / "imagesTs").iterdir())
    assert "MSD_Spleen__spleen_6" not in rep.images_only
    assert "annotates none of" in rep.skipped["MSD_Spleen__spleen_6"]
    assert any("MSD_Spleen" in n and "test" in n for n in rep.notes), rep.notes
    info = json.loads((folder / "curator_export.json").read_text())
    assert info["test_images_without_labels"] == [] and "MSD_Spleen__spleen_6" in info["skipped"]
    # a spleen export keeps MSD_Spleen's unlabelled test image: its dataset annotates spleens
    rep = export_nnunet(rel, tmp_path / "raw", dataset_id=502, name="Spleen", terms=["spleen"])
    assert rep.images_only == ["MSD_Spleen__spleen_6"]
    assert (rep.folder / "imagesTs" / "MSD_Spleen__spleen_6_0000.nii.gz").is_file()


def test_monai_lists_test_images_only_of_datasets_annotating_a_term(rel: Path, tmp_path: Path) -> None:
    rep = export_monai(rel, tmp_path / "m", terms=["kidney", "kidney_tumor"])
    datalist = json.loads((tmp_path / "m" / "datalist.json").read_text())
    assert "test" not in datalist and "annotates none of" in rep.skipped["MSD_Spleen__spleen_6"]
    assert not (tmp_path / "m" / "images" / "MSD_Spleen__spleen_6.nii.gz").exists()
