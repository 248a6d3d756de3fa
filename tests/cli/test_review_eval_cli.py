"""``curator review import`` / ``curator eval`` on a small phantom workspace: problem kinds in
brackets survive rich, each case is named once, wrong layer names are clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from curator.cli.common import OutputFormat, emit
from curator.schema import to_arrow
from curator.testing.segmodels import write_phantom_store
from curator.workspace import Workspace
from tests.cli.test_cli import curator
from tests.pseudolabel.conftest import case_row, phantom_ws  # noqa: F401 - a fixture


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    ws = Workspace(tmp_path / "ws").init()
    write_phantom_store(ws.stores_dir / "MSD_Spleen__spleen_1.zarr", 7, {"spleen": 1})
    ws.write_table("cases", to_arrow("cases", [case_row("MSD_Spleen__spleen_1", "MSD_Spleen")]))
    p = tmp_path / "pipeline.yaml"
    p.write_text(f"workspace: {ws.root}\n")
    return p


def test_review_import_problems_show_kind_and_name_the_case_once(pipeline: Path, tmp_path: Path) -> None:
    import json

    from curator.pseudolabel.review_records import write_manifest

    folder = tmp_path / "review"
    for cid in ("MSD_Spleen__spleen_1", "MSD_Spleen__spleen_99"):  # not of the export; an unknown case
        (folder / cid).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)), folder / cid / "revised.nii.gz")
    record = {"format": 1, "case_id": "MSD_Spleen__spleen_99", "codes": {}, "start_masks": {}}
    (folder / "MSD_Spleen__spleen_99" / "export.json").write_text(json.dumps(record))
    write_manifest(folder, {"MSD_Spleen__spleen_99": record}, Workspace(tmp_path / "ws").key)
    res = curator("review", "import", str(pipeline), str(folder))
    assert res.returncode == 1, res.stderr
    assert "! MSD_Spleen__spleen_1: [revised_label_invalid] not a case folder of this export" in res.stderr, \
        res.stderr
    assert "! MSD_Spleen__spleen_99: [revised_label_invalid] no case 'MSD_Spleen__spleen_99'" in res.stderr
    assert "MSD_Spleen__spleen_99: MSD_Spleen__spleen_99" not in res.stderr


def test_eval_unknown_layer_is_an_error_not_an_empty_table(pipeline: Path) -> None:
    res = curator("eval", str(pipeline), "--pred", "nonexistent", "--ref", "original")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "[config_error] --pred 'nonexistent' is not a label layer" in res.stderr, res.stderr
    res = curator("eval", str(pipeline), "--pred", "original", "--ref", "revised")
    assert res.returncode == 2 and "no case holds a term in both" in res.stderr, res.stderr
    res = curator("eval", str(pipeline), "--surface", "mesh")
    assert res.returncode == 2 and "[config_error] --surface 'mesh' is not a surface measure" in res.stderr
    assert "surfels, voxels" in res.stderr, res.stderr


def test_table_cells_in_brackets_are_printed_not_read_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    emit(["[kind]", "message"], [["x", "[revised_label_invalid] bad grid"]], OutputFormat.table, title="[t]")
    shown = capsys.readouterr().out
    assert "[revised_label_invalid] bad grid" in shown and "[kind]" in shown and "[t]" in shown


def test_review_export_onto_a_file_is_a_clear_error(pipeline: Path, tmp_path: Path) -> None:
    """-o PIPELINE (an existing file) failed with FileExistsError, an internal error."""
    Workspace(tmp_path / "ws").write_table("attention", to_arrow("attention", []))
    res = curator("review", "export", str(pipeline), "-o", str(pipeline))
    assert res.returncode == 2, res.stderr
    assert "this is a file, but a folder is to be written here" in " ".join(res.stderr.split()), res.stderr


def test_review_import_of_a_folder_that_is_no_review_export_fails(pipeline: Path, tmp_path: Path) -> None:
    """An empty folder or a dedup report said "imported 0 revised case(s)" and exited 0."""
    from curator.errors import ConfigError
    from curator.pseudolabel.review_import import import_review

    empty, dedup, previews, export = (tmp_path / n for n in ("empty", "dedup-report", "previews", "export"))
    for folder in (empty, dedup, previews / "case_1", export / "case_1"):
        folder.mkdir(parents=True)
    (dedup / "index.html").write_text("<html></html>")
    (dedup / "dup-1.png").write_bytes(b"\x89PNG")
    for folder in (previews, export):  # a release's review folder: worklist and previews only
        (folder / "worklist.csv").write_text("review_rank,case_id\n1,case_1\n")
        (folder / "case_1" / "preview_liver.png").write_bytes(b"\x89PNG")
    (export / "case_1" / "codes.json").write_text('{"1": ["liver"]}')  # editable, not revised yet
    nothing = "not a review export: it holds no worklist.csv, no <case>/codes.json and no <case>/revised.nii.gz"
    for folder, says in ((empty, nothing), (dedup, "not a review export"),
                         (previews, "this review export holds previews only, no labels to edit")):
        res = curator("review", "import", str(pipeline), str(folder))
        said = " ".join(res.stderr.split())
        assert res.returncode == 2 and says in said and "imported" not in said, res.stderr
        with pytest.raises(ConfigError, match="review export"):
            import_review(Workspace(tmp_path / "ws"), folder)
    res = curator("review", "import", str(pipeline), str(export))
    said = " ".join(res.stderr.split())
    assert res.returncode == 0 and "0 case(s) revised, 0 accepted unchanged" in said, said
    assert "holds a revised.nii.gz yet" in said and "accept column" in said, said


def test_review_import_into_a_workspace_never_built_writes_nothing(pipeline: Path, tmp_path: Path) -> None:
    """A pipeline whose workspace was never built got a new workspace (key, tables) and a message per
    case ("no case ... in this workspace") that sent the reviewer looking at the export."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "pipeline.yaml").write_text(f"workspace: {other / 'ws'}\n")
    folder = tmp_path / "review"
    (folder / "MSD_Spleen__spleen_1").mkdir(parents=True)
    (folder / "MSD_Spleen__spleen_1" / "codes.json").write_text('{"1": ["liver"]}')
    shutil.copy(Path(__file__), folder / "MSD_Spleen__spleen_1" / "revised.nii.gz")
    res = curator("review", "import", str(other / "pipeline.yaml"), str(folder))
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and "this workspace holds no cases: run the pipeline first" in said, said
    assert sorted(p.name for p in other.iterdir()) == ["pipeline.yaml"]


def _exported(phantom_ws, tmp_path: Path, top: int):  # type: ignore[no-untyped-def]  # noqa: F811
    """(workspace, its pipeline.yaml, a review export of its ``top`` cases after pseudolabel, those cases)."""
    from curator.pseudolabel.review import export_review
    from curator.pseudolabel.stage import PseudolabelStage
    from curator.runner.run import run_stage

    ctx, _ = phantom_ws()
    ws = ctx.workspace
    run_stage(ctx, PseudolabelStage)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"workspace: {ws.root}\n")
    out = tmp_path / "review"
    return ws, pipeline, out, export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=top,
                                            images=False).cases


def test_review_import_says_revised_accepted_and_refused_and_fails_when_nothing_came_in(
        phantom_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The summary was "✓ imported 2 revised case(s)" for one edited case and one saved unchanged
    (which stayed pseudo), and "✓ imported 0 revised case(s)" when every revision was refused."""
    import csv

    _, pipeline, out, (edited, approved, bad) = _exported(phantom_ws, tmp_path, 3)
    img = nib.load(out / bad / "pseudo.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), img.affine), out / bad / "revised.nii.gz")
    res = curator("review", "import", str(pipeline), str(out))
    said = " ".join(res.stderr.split())
    assert res.returncode == 1 and "✗ nothing imported: 1 case(s) refused (above)" in said, said
    img = nib.load(out / edited / "pseudo.nii.gz")  # the case's own label (not the other case's, above)
    data = np.asarray(img.dataobj).copy()
    data[: data.shape[0] // 2] = 0
    nib.save(nib.Nifti1Image(data, img.affine), out / edited / "revised.nii.gz")
    with open(out / "worklist.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["accept"] = "all" if r["case_id"] == approved else ""
    with open(out / "worklist.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = curator("review", "import", str(pipeline), str(out))
    said = " ".join(res.stderr.split())
    assert res.returncode == 1, said  # a refused revision is still said by the exit code
    assert "✓ 1 case(s) revised, 1 accepted unchanged; 1 case(s) refused (above)" in said, said


def test_review_import_of_a_revision_over_an_original_label_warns_and_succeeds(
        phantom_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A revision imported without the voxels of the dataset's own label is a warning of an imported
    case — said, kept in problems__review — not a refusal: exit code 0, not 'nothing imported'."""
    from curator.store import CaseStore

    ws, pipeline, out, cases = _exported(phantom_ws, tmp_path, 4)
    cid = next(c for c in cases if c.startswith("MSD_Spleen"))
    img = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(img.dataobj).copy()
    data[CaseStore(ws.stores_dir / f"{cid}.zarr").mask("spleen", "original")] = 1
    nib.save(nib.Nifti1Image(data, img.affine), out / cid / "revised.nii.gz")
    res = curator("review", "import", str(pipeline), str(out))
    said = " ".join(res.stderr.split())
    assert res.returncode == 0, said
    assert f"! {cid}: [revised_overlaps_original]" in said and "of the dataset's own spleen label" in said
    assert "✓ 1 case(s) revised, 0 accepted unchanged; 1 imported with a warning (above)" in said, said
    assert "refused" not in said


def test_review_import_says_per_case_what_changed_where_stray_values_are_and_what_comes_next(
        phantom_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The import printed counts only (a wrong code revised kidney_left unseen), `values [6] are not
    in codes.json` without where (16 voxels in 1.5 M), and nothing of what to run next; an
    import could not be withdrawn. Now each case's revised terms are named, the stray values
    counted and boxed, the next step said, and `curator review revert` withdraws a revision."""
    import json

    ws, pipeline, out, (edited, stray) = _exported(phantom_ws, tmp_path, 2)
    codes = json.loads((out / edited / "codes.json").read_text())
    liver = next(int(c) for c, ts in codes.items() if ts == ["liver"])
    img = nib.load(out / edited / "pseudo.nii.gz")
    data = np.asarray(img.dataobj).copy()
    data[data == liver] = 0
    nib.save(nib.Nifti1Image(data, img.affine), out / edited / "revised.nii.gz")
    data = np.asarray(nib.load(out / stray / "pseudo.nii.gz").dataobj).copy()
    data[1:3, 2:4, 5] = 9
    nib.save(nib.Nifti1Image(data, img.affine), out / stray / "revised.nii.gz")
    res = curator("review", "import", str(pipeline), str(out), "--reviewer", "Dr A")
    said = " ".join(res.stderr.split())
    assert res.returncode == 1, said
    assert f"{edited}: revised liver " in said, said
    assert "values [9] are not in codes.json: 4 voxel(s) at i 1–2, j 2–3, k (slice) 5" in said, said
    assert f"next: `curator run {pipeline}`" in said and "--reviewer" not in said.split("next:")[1]
    rows = ws.read_table("_labels_revised").to_pylist()
    assert [(r["case_id"], r["term_id"], r["reviewed_by"]) for r in rows] == [(edited, "liver", "Dr A")]

    res = curator("review", "revert", str(pipeline), edited, "--reviewer", "Dr B")
    said = " ".join(res.stderr.split())
    assert res.returncode == 0, said
    assert f"✓ {edited}: withdrew the reviewed label(s) of liver" in said and "back on the worklist" in said
    assert ws.read_table("_labels_revised").num_rows == 0
    res = curator("review", "revert", str(pipeline), edited)
    assert res.returncode == 2 and "nothing to revert" in " ".join(res.stderr.split()), res.stderr


def test_review_export_takes_cases_by_name_and_says_the_close_ones_of_a_wrong_name(
        phantom_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """`curator review export --case` exports the cases named whatever their rank; a misspelt id is an
    error naming the ids it is close to, and nothing is written."""
    from curator.pseudolabel.stage import PseudolabelStage
    from curator.runner.run import run_stage

    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"workspace: {ctx.workspace.root}\n")
    att = ctx.workspace.read_table("attention").to_pylist()
    last = max(att, key=lambda r: r["review_rank"])["case_id"]
    out = tmp_path / "review"
    res = curator("review", "export", str(pipeline), "-o", str(out), "--case", last, "--no-images")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [last]
    bad = tmp_path / "bad"
    res = curator("review", "export", str(pipeline), "-o", str(bad), "--case", "Pancreas_0001")
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and "'Pancreas_0001' is no case" in said and "did you mean 'Pancreas__0001'" in said, said
    assert not bad.exists()
