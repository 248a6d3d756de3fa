"""A source whose files are named after patients publishes none of the names (pseudonymous_ids)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator.release.query import Release
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import Subject, grid, render
from curator.testing.pipelines import make_pipeline, run, table

YAML = """name: HospitalExport
version: "1"
title: a private export
modality: CT
region: abdomen
licence: LicenseRef-private
citation_key: private
citation: "@misc{private, title={private}}"
layout:
  - image: "{case}/ct.nii.gz"
    label: "{case}/seg.nii.gz"
patterns:
  case: "[A-Z]+_[A-Z]+_MRN\\\\d+"
labels:
  encoding: label_map
  values: {1: liver}
"""
NAMES = ["DOE_JANE_MRN123456", "ROE_RICHARD_MRN654321", "POE_EDGAR_MRN111111"]


def _strings(rel: Release) -> str:
    """Every string value of every table of the release, and its JSON and text files."""
    out = []
    for name in rel.table_names():
        cols = rel.sql(f"select * from {name} limit 0").columns
        for row in rel.sql(f"select * from {name}").fetchall():
            out.append(json.dumps(dict(zip(cols, row, strict=True)), default=str))
    out += [p.read_text(errors="replace") for p in rel.path.rglob("*") if p.suffix in (".json", ".md", ".html", ".csv")]
    return "\n".join(out)


def test_a_pseudonymous_source_publishes_no_file_name(tmp_path: Path) -> None:
    """Case ids were the folder names (DOE_JANE_MRN123456): in every table, the store names, the
    problems' paths and messages, the report. With pseudonymous_ids they are keyed hashes, and
    the release leaves out the source's file paths and problem details."""
    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    root = tmp_path / "export"
    for i, name in enumerate(NAMES):
        img, lab = render(Subject.random(i + 1), g, "CT", seed=i + 1)
        save_nifti(root / name / "ct.nii.gz", np.rint(img).astype(np.int16), g, np.int16)
        if i < 2:
            save_nifti(root / name / "seg.nii.gz", (lab == 1).astype(np.uint8), g, np.uint8)
    (root / NAMES[2] / "seg.nii.gz").write_bytes(b"not a nifti")  # a problem row about that case
    (tmp_path / "export.yaml").write_text(YAML)
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")}
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "export.yaml"), "root": str(root),
                                     "pseudonymous_ids": True}], stages={**off, "ingest": {"on_bad_case": "warn"}})
    rel = Release(run(pipe, release=True).release)  # type: ignore[arg-type]
    ids = [r[0] for r in rel.sql("select case_id from cases order by 1").fetchall()]
    assert len(ids) == 3 and all(i.startswith("HospitalExport__c_") and len(i) == len("HospitalExport__c_") + 20
                                 for i in ids)
    published = _strings(rel)
    for name in NAMES:
        for part in name.split("_"):
            assert part not in published, part
    assert not [p for p in rel.path.rglob("*") if any(n in p.name for n in NAMES)]
    assert rel.sql("select count(*) from problems where dataset = 'HospitalExport'").fetchall()[0][0] >= 1
    # the workspace keeps the names (a local user finds the files), and the ids are stable
    ws = {r["source_case"]: r["case_id"] for r in table(pipe, "cases").to_pylist()}
    assert sorted(ws) == sorted(NAMES) and sorted(ws.values()) == ids
    # the files' checksums: whoever holds the export would find a patient's rows by them
    sums = {v for r in table(pipe, "cases").to_pylist() for v in (r["image_sha256"], r["label_sha256"]) if v}
    assert hashlib.sha256((root / NAMES[0] / "ct.nii.gz").read_bytes()).hexdigest() in sums  # the workspace keeps them
    assert not [s for s in sums if s in published]
    keyed = rel.sql("select image_sha256, label_sha256 from cases").fetchall()
    assert all(v is None or (v.startswith("k_") and len(v) == 22) for r in keyed for v in r) and keyed[0][0]
    run(pipe, stages=["ingest"])
    assert {r["source_case"]: r["case_id"] for r in table(pipe, "cases").to_pylist()} == ws


def test_a_failed_case_of_a_pseudonymous_source_publishes_no_file_name(tmp_path: Path) -> None:
    """A case whose image cannot be read has no ``cases`` row, only ``problems`` rows: their
    messages (which name the file, here after the patient) are reduced as well."""
    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    root = tmp_path / "export"
    for i, name in enumerate(NAMES[:2]):
        img, lab = render(Subject.random(i + 1), g, "CT", seed=i + 1)
        save_nifti(root / name / f"{name}_ct.nii.gz", np.rint(img).astype(np.int16), g, np.int16)
        save_nifti(root / name / "seg.nii.gz", (lab == 1).astype(np.uint8), g, np.uint8)
    (root / NAMES[1] / f"{NAMES[1]}_ct.nii.gz").write_bytes(b"not a nifti")  # the case fails in ingest
    (tmp_path / "export.yaml").write_text(YAML.replace("{case}/ct.nii.gz", "{case}/{case}_ct.nii.gz"))
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")}
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "export.yaml"), "root": str(root),
                                     "pseudonymous_ids": True}], stages={**off, "ingest": {"on_bad_case": "warn"}})
    rel = Release(run(pipe, release=True).release)  # type: ignore[arg-type]
    # the workspace's rows name the file (its path, under the source root) after the patient
    assert any(NAMES[1] in f"{r['message']} {r['path']}" for r in table(pipe, "problems__ingest").to_pylist())
    assert rel.sql("select count(*) from cases").fetchall()[0][0] == 1
    assert rel.sql("select count(*) from problems where case_id like 'HospitalExport__c_%'").fetchall()[0][0] >= 1
    published = _strings(rel)
    for part in NAMES[1].split("_"):
        assert part not in published, part


def test_a_pseudonymous_source_publishes_sequence_names_only_from_its_yaml(tmp_path: Path) -> None:
    """``{sequence}`` matched in a file name (a PACS export's ``19430217_StElsewhere``) is
    keyed in the release; a sequence the dataset YAML names (``sequence: T2``) stays as it is.
    Splits stratified by sequence key the strata alike (they were built before, from the names)."""
    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    root = tmp_path / "export"
    img, lab = render(Subject.random(1), g, "CT", seed=1)
    case = root / NAMES[0]
    save_nifti(case / "19430217_StElsewhere_ct.nii.gz", np.rint(img).astype(np.int16), g, np.int16)
    save_nifti(case / "t2.nii.gz", np.rint(img).astype(np.int16), g, np.int16)
    save_nifti(case / "seg.nii.gz", (lab == 1).astype(np.uint8), g, np.uint8)
    layout = ('  - image: "{case}/{sequence}_ct.nii.gz"\n    label: "{case}/seg.nii.gz"\n'
              '  - image: "{case}/t2.nii.gz"\n    label: "{case}/seg.nii.gz"\n    sequence: T2\n')
    yaml_text = YAML.replace('  - image: "{case}/ct.nii.gz"\n    label: "{case}/seg.nii.gz"\n', layout)
    (tmp_path / "export.yaml").write_text(yaml_text)
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc", "preprocess")}
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "export.yaml"), "root": str(root),
                                     "pseudonymous_ids": True}],
                         stages={**off, "splits": {"stratify": ["dataset", "sequence"]}})  # splits.stratum too
    rel = Release(run(pipe, release=True).release)  # type: ignore[arg-type]
    seqs = sorted(r[0] for r in rel.sql("select sequence from cases").fetchall())
    assert len(seqs) == 2 and seqs[0] == "T2" and seqs[1].startswith("q_"), seqs
    strata = sorted(r[0] for r in rel.sql("select stratum from splits").fetchall())
    assert strata == sorted(f"HospitalExport|{q}" for q in seqs), strata
    published = _strings(rel)
    assert "19430217" not in published and "StElsewhere" not in published


def test_a_pseudonymous_source_publishes_structure_names_only_from_its_yaml(tmp_path: Path) -> None:
    """A per-structure mask the dataset YAML does not declare is named by its file
    (``liver_DOE_JANE_MRN123456.nii.gz``; an RTSTRUCT ROI or a SEG segment by free text typed at
    the console): it was published in ``cases.label_keys``, ``cases.label_dropped`` (a mask that
    could not be used), ``raw_labels.label_key`` and the store's ``label_raw_values``. Each is now
    the same keyed pseudonym; a declared structure (``liver``) keeps its name."""
    from curator.store import CaseStore

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    root = tmp_path / "export"
    img, lab = render(Subject.random(1), g, "CT", seed=1)
    seg = root / NAMES[0] / "segmentations"
    save_nifti(root / NAMES[0] / "ct.nii.gz", np.rint(img).astype(np.int16), g, np.int16)
    save_nifti(seg / "liver.nii.gz", (lab == 1).astype(np.uint8), g, np.uint8)
    save_nifti(seg / "liver_DOE_JANE_MRN123456.nii.gz", (lab == 2).astype(np.uint8), g, np.uint8)
    (seg / "tumour_ROE_RICHARD_MRN654321.nii.gz").write_bytes(b"not a nifti")  # label_dropped
    yaml_text = (YAML.replace('label: "{case}/seg.nii.gz"', 'label: "{case}/segmentations/{structure}.nii.gz"')
                 .replace("  encoding: label_map\n  values: {1: liver}\n",
                          "  encoding: per_structure\n  structures: {liver: liver}\n"))
    (tmp_path / "export.yaml").write_text(yaml_text)
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")}
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "export.yaml"), "root": str(root),
                                     "pseudonymous_ids": True}], stages={**off, "ingest": {"on_bad_case": "warn"}})
    rel = Release(run(pipe, release=True).release)  # type: ignore[arg-type]
    ((keys, dropped),) = rel.sql("select label_keys, label_dropped from cases").fetchall()
    assert keys[0] == "liver" and len(keys) == 2 and keys[1].startswith("u_"), keys
    assert len(dropped) == 1 and dropped[0].startswith("u_") and dropped[0] != keys[1], dropped
    raw = sorted(r[0] for r in rel.sql("select label_key from raw_labels").fetchall())
    assert raw == sorted(keys), raw
    store = CaseStore(rel.path / rel.sql("select store from preprocessed").fetchall()[0][0])
    assert sorted(v for plane in store.attrs["label_raw_values"] for v in plane.values()) == sorted(keys)
    published = _strings(rel)
    for part in ("DOE", "JANE", "MRN123456", "ROE", "RICHARD", "MRN654321"):
        assert part not in published, part
    from curator.workspace import Workspace

    key = Workspace(tmp_path / "workspace").pseudonym("HospitalExport", "liver_DOE_JANE_MRN123456")
    assert key[2:] not in keys[1]  # not the digest a patient or study of that name keys to (linkable)
    ws = table(pipe, "cases").to_pylist()[0]  # the workspace keeps the names
    assert "liver_DOE_JANE_MRN123456" in ws["label_keys"] and ws["label_dropped"] == ["tumour_ROE_RICHARD_MRN654321"]


def leaky_problem_step(b: Any) -> None:
    """A release step (run before the privacy step) adding a problem whose message names folders
    of the machine, as a stage's message once did (a missing `registry:` entry's absolute path)."""
    kits, cfg = b.ctx.sources["KiTS23"].root, b.ctx.config
    b.add_problems([{"stage": "ingest", "dataset": "KiTS23", "case_id": None, "path": f"{kits}/case_00000",
                     "kind": "invalid_dataset_spec", "severity": "warning",
                     "message": f"cannot read {cfg.folder}/home_site/extra: gone; {kits}/case_00000/x.nii.gz and "
                                f"{kits}. Workspace {b.ctx.workspace.root}/stores, not {cfg.folder}x"}])


def test_a_problem_naming_a_folder_of_the_machine_is_published_without_it(tmp_path: Path) -> None:
    """Whatever a message says, the release's problems name no folder of the machine: a source's
    root is `<source>:`, the pipeline's folder and the workspace are named as such."""
    from curator.config import PipelineConfig
    from curator.release.build import RELEASE_STEPS, build_release
    from curator.runner.context import Context
    from curator.testing.layouts import write_kits_case

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp_path / "data" / "kits", "case_00000", np.rint(img).astype(np.int16),
                    (lab > 0).astype(np.uint8), g)
    off = {s: {"enabled": False} for s in ("dedup", "harmonize", "preprocess", "pseudolabel", "qc")}
    pipe = make_pipeline(tmp_path / "proj", [{"dataset": "KiTS23", "root": str(tmp_path / "data" / "kits")}],
                         stages=off)
    run(pipe, stages=["ingest"])
    at = RELEASE_STEPS.index("curator.release.privacy:release_step")
    steps = [*RELEASE_STEPS[:at], f"{__name__}:leaky_problem_step", *RELEASE_STEPS[at:]]
    rel = Release(build_release(Context(PipelineConfig.load(pipe)), steps=steps))
    (row,) = rel.sql("select path, message from problems where message like 'cannot read%'").fetchall()
    proj = tmp_path / "proj"
    said = ("cannot read <pipeline folder>/home_site/extra: gone; KiTS23:case_00000/x.nii.gz and KiTS23:. "
            f"Workspace <workspace>/stores, not {proj}x")  # a longer folder's name is not the pipeline's
    assert row == ("KiTS23:case_00000", said), row
    assert str(tmp_path) not in _strings(rel).replace(f"{proj}x", "")


def test_a_two_part_home_or_source_root_is_scrubbed_but_never_a_shared_parent(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A home of /root (containers, CI) or a source root /data was never replaced (a depth rule
    kept every two-part folder), so /root/project/... reached published problem rows."""
    from types import SimpleNamespace

    from curator.release.privacy import machine_folders, scrub_machine_paths

    monkeypatch.setattr(Path, "home", lambda: Path("/root"))
    cfg = SimpleNamespace(release=SimpleNamespace(root=tmp_path / "releases"), folder=Path("/home"))
    b = SimpleNamespace(ctx=SimpleNamespace(config=cfg, workspace=SimpleNamespace(root=tmp_path / "work"),
                                            sources={"KiTS23": SimpleNamespace(root=Path("/data"))}))
    folders = machine_folders(b)  # type: ignore[arg-type]
    said = dict(folders)
    assert said["/root"] == "~" and said["/data"] == "KiTS23:" and "/home" not in said
    assert scrub_machine_paths("cannot read /root/project/x.yaml; /data/case_1/a.nii.gz", folders) == \
        "cannot read ~/project/x.yaml; KiTS23:case_1/a.nii.gz"
