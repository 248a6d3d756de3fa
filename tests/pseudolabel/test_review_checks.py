"""What a reviewer saves, checked at import and export (tester 32): a correction saved over the
exported pseudo.nii.gz, a brush over the dataset's own labels, a revision saved with its axes
permuted or flipped, the image saved as the revision, and a file that does not read."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from curator.errors import ConfigError
from curator.pseudolabel.review import export_review
from curator.pseudolabel.review_import import import_review, unrevised_cases
from curator.store import CaseStore
from tests.pseudolabel.test_review_release import _accept, _exported, _revise


def _code(folder: Path, term: str) -> int:
    import json

    return next(int(c) for c, ts in json.loads((folder / "codes.json").read_text()).items() if ts == [term])


def test_a_correction_saved_over_pseudo_nii_gz_is_said_and_never_overwritten(phantom_ws, tmp_path: Path) -> None:
    """ITK-SNAP's Ctrl+S writes over the pseudo.nii.gz the README has the reviewer open: import
    said nothing (0 revised) and a re-export into the folder overwrote the correction."""
    out = tmp_path / "review"
    ws, (cid, other) = _exported(phantom_ws, out, top=2)
    img = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(img.dataobj).copy()
    liver = _code(out / cid, "liver")
    data[data == liver] = 0  # erased, saved over the file that was opened
    data[:4, :4, :4] = liver
    nib.save(nib.Nifti1Image(data, img.affine, img.header), out / cid / "pseudo.nii.gz")
    saved = (out / cid / "pseudo.nii.gz").read_bytes()

    done, problems = import_review(ws, out)
    assert done == [] and [(p["case_id"], p["kind"], p["severity"]) for p in problems] == \
        [(cid, "review_pseudo_edited", "error")]
    row = problems[0]
    assert row["path"] == f"review:{cid}/pseudo.nii.gz" and "liver (code" in row["message"]
    assert "rename pseudo.nii.gz to revised.nii.gz" in row["message"]
    assert "revised" not in CaseStore(ws.stores_dir / f"{cid}.zarr").layers()

    att = ws.read_table("attention").to_pylist()
    with pytest.raises(ConfigError, match=rf"{cid}/pseudo.nii.gz \(liver \(code {liver}\) changed\)") as e:
        export_review(ws.root, att, out, top=2, images=False)
    assert "rename that pseudo.nii.gz to revised.nii.gz" in str(e.value) and other not in e.value.detail
    assert (out / cid / "pseudo.nii.gz").read_bytes() == saved  # not overwritten

    (out / cid / "pseudo.nii.gz").rename(out / cid / "revised.nii.gz")  # as the row says
    done, problems = import_review(ws, out)
    # imported; a liver erased and painted in a corner moved both ways, which is said (not refused)
    assert done == [cid] and [p["kind"] for p in problems] == ["review_large_change"]
    assert np.array_equal(CaseStore(ws.stores_dir / f"{cid}.zarr").mask("liver", "revised"), data == liver)
    export_review(ws.root, att, out, top=2, images=False, include_reviewed=True)  # nothing to keep now


def test_a_revised_structure_keeps_no_voxel_of_the_datasets_own_label(phantom_ws, tmp_path: Path) -> None:
    """A liver brush over the spleen the dataset annotates was imported without a word: the revised
    liver counted the spleen's voxels (1298 ml for a 1043 ml liver) and assembled_mask('liver')
    held 97 % of the spleen. The voxels are left out, with a warning naming both and the count."""
    from curator.pseudolabel.release import assembled_mask
    from curator.pseudolabel.review_import import record_import_problems

    out = tmp_path / "review"
    ws, cases = _exported(phantom_ws, out, top=4)
    cid = next(c for c in cases if c.startswith("MSD_Spleen"))
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    spleen = store.mask("spleen", "original")
    assert spleen.sum() > 10
    img = nib.load(out / cid / "pseudo.nii.gz")
    data = np.asarray(img.dataobj).copy()
    liver = _code(out / cid, "liver")
    data[spleen] = liver  # the brush covers the spleen too
    nib.save(nib.Nifti1Image(data, img.affine), out / cid / "revised.nii.gz")

    done, problems = import_review(ws, out)
    assert done == [cid]
    assert [(p["case_id"], p["kind"], p["severity"]) for p in problems] == [(cid, "revised_overlaps_original",
                                                                               "warning")]
    msg, n = problems[0]["message"], int(spleen.sum())
    ml = n * store.geometry.voxel_volume_mm3 / 1000
    assert f"the revised liver covered {n:,} voxel(s) ({ml:.3g} ml) of the dataset's own spleen label" in msg
    assert problems[0]["path"] == f"review:{cid}/revised.nii.gz"
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    revised_liver = store.mask("liver", "revised")
    assert np.array_equal(revised_liver, (data == liver) & ~spleen) and not (assembled_mask(store, "liver")[0] & spleen).any()
    row = next(r for r in ws.read_table("_labels_revised").to_pylist() if r["term_id"] == "liver")
    assert row["voxels"] == int(revised_liver.sum())
    record_import_problems(ws, done, problems)
    assert [r["kind"] for r in ws.read_table("problems__review").to_pylist()] == ["revised_overlaps_original"]
    unchanged: dict[str, str] = {}  # the same folder again: the revision imported already, not a new one
    assert import_review(ws, out, unchanged) == ([], []) and "imported already" in unchanged[cid]


@pytest.mark.parametrize("how", ["flipped", "transposed"])
def test_a_revision_saved_with_its_axes_flipped_or_permuted_is_reoriented(phantom_ws, tmp_path: Path,
                                                                           how: str) -> None:
    """Ingest accepts a label stored in another axis order (same voxel centres); a revision saved so
    (SimpleITK's DICOMOrient, nibabel's as_closest_canonical) was refused as 'not on the case's grid'."""
    out = tmp_path / "review"
    ws, (cid,) = _exported(phantom_ws, out, top=1)
    _revise(out / cid)
    img = nib.load(out / cid / "revised.nii.gz")
    data, affine = np.asarray(img.dataobj), img.affine.copy()
    if how == "flipped":
        saved, a = data[::-1], affine.copy()
        a[:3, 0] = -affine[:3, 0]
        a[:3, 3] = affine[:3, 3] + affine[:3, 0] * (data.shape[0] - 1)
    else:
        saved, a = data.transpose(1, 0, 2), affine[:, [1, 0, 2, 3]]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(saved), a), out / cid / "revised.nii.gz")
    done, problems = import_review(ws, out)
    assert done == [cid] and problems == []
    store = CaseStore(ws.stores_dir / f"{cid}.zarr")
    liver = _code(out / cid, "liver")
    assert np.array_equal(store.mask("liver", "revised"), data == liver)
    # another grid is still refused, saying how to save it on the right one
    shifted = img.affine.copy()
    shifted[:3, 3] += 5
    nib.save(nib.Nifti1Image(data, shifted), out / cid / "revised.nii.gz")
    problems = import_review(ws, out)[1]
    assert "not on the case's grid" in problems[0]["message"] and "without cropping, resampling or reorienting" \
        in problems[0]["message"]


def test_the_image_saved_as_the_revision_is_said_in_a_few_values(phantom_ws, tmp_path: Path) -> None:
    """Every HU value of the image was listed: a 9,644-character problems row, in the release."""
    out = tmp_path / "review"
    ctx, _ = phantom_ws()
    from curator.pseudolabel.stage import PseudolabelStage
    from curator.runner.run import run_stage

    run_stage(ctx, PseudolabelStage)
    ws = ctx.workspace
    (cid,) = export_review(ws.root, ws.read_table("attention").to_pylist(), out, top=1).cases
    shutil.copy(out / cid / "image.nii.gz", out / cid / "revised.nii.gz")
    (row,) = import_review(ws, out)[1]
    assert row["kind"] == "revised_label_invalid" and len(row["message"]) < 600, row["message"]
    assert "are not in codes.json" in row["message"] and " more" in row["message"]
    assert "distinct values: it looks like an image" in row["message"]


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_revision_that_does_not_read_is_to_be_saved_again_not_downloaded(phantom_ws, tmp_path: Path,
                                                                           damage: str) -> None:
    out = tmp_path / "review"
    ws, (cid,) = _exported(phantom_ws, out, top=1)
    _revise(out / cid)
    path = out / cid / "revised.nii.gz"
    whole = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else whole[: len(whole) // 2])
    assert damage == "empty" or len(gzip.decompress(whole)) > 0
    (row,) = import_review(ws, out)[1]
    assert row["kind"] == f"{damage}_file"
    assert "save the corrected label again from the editor" in row["message"] and "download" not in \
        row["message"].split("What to do:")[1].replace("nothing to download", "")


def test_cases_imported_by_an_accept_are_not_counted_as_holding_no_revision(phantom_ws, tmp_path: Path) -> None:
    """After an accept was imported and a later export into the folder left its row out, every
    import said '1 exported case(s) hold no revision yet' of that case."""
    out = tmp_path / "review"
    ws, (first, second) = _exported(phantom_ws, out, top=2)
    _accept(out, {first: "all"})
    assert import_review(ws, out)[0] == [first]
    _accept(out, {first: ""})  # the row's accept gone, the case reviewed
    assert unrevised_cases(out) == sorted([first, second])
    assert unrevised_cases(out, ws.stores_dir) == [second]


def test_a_correction_saved_over_pseudo_nii_gz_beside_a_revision_file_is_said(phantom_ws, tmp_path: Path) -> None:
    """A reviewed case is exported with its revision as revised.nii.gz; the reviewer opened
    pseudo.nii.gz and saved over it: import said 'changes nothing' and the correction stayed behind."""
    out = tmp_path / "review"
    ws, (cid, other) = _exported(phantom_ws, out, top=2)
    _revise(out / cid)
    assert import_review(ws, out)[0] == [cid]
    again = tmp_path / "again"
    export_review(ws.root, ws.read_table("attention").to_pylist(), again, top=2, images=False, include_reviewed=True)
    img = nib.load(again / cid / "pseudo.nii.gz")
    data = np.asarray(img.dataobj).copy()
    data[:3, :3, :3] = _code(again / cid, "liver")
    nib.save(nib.Nifti1Image(data, img.affine), again / cid / "pseudo.nii.gz")
    done, problems = import_review(ws, again)  # its revised.nii.gz is the export's: the edit is elsewhere
    assert done == [] and [(p["case_id"], p["kind"], p["severity"]) for p in problems] == \
        [(cid, "review_pseudo_edited", "warning")]  # a warning: the earlier import is kept
    assert "revised.nii.gz changes nothing" in problems[0]["message"] and problems[0]["path"].endswith("pseudo.nii.gz")
    # a revision of the other case saved too, and its pseudo.nii.gz: imported, with a warning
    _revise(again / other)
    nib.save(nib.Nifti1Image(np.zeros_like(data), img.affine), again / other / "pseudo.nii.gz")
    done, problems = import_review(ws, again)
    assert done == [other]
    said = {(p["case_id"], p["severity"]): p["message"] for p in problems if p["kind"] == "review_pseudo_edited"}
    assert "revised.nii.gz was imported, pseudo.nii.gz was not" in said[(other, "warning")]
