"""Identifiers planted in every place they can hide never reach an output."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk

from curator.io.deid import BASIC_PROFILE, deidentify, safe_metadata
from curator.io.nifti import nifti_bytes, write_nifti
from curator.io.volume import Volume
from curator.testing.layouts import PLANTED_PHI, write_dicom_series
from curator.testing.phantoms import Subject, grid, remap, render
from curator.testing.phi import scan
from curator.testing.pipelines import make_pipeline, run

NIFTI_PHI = {"descrip": "NIFTI-PLANTED-NAME", "aux_file": "AUXPLANTED", "intent_name": "INTPLANTED",
             "db_name": "DBPLANTED"}
NRRD_PHI = "NRRD-PLANTED-PATIENT"
META_PHI = {"patient_name": "META-PLANTED-NAME", "date_of_birth": "18991231", "mrn": "MRN-PLANTED-7"}


def test_deidentify_applies_the_basic_profile() -> None:
    ds = pydicom.Dataset()
    for k, v in PLANTED_PHI.items():
        setattr(ds, k, v)
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.SeriesInstanceUID = "1.2.3.4.5.7"
    ds.Modality = "CT"
    ds.add_new(0x00091001, "LO", "private planted")
    out = deidentify(ds, key=b"k" * 32)
    text = str(out)
    for v in PLANTED_PHI.values():
        assert v not in text
    assert "private planted" not in text
    assert out.SOPInstanceUID != ds.SOPInstanceUID and out.SOPInstanceUID.startswith("2.25.")
    assert deidentify(ds, key=b"k" * 32).SOPInstanceUID == out.SOPInstanceUID  # stable
    assert out.Modality == "CT" and out.PatientIdentityRemoved == "YES"
    assert {(0x0010, 0x0010), (0x0010, 0x0020), (0x0010, 0x0030)} <= set(BASIC_PROFILE)
    assert safe_metadata(ds) == {"modality": "CT"}


def test_written_nifti_headers_are_cleared() -> None:
    g = grid((4, 4, 4), (1.0, 1.0, 1.0))
    raw = gzip.decompress(nifti_bytes(Volume(np.zeros((4, 4, 4), np.int16), g)))
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]))
    for field in NIFTI_PHI:
        assert bytes(hdr[field]).strip(b"\x00") == b""


def test_planted_identifiers_everywhere_never_reach_outputs(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    uids: list[str] = []
    tokens = list(PLANTED_PHI.values()) + PLANTED_PHI["PatientName"].split("^") + list(NIFTI_PHI.values()) \
        + [NRRD_PHI] + list(META_PHI.values())
    for i in range(2):
        g = grid((16, 14, 8), (20.0, 20.0, 30.0), "LPS")
        img, lab = render(Subject.random(i), g)
        case = raw / f"case_{i:05d}"
        # DICOM: identifiers in tags, private tags, series/study descriptions
        files = write_dicom_series(case / "dicom", img, g, phi=PLANTED_PHI)
        for f in files:
            ds = pydicom.dcmread(f)
            ds.SeriesDescription = "SERIESDESC-PLANTED"
            ds.StudyDescription = "STUDYDESC-PLANTED"
            ds.add_new(0x00291010, "LO", "PRIVATE-PLANTED")
            ds.save_as(f)
            uids += [str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)]
        # NIfTI label with identifiers in every free-text header field
        nimg = nib.Nifti1Image(remap(lab, {"kidney_left": 1, "kidney_right": 1}), g.matrix)
        for k, v in NIFTI_PHI.items():
            nimg.header[k] = v
        nib.save(nimg, str(case / "segmentation.nii.gz"))
        # NRRD copy of the image with a free-text key
        tmp = tmp_path / "t.nii.gz"
        write_nifti(tmp, Volume(np.rint(img).astype(np.int16), g))
        im = sitk.ReadImage(str(tmp))
        im.SetMetaData("patient_name", NRRD_PHI)
        sitk.WriteImage(im, str(case / "image.nrrd"))
    (raw / "clinical.json").write_text(json.dumps(
        [{"case_id": f"case_{i:05d}", "sex": "F", "age": 50, **META_PHI} for i in range(2)]))
    tokens += ["SERIESDESC-PLANTED", "STUDYDESC-PLANTED", "PRIVATE-PLANTED"] + sorted(set(uids))
    spec = {"name": "PhiTrap", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC0-1.0",
            "citation": "@misc{x, title={x}}",
            "layout": [{"image": "{case}/dicom/", "label": "{case}/segmentation.nii.gz", "format": "dicom"},
                       {"image": "{case}/image.nrrd", "label": "{case}/segmentation.nii.gz", "sequence": "nrrd"}],
            "labels": {"encoding": "label_map", "values": {1: "kidney"}},
            "metadata": {"file": "clinical.json", "key": "case_id", "columns": {"sex": "sex", "age": "age_years"}}}
    import yaml

    (tmp_path / "PhiTrap.yaml").write_text(yaml.safe_dump(spec))
    assert scan([raw], tokens)  # the planted identifiers are really there
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "PhiTrap.yaml"), "root": str(raw)}])
    res = run(pipe, release=True)
    assert res.release is not None
    from curator.release.query import Release

    rel = Release(res.release)
    ((n,),) = rel.sql("select count(*) from cases where label_status = 'ok'").fetchall()
    assert n == 4  # two DICOM and two NRRD cases ingested with their labels
    ((sex,),) = rel.sql("select any_value(sex) from cases").fetchall()
    assert sex == "F"  # non-identifying metadata still flows
    assert scan([tmp_path / "workspace", res.release], tokens) == []
