"""The cardiac phase of cine frames (the dataset YAML's ``phase:``): ACDC's Info.cfg → cases.phase
→ the release, QC cohorts split by phase, and a malformed Info.cfg said, not fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import curator
from curator.errors import InputError
from curator.ingest.phase import DEFAULT_KEYS, case_phases, parse_sidecar
from curator.registry import load_registry
from curator.registry.layout import discover
from curator.registry.spec import parse_spec
from curator.testing.cine import write_acdc_tree
from curator.testing.pipelines import make_pipeline, run

PATIENTS = 12
BROKEN = "patient003"  # its Info.cfg lost the colon of its ED line


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("phase")
    root = write_acdc_tree(tmp / "acdc", PATIENTS)
    (root / "training" / BROKEN / "Info.cfg").write_text("ED 1\nES: 13\nGroup: DCM\nHeight: 184.0\nWeight: 95.0\n")
    pipe = make_pipeline(tmp / "p", [{"dataset": "ACDC", "root": str(root)}],
                         stages={"dedup": {"enabled": False}, "pseudolabel": {"enabled": False},
                                 "qc": {"min_cohort": 8}})
    run(pipe, release=True)
    return curator.open_release(tmp / "p" / "releases" / "test" / "0.1.0")


def test_the_phase_of_each_frame_reaches_the_release(release: Any) -> None:
    rows = release.sql("select case_id, phase from cases order by 1").fetchall()
    assert len(rows) == 2 * PATIENTS
    for case, phase in rows:
        _, patient, frame = case.split("__")
        if patient == BROKEN:
            assert phase is None
        else:  # write_acdc_tree: ED is frame 01, ES frame 10 + n mod 5, as Info.cfg says
            assert phase == ("ED" if frame == "01" else "ES"), (case, phase)
    ed = release.sql("select count(*) from cases where phase = 'ED'").fetchall()[0][0]
    assert ed == PATIENTS - 1
    # Info.cfg's patient lines never leave ingest
    cols = {r[0] for r in release.sql("describe cases").fetchall()}
    assert not cols & {"group", "height", "weight", "nbframe"}
    cells = {x for r in release.sql("select * from cases").fetchall() for x in r if not isinstance(x, list)}
    assert not cells & {"DCM", 184.0, 95.0, "184.0", "95.0"}
    assert release.sql("select count(*) from cases where metadata_json is not null").fetchall()[0][0] == 0


def test_a_malformed_info_cfg_is_a_problem_naming_the_file_and_the_run_goes_on(release: Any) -> None:
    rows = release.sql("select case_id, kind, severity, path, message from problems "
                       "where kind = 'phase_file_malformed'").fetchall()
    assert {r[0] for r in rows} == {f"ACDC__{BROKEN}__01", f"ACDC__{BROKEN}__13"}
    for _, _, severity, path, message in rows:
        assert severity == "warning" and path == f"ACDC:training/{BROKEN}/Info.cfg"
        assert "line 1 is not a `key: value` line" in message and "What to do:" in message
        assert "95" not in message and "184" not in message  # the patient's lines are never quoted
    # both frames of the patient are ingested, labelled and judged all the same
    kept = release.sql(f"select count(*) from cases where case_id like 'ACDC__{BROKEN}__%' and label_status = 'ok'")
    assert kept.fetchall()[0][0] == 2


def test_qc_judges_end_diastole_and_end_systole_apart(release: Any) -> None:
    rows = release.sql("select q.cohort, c.phase, q.volume_lo, q.volume_hi, q.f_volume from qc q "
                       "join cases c using (case_id) where q.term_id = 'left_ventricle'").fetchall()
    by: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by.setdefault(r[0], []).append(r)
    assert set(by) == {"left_ventricle/MR/ED/body", "left_ventricle/MR/ES/body", "left_ventricle/MR/body"}
    for cohort, members in by.items():
        phases = {r[1] for r in members}
        assert phases == ({None} if cohort == "left_ventricle/MR/body" else {cohort.split("/")[2]})
    ed, es = by["left_ventricle/MR/ED/body"][0], by["left_ventricle/MR/ES/body"][0]
    assert len(by["left_ventricle/MR/ED/body"]) == len(by["left_ventricle/MR/ES/body"]) == PATIENTS - 1
    # each phase's bounds hold its own ventricles only: one mixed cohort's would span both
    assert es[3] < ed[2], (es, ed)


def _acdc(tmp: Path, infos: dict[str, str | None]) -> dict[str, tuple[str | None, Any]]:
    root = write_acdc_tree(tmp / "acdc", len(infos))
    for patient, text in infos.items():
        cfg = root / "training" / patient / "Info.cfg"
        if text is None:
            cfg.unlink()
        else:
            cfg.write_text(text)
    spec = load_registry().get("ACDC")
    cases, _ = discover(spec, root)
    return {c.case_id.removeprefix("ACDC__"): v for c in cases
            for v in [case_phases(spec.phase, root, [c])[c.case_id]]}


def test_each_way_an_info_cfg_can_be_wrong_names_the_file(tmp_path: Path) -> None:
    got = _acdc(tmp_path, {"patient001": "ED: 1\nES: 11\n",   # patient001's ES frame is 11: fine
                           "patient002": "ED: 1\nGroup: NOR\n",  # no ES line
                           "patient003": "ED: 1\nES: x13\n",  # not a number
                           "patient004": None,  # missing
                           "patient005": "ED: 1\nES: 12\n"})  # its ES frame file is 10: no frame of the file
    assert got["patient001__01"] == ("ED", None) and got["patient001__11"] == ("ES", None)
    phase, err = got["patient002__12"]
    assert phase is None and err.kind == "phase_file_malformed" and err.path == "training/patient002/Info.cfg"
    assert "has no line for ES" in err.detail
    assert got["patient003__01"][1].kind == "phase_file_malformed" and "ES's value is not a whole number" in \
        got["patient003__01"][1].detail
    assert got["patient004__01"][1].kind == "file_not_found"
    assert got["patient004__01"][1].path == "training/patient004/Info.cfg"
    assert got["patient005__01"] == ("ED", None)
    phase, err = got["patient005__10"]
    assert phase is None and err.kind == "phase_unmatched" and "'10'" in err.detail and "ES 12" in err.detail


def test_only_the_phase_lines_are_read_and_never_quoted() -> None:
    assert parse_sidecar("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n", DEFAULT_KEYS,
                         "Info.cfg") == {"ED": 1, "ES": 12}
    with pytest.raises(InputError) as e:
        parse_sidecar("ED: 1\nES: 12\nWeight 95.0\n", DEFAULT_KEYS, "Info.cfg")
    assert "line 3" in e.value.detail and "95" not in str(e.value)
    with pytest.raises(InputError, match="one frame for ED and ES"):
        parse_sidecar("ED: 4\nES: 4\n", DEFAULT_KEYS, "Info.cfg")
    # a key read whose value is no frame, or read twice, is named, never its value quoted
    with pytest.raises(InputError) as e:
        parse_sidecar("ED: 1\nES: 95.5\n", DEFAULT_KEYS, "Info.cfg")
    assert "line 2" in e.value.detail and "95" not in str(e.value)
    with pytest.raises(InputError) as e:
        parse_sidecar("ED: 1\nES: 12\nED: 84\n", DEFAULT_KEYS, "Info.cfg")
    assert "lines 1 and 3" in e.value.detail and "84" not in str(e.value)


def _spec(phase: Any) -> list[str]:
    d = {"name": "C", "version": "1", "modality": "MR", "region": "thorax", "licence": "CC-BY-4.0",
         "citation": "@misc{c, title={c}}", "layout": [{"image": "{case}/{case}_frame{frame}.nii.gz"}],
         "labels": {"encoding": "none"}, "phase": phase}
    return [f"{i.loc} [{i.kind}] {i.message}" for i in parse_spec(d, "C.yaml")[1]]


def test_the_phase_declaration_is_checked() -> None:
    assert _spec({"file": "Info.cfg", "frame": "frame"}) == []
    assert _spec({"field": "frame"}) == []
    (said,) = _spec({"file": "Info.cfg", "frame": "frmae"})
    assert said.startswith("C.yaml:phase.frame [value] phase.frame 'frmae' is no placeholder")
    (said,) = _spec({"file": "Info.cfg"})
    assert "[missing] phase.file needs `frame:`" in said
    assert any("not both" in s for s in _spec({"file": "Info.cfg", "frame": "frame", "field": "frame"}))
    assert any("[unknown_key] unknown key 'fle' in phase (did you mean 'file'?)" in s
               for s in _spec({"fle": "Info.cfg", "frame": "frame"}))
    assert any("phase.keys" in s for s in _spec({"file": "Info.cfg", "frame": "frame", "keys": {"ED": "diastole"}}))
    assert any("[path_escape]" in s for s in _spec({"file": "../Info.cfg", "frame": "frame"}))
    # a key naming a line about the patient is refused: ingest would read it and a problem could quote it
    (said,) = _spec({"file": "Info.cfg", "frame": "frame", "keys": {"Weight": "ED", "ES": "ES"}})
    assert "phase.keys names 'Weight', a line describing the patient" in said
    assert any("[type]" in s for s in _spec("Info.cfg"))


def test_the_built_in_cine_datasets_declare_their_phase() -> None:
    reg = load_registry()
    assert reg.get("ACDC").phase == {"file": "Info.cfg", "frame": "frame"}
    assert reg.get("CMRxMotion").phase == {"field": "phase"}
