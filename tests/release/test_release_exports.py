"""The nnU-Net and MONAI exports of the demo release (four datasets under three licences, a test
image of MSD_Spleen without labels, pseudo labels of every dataset): what their errors advise,
which test images they take, and the licences and citations they carry."""

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
    import curator

    test = "and coalesce(s.split, '') <> 'test'" if kind == "nnunet" else ""
    ((n,),) = curator.open_release(str(rel)).sql(
        "select count(distinct t.case_id) from store_terms t join cases c using (case_id) left join splits s "
        f"using (case_id) where c.dataset = 'KiTS23' and t.term_id = 'liver' and t.layer = 'pseudo' and t.voxels > 0 "
        f"{test}").fetchall()
    assert n and re.search(f"the {n} selected (training )?cases hold liver", text), (n, text)
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


def _bib_keys(path: Path) -> set[str]:
    from curator.release.card_check import bibtex_keys

    return set(bibtex_keys(path.read_text(encoding="utf-8")))


def test_nnunet_export_carries_the_licences_and_citations_of_its_cases(rel: Path, tmp_path: Path) -> None:
    rep = export_nnunet(rel, tmp_path / "raw", dataset_id=501, name="Kidney", terms=["kidney", "kidney_tumor"])
    folder = rep.folder
    info = json.loads((folder / "curator_export.json").read_text())
    [src] = info["sources"]  # KiTS23 only (its cases stand in for two kept copies of other datasets)
    assert (src["dataset"], src["licence"], src["n_cases"], src["citation_keys"]) == (
        "KiTS23", "CC-BY-NC-SA-4.0", len(rep.cases), ["heller2023kits21"])
    assert src["commercial_use"] == "no" and src["homepage"]
    assert _bib_keys(folder / "CITATIONS.bib") == {"heller2023kits21"}
    md = (folder / "LICENCES.md").read_text(encoding="utf-8")
    assert "KiTS23" in md and "CC-BY-NC-SA-4.0" in md and "Non-commercial" in md and "MSD" not in md
    assert info["licence_summary"]["commercial_use"] == "no"
    assert "CC-BY-NC-SA-4.0" in json.loads((folder / "dataset.json").read_text())["licence"]


def test_an_export_mixing_share_alike_licences_warns(rel: Path, tmp_path: Path) -> None:
    rep = export_monai(rel, tmp_path / "m", terms=["spleen", "kidney"], partial=True)
    datalist = json.loads((tmp_path / "m" / "datalist.json").read_text())
    by = {s["dataset"]: s for s in datalist["sources"]}
    written = [e for k in ("training", "validation", "test") for e in datalist.get(k, [])]
    assert {d: sum(e["dataset"] == d for e in written) for d in by} == {d: s["n_cases"] for d, s in by.items()}
    assert {"KiTS23", "MSD_Spleen", "DemoTotalSeg"} <= set(by)
    assert _bib_keys(tmp_path / "m" / "CITATIONS.bib") == {k for s in by.values() for k in s["citation_keys"]}
    md = (tmp_path / "m" / "LICENCES.md").read_text(encoding="utf-8")
    assert "Incompatible share-alike licences" in md
    assert any("Incompatible share-alike" in n for n in rep.notes), rep.notes


def test_the_loader_names_the_layer_holding_the_terms(rel: Path) -> None:
    """The loader said "check the terms and layers" where the exports name the layer: KiTS23 holds
    liver only as the demo's pseudo labels."""
    from curator.torch import PatchDataset

    with pytest.raises(ReleaseError) as e:
        PatchDataset(rel, terms=["liver"], where="dataset = 'KiTS23'", split=None, patch_size=(16, 16, 8))
    assert re.search(r"the \d+ selected cases hold liver in the 'pseudo' layer: add "
                     r"layers=\('original', 'revised', 'pseudo'\)", e.value.remedy or ""), e.value.remedy
    ds = PatchDataset(rel, terms=["liver"], where="dataset = 'KiTS23'", split=None, patch_size=(16, 16, 8),
                      layers=("original", "revised", "pseudo"))
    assert ds.cases and {c["dataset"] for c in ds.cases} == {"KiTS23"}


def test_a_cohort_selected_in_sql_gets_the_citations_and_licences_of_exactly_its_datasets(rel: Path,
                                                                                          tmp_path: Path) -> None:
    """Only an export wrote CITATIONS.bib and LICENCES.md for some of a release's cases; a cohort
    selected in SQL (or a loader's cases) had to collect and de-duplicate its citations by hand."""
    import polars as pl

    import curator
    from curator.release.card_check import bibtex_keys

    r = curator.open_release(str(rel))
    where = "c.dataset in ('KiTS23', 'MSD_Spleen') and s.split <> 'test'"
    want = dict(r.sql(f"select c.dataset, count(*) from cases c join splits s using (case_id) where {where} "
                      "group by 1").fetchall())
    cited = r.citations(where)
    assert {s["dataset"]: s["cases"] for s in cited.sources} == want and cited.n_cases == sum(want.values())
    keys = {s["dataset"]: s["citation_key"] for s in r.table("sources").to_dicts()}
    assert set(bibtex_keys(cited.bib)) == {keys[d] for d in want}
    assert cited.licences.summary()["commercial_use"] == "no"  # KiTS23
    assert any("Incompatible share-alike" in line for line in cited.licences.incompatible)
    paths = cited.write(tmp_path / "paper")
    assert [p.name for p in paths] == ["CITATIONS.bib", "LICENCES.md"] and paths[0].read_text() == cited.bib
    md = paths[1].read_text(encoding="utf-8")
    assert f"The {sum(want.values())} selected cases come from 2 source dataset(s)" in md
    assert "| KiTS23 | CC-BY-NC-SA-4.0 |" in md and "DemoTotalSeg" not in md
    # the whole release cites what the release does; case ids (a loader's cases) narrow a selection
    assert r.citations().bib == (rel / "CITATIONS.bib").read_text(encoding="utf-8")
    one = sorted(r.table("cases").filter(pl.col("dataset") == "DemoTotalSeg")["case_id"])[:2]
    assert [s["dataset"] for s in r.citations(case_ids=one).sources] == ["DemoTotalSeg"]
    with pytest.raises(ReleaseError, match="1 of the case ids given are not among the release's cases that --where"):
        r.citations("c.dataset = 'KiTS23'", case_ids=[one[0]])
    with pytest.raises(ReleaseError, match="no case of the release matches"):
        r.citations("false")
    with pytest.raises(ReleaseError, match="over cases c and splits s"):
        r.citations("datset = 'KiTS23'")
