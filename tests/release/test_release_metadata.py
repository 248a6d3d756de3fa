"""Per-case metadata travels with the cases: an analysis by group is one query on the release."""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from curator.config import PipelineConfig
from curator.ingest.metadata import load_metadata
from curator.pipeline import run_pipeline
from curator.release.query import Release

BY_SEX = """
select c.sex, count(*) as cases, avg(c.age_years) as mean_age, avg(c.bmi) as mean_bmi,
       median(t.tumour_ml) as median_tumour_ml
from cases c left join (select case_id, sum(volume_ml) as tumour_ml from raw_labels
                        where raw_value = 2 group by case_id) t using (case_id)
group by c.sex order by c.sex
"""


def test_nested_metadata_records_are_kept(tmp_path: Path) -> None:
    recs = [{"case_id": "a", "gender": "Female", "age": 51, "comorbidities": {"copd": True, "aids": False},
             "egfr": [{"day": -4, "value": 67.0}], "note": None}]
    (tmp_path / "meta.json").write_text(json.dumps(recs))
    out = load_metadata({"file": "meta.json", "columns": {"gender": "sex", "age": "age_years"},
                         "keep": ["comorbidities", "egfr"]}, tmp_path)
    assert out["a"]["sex"] == "F" and out["a"]["age_years"] == 51.0
    assert json.loads(out["a"]["metadata_json"]) == {"comorbidities": {"copd": True, "aids": False},
                                                     "egfr": [{"day": -4, "value": 67.0}]}


def test_only_declared_metadata_fields_are_published(tmp_path: Path) -> None:
    """A blocklist of identifying names let PatientName, DateOfBirth, PatientID, StudyDate and free
    text ('clinic_note') into cases.metadata_json; nested records were copied whole. Only fields
    `columns` maps or `keep` names are published now, never ones naming a person or a date, at
    any depth; the names of the rest (not their values) are reported."""
    recs = [{"case_id": "a", "PatientName": "DOE^JANE", "DateOfBirth": "1961-04-12", "PatientID": "MRN123456",
             "StudyDate": "2019-03-14", "clinic_note": "Jane Doe seen by Dr House", "pt_nm": "JD",
             "PatientSex": "F", "grade": 3,
             "clinic": {"name": "St Elsewhere", "dob": "1961-04-12", "beds": 40},
             "history": {"copd": True, "exam_date": "2019-03-01", "Referring Physician": "House"}}]
    (tmp_path / "meta.json").write_text(json.dumps(recs))
    dropped: set[str] = set()
    out = load_metadata({"file": "meta.json", "columns": {"PatientSex": "sex"},
                         "keep": ["grade", "history", "clinic_note", "PatientName"]}, tmp_path, dropped)
    assert out["a"]["sex"] == "F"
    assert json.loads(out["a"]["metadata_json"]) == {"grade": 3, "history": {"copd": True}}
    assert dropped == {"PatientName", "DateOfBirth", "PatientID", "StudyDate", "clinic_note", "pt_nm", "clinic",
                       "history.exam_date", "history.Referring Physician"}  # a nested one by its dotted name
    assert "DOE" not in json.dumps(out) and "1961" not in json.dumps(out) and "House" not in json.dumps(out)


def test_identifying_names_written_as_one_word_are_left_out(tmp_path: Path) -> None:
    """Names split into words only at ``_``, spaces and camelCase let ``ptname``, ``birthdate``,
    ``studydate`` and ``referringdoctor`` of a kept nested record into the release."""
    recs = [{"case_id": "a", "history": {"grade": 2, "ptname": "DOE^JANE", "birthdate": "19700101",
                                         "studydate": "20010911", "referringdoctor": "HOUSE^GREGORY",
                                         "patientname": "DOE^JANE", "hospitalization": True}}]
    (tmp_path / "meta.json").write_text(json.dumps(recs))
    out = load_metadata({"file": "meta.json", "keep": ["history"]}, tmp_path)
    assert json.loads(out["a"]["metadata_json"]) == {"history": {"grade": 2, "hospitalization": True}}


def test_a_record_can_be_kept_field_by_field_and_staff_ids_and_times_are_left_out(tmp_path: Path) -> None:
    """A kept record published every field the name list missed: its surgeon and radiologist, a
    ``PatID``, ``nhs_number``, ``zipcode``, ``exam_dt``, ``performed_on``, ``study_datetime``. Those
    names are identifying now, and ``keep: [surgery.type]`` publishes that field of the record only
    (of each record of a list too); the rest are reported by their dotted names."""
    surgery = {"type": "partial nephrectomy", "approach": "robotic", "surgeon": "HOUSE", "radiologist": "READER",
               "PatID": "MRN123456", "nhs_number": "943 476 5919", "zipcode": "02115", "exam_dt": "2001-09-11",
               "performed_on": "2001-09-11", "study_datetime": "2001-09-11T08:00"}
    recs = [{"case_id": "a", "surgery": surgery, "visits": [{"kind": "pre", "at": 1, "seen_at": "2001"}]}]
    (tmp_path / "meta.json").write_text(json.dumps(recs))
    dropped: set[str] = set()
    whole = json.loads(load_metadata({"file": "meta.json", "keep": ["surgery"]}, tmp_path, dropped)["a"]
                       ["metadata_json"])
    assert whole == {"surgery": {"type": "partial nephrectomy", "approach": "robotic"}}
    assert dropped == {"visits", *(f"surgery.{k}" for k in surgery if k not in ("type", "approach"))}
    dropped.clear()
    some = load_metadata({"file": "meta.json", "keep": ["surgery.type", "visits.kind"]}, tmp_path, dropped)
    assert json.loads(some["a"]["metadata_json"]) == {"surgery": {"type": "partial nephrectomy"},
                                                      "visits": [{"kind": "pre"}]}
    assert {"surgery.approach", "visits.at", "visits.seen_at"} <= dropped
    # a field of a record kept, where the file holds free text instead of a record: none of it
    recs[0]["surgery"] = "partial nephrectomy by Dr House on 2001-09-11"
    (tmp_path / "meta.json").write_text(json.dumps(recs))
    dropped.clear()
    text = load_metadata({"file": "meta.json", "keep": ["surgery.type", "visits.kind"]}, tmp_path, dropped)
    assert json.loads(text["a"]["metadata_json"]) == {"visits": [{"kind": "pre"}]} and "surgery" in dropped


def test_a_kept_field_that_names_a_person_is_a_registry_error() -> None:
    from curator.registry import load_registry
    from curator.registry.spec import parse_spec

    d = load_registry().get("KiTS23").to_dict()
    d["metadata"] = {"file": "dataset/kits23.json",
                     "keep": ["malignant", "PatientName", "study_date", "surgery.surgeon", "surgery.type"]}
    _, issues = parse_spec(d, "KiTS23.yaml")
    (issue,) = [i for i in issues if i.loc.endswith("metadata.keep")]
    assert "PatientName" in issue.message and "study_date" in issue.message and "malignant" not in issue.message
    assert "surgery.surgeon" in issue.message and "surgery.type" not in issue.message


def test_group_analysis_on_the_demo_release(demo: Path) -> None:
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    rows = rel.sql("select sex, count(*), avg(age_years) from cases where dataset = 'KiTS23' "
                   "and sex is not null group by sex order by sex").fetchall()
    # the demo writes sex M/F alternating with ages 40 + 5 i (case_00000..4), plus case_00005 (M, 61)
    assert rows == [("F", 2, 50.0), ("M", 4, pytest.approx((40 + 50 + 60 + 61) / 4))]


@pytest.mark.real
def test_group_analysis_on_real_kits23(real_copy: Callable[[str], Path], tmp_path: Path) -> None:
    root = real_copy("kits23")
    keep = sorted(p.name for p in (root / "dataset").glob("case_*"))[:6]
    for p in (root / "dataset").glob("case_*"):
        if p.name not in keep:
            shutil.rmtree(p)
    cfg = {"workspace": str(tmp_path / "ws"), "sources": [{"dataset": "KiTS23", "root": str(root)}],
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": str(tmp_path / "releases"), "collection": "kits", "version": "0.1.0"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    rel = Release(run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml")).release)  # type: ignore[arg-type]

    meta = {r["case_id"]: r for r in json.loads((root / "dataset" / "kits23.json").read_text()) if r["case_id"] in keep}
    got = {r[0]: r[1:] for r in rel.sql(BY_SEX).fetchall()}
    for sex, word in (("M", "male"), ("F", "female")):
        sel = [m for m in meta.values() if m["gender"] == word]
        if not sel:
            assert sex not in got
            continue
        cases, mean_age, mean_bmi, tumour = got[sex]
        assert cases == len(sel)
        assert mean_age == pytest.approx(statistics.mean(m["age_at_nephrectomy"] for m in sel))
        assert mean_bmi == pytest.approx(statistics.mean(m["bmi"] for m in sel))
        assert tumour is None or tumour > 0
    # nested clinical fields are one JSON path away
    ckd = dict(rel.sql("select metadata_json->>'$.comorbidities.chronic_kidney_disease' as ckd, count(*) "
                       "from cases group by 1").fetchall())
    expected: dict[str, int] = {}
    for m in meta.values():
        k = json.dumps(m["comorbidities"]["chronic_kidney_disease"])
        expected[k] = expected.get(k, 0) + 1
    assert ckd == expected
    subtypes = rel.sql("select distinct metadata_json->>'$.tumor_histologic_subtype' from cases").fetchall()
    assert {r[0] for r in subtypes} == {m["tumor_histologic_subtype"] for m in meta.values()}
