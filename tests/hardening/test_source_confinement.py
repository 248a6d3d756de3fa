"""A dataset from elsewhere cannot bring in files from outside its source root, nor hang or exhaust
a run, through any file curator reads from the root: not only the image and label files its
patterns match, but the metadata, official split and index files, every file of a DICOM series
folder or a PNG slice folder, an RTSTRUCT/SEG holding per-structure labels, an MHD's data file
and what `sources check` sniffs. A link out of the root is refused unread (``path_escape``); a
FIFO is never opened (``not_a_regular_file``), so these tests fail by timeout, not by hanging,
when it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from curator.errors import CuratorError
from curator.testing.layouts import save_nifti, write_dicom_series, write_msd_task, write_rtstruct
from curator.testing.native import GEOMETRY, image_array, label_array, save_slices, write_tree
from curator.testing.pipelines import make_pipeline, run, table, write_dataset_yaml

SECRET = "SECRET-FROM-OUTSIDE-ROOT"
pytestmark = pytest.mark.timeout(60)  # a FIFO that is opened blocks: the test fails instead of hanging


def _plant(path: Path, how: str, outside: Path) -> None:
    """Make ``path`` a link to ``outside`` (a file out of the root) or a FIFO."""
    path.unlink(missing_ok=True)
    if how == "link":
        os.symlink(outside, path)
    else:
        os.mkfifo(path)


def _ingest(tmp: Path, yml: Path, root: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    pipe = make_pipeline(tmp / "ws", [{"dataset": str(yml), "root": str(root)}])
    run(pipe, stages=["ingest"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    return cases, table(pipe, "problems__ingest").to_pylist()


def _nifti_source(tmp: Path) -> Path:
    root = tmp / "raw"
    write_tree(root, [(f"{c}/{f}", k, () if k == "image" else (1,)) for c in ("a", "b")
                      for f, k in (("ct.nii.gz", "image"), ("seg.nii.gz", "label"))])
    return root


KIND = {"link": "path_escape", "fifo": "not_a_regular_file"}


@pytest.mark.parametrize("how", ["link", "fifo"])
def test_a_metadata_file_out_of_the_root_or_a_fifo_is_not_read(tmp_path: Path, how: str) -> None:
    """`clinical.csv -> /elsewhere/secret.csv` was read and its `keep:` fields published in
    cases.metadata_json (the path_escape row of the tree scan said so, and the file was read
    anyway); a FIFO hung `run` while it planned."""
    root = _nifti_source(tmp_path)
    outside = tmp_path / "outside" / "secret.csv"
    outside.parent.mkdir()
    outside.write_text(f"case_id,remark\na,{SECRET}\nb,{SECRET}\n")
    _plant(root / "clinical.csv", how, outside)
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz"}], {"values": {1: "liver"}},
                metadata={"file": "clinical.csv", "key": "case_id", "keep": ["remark"]})
    cases, problems = _ingest(tmp_path, yml, root)
    assert sorted(cases) == ["Toy__a", "Toy__b"]  # the cases go on, without the file's fields
    assert SECRET not in repr(cases) and all(c["metadata_json"] is None for c in cases.values())
    (row,) = [p for p in problems if p["path"] == "Toy:clinical.csv"]
    assert (row["kind"], row["severity"]) == (KIND[how], "error"), row
    assert "What to do:" in row["message"]


@pytest.mark.parametrize("how", ["link", "fifo"])
def test_an_official_split_file_out_of_the_root_or_a_fifo_is_not_read(tmp_path: Path, how: str) -> None:
    root = _nifti_source(tmp_path)
    outside = tmp_path / "outside" / "splits.json"
    outside.parent.mkdir()
    outside.write_text('{"test": ["a", "b"]}')
    _plant(root / "splits.json", how, outside)
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz", "split": "train"}],
                {"values": {1: "liver"}}, official_split={"summary": "a file", "file": "splits.json"})
    cases, problems = _ingest(tmp_path, yml, root)
    assert {c["official_split"] for c in cases.values()} == {"train"}  # the layout's split, not the outside file's
    assert [(p["kind"], p["severity"]) for p in problems if p["path"] == "Toy:splits.json"] == [(KIND[how], "error")]


@pytest.mark.parametrize("how", ["link", "fifo"])
def test_a_layout_index_out_of_the_root_or_a_fifo_is_not_read(tmp_path: Path, how: str) -> None:
    """An MSD dataset.json linked to another task's index would have ingested that task's cases
    (their paths confined to the root, but chosen by a file from elsewhere)."""
    root = tmp_path / "raw"
    g = GEOMETRY
    write_msd_task(root, "Task", [("t_1", image_array(0), label_array((1,)), g)], [], {"0": "bg", "1": "liver"},
                   {"0": "CT"})
    outside = tmp_path / "outside" / "dataset.json"
    outside.parent.mkdir()
    outside.write_bytes((root / "dataset.json").read_bytes())
    _plant(root / "dataset.json", how, outside)
    yml = write_dataset_yaml(tmp_path, [{"index": "dataset.json"}], {"values": {1: "liver"}})
    cases, problems = _ingest(tmp_path, yml, root)
    assert cases == {}
    assert (KIND[how], "error") in [(p["kind"], p["severity"]) for p in problems if p["path"] == "Toy:dataset.json"]


def test_a_metadata_file_larger_than_the_limit_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 ) -> None:
    """A link to /dev/zero (or a file of gigabytes) grew until the memory ran out."""
    from curator.ingest.metadata import load_metadata
    from curator.io import confined

    monkeypatch.setattr(confined, "MAX_TEXT_BYTES", 64)
    root = tmp_path / "raw"
    root.mkdir()
    (root / "meta.csv").write_text("case_id,age\n" + "".join(f"c{i},{i}\n" for i in range(20)))
    with pytest.raises(CuratorError) as e:
        load_metadata({"file": "meta.csv", "key": "case_id"}, root)
    assert e.value.kind == "file_too_large" and "64 bytes" in str(e.value)
    monkeypatch.setattr(confined, "MAX_TEXT_BYTES", 1 << 20)
    assert len(load_metadata({"file": "meta.csv", "key": "case_id"}, root)) == 20


_READ_SPLIT = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # were it read, the test fails, not the machine
from curator.errors import CuratorError
from curator.registry.splits import read_split_file
try:
    read_split_file({"file": "splits.csv"}, Path(sys.argv[1]))
except CuratorError as e:
    print(e.kind)
"""


def test_a_link_to_dev_zero_as_the_split_file_is_refused_at_once(tmp_path: Path) -> None:
    """Read in a process of its own with 1 GiB of address space: /dev/zero never ends."""
    import subprocess
    import sys

    os.symlink("/dev/zero", tmp_path / "splits.csv")
    done = subprocess.run([sys.executable, "-c", _READ_SPLIT, str(tmp_path)], capture_output=True, text=True,
                          check=False, timeout=50, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.stdout.strip() == "path_escape", done.stderr[-2000:]


def _dicom_source(tmp: Path) -> tuple[Path, Path]:
    """Two DICOM series cases with NIfTI labels; returns the root and case b's series folder."""
    root = tmp / "raw"
    for c in ("a", "b"):
        write_dicom_series(root / c / "series", image_array(1).astype("float64"), GEOMETRY)
        save_nifti(root / c / "seg.nii.gz", label_array((1,)), GEOMETRY)
    return root, root / "b" / "series"


@pytest.mark.parametrize("how", ["link", "fifo"])
def test_a_dicom_slice_out_of_the_root_or_a_fifo_fails_its_case(tmp_path: Path, how: str) -> None:
    """Slice IM0010.dcm linked to a file out of the root was read into the case (its pixels
    reached the store); only the tree scan's error row, without a case, said so."""
    root, series = _dicom_source(tmp_path)
    files = sorted(series.iterdir())
    outside = tmp_path / "outside" / "IM.dcm"
    outside.parent.mkdir()
    outside.write_bytes(files[2].read_bytes())
    _plant(files[2], how, outside)
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}/series/", "label": "{case}/seg.nii.gz"}], {"values": {1: "liver"}})
    cases, problems = _ingest(tmp_path, yml, root)
    assert sorted(cases) == ["Toy__a"]
    (row,) = [p for p in problems if p["case_id"] == "Toy__b" or "b/series" in (p["path"] or "")]
    assert (row["case_id"], row["kind"], row["severity"], row["path"]) == ("Toy__b", KIND[how], "error", "Toy:b/series")
    assert f"file 3 of {len(files)} (sorted by file name)" in row["message"]  # a slice's name can be a UID
    assert files[2].name not in row["message"]


def test_a_dicom_slice_linked_within_its_folder_is_read(tmp_path: Path) -> None:
    from curator.io.formats import read_volume

    _, series = _dicom_source(tmp_path)
    first = min(series.iterdir())
    first.rename(series / ".real.dcm")  # hidden: not listed itself
    os.symlink(".real.dcm", first)
    assert read_volume(series, role="image").array.shape[2] == GEOMETRY.shape[2]


@pytest.mark.parametrize("how", ["link", "fifo"])
def test_a_png_slice_out_of_the_folder_or_a_fifo_is_not_read(tmp_path: Path, how: str) -> None:
    """A linked 0002.png from elsewhere was stacked into the label (its value 7 in the volume)."""
    from curator.io.formats import read_volume

    folder = tmp_path / "raw" / "gt"
    save_slices(folder, label_array((1,)))
    outside = tmp_path / "outside"
    save_slices(outside, label_array((7,)))
    victim = sorted(folder.iterdir())[1]
    _plant(victim, how, outside / victim.name)
    with pytest.raises(CuratorError) as e:
        read_volume(folder, role="label")
    assert e.value.kind == KIND[how] and e.value.path == str(victim)


@pytest.mark.parametrize("how", ["link", "fifo"])
def test_an_rtstruct_out_of_the_root_or_a_fifo_gives_no_structure_names(tmp_path: Path, how: str) -> None:
    """Per-structure labels held in one RTSTRUCT: discovery read the ROI names of a file linked
    from elsewhere into the case's label keys before ingest refused the link."""
    root = tmp_path / "raw"
    write_tree(root, [(f"{c}/ct.nii.gz", "image", ()) for c in ("a", "b")])
    for c in ("a", "b"):
        write_rtstruct(root / c / "rt", GEOMETRY, {"liver": [(2, [(1, 1), (5, 1), (5, 5), (1, 5)])]})
    outside = write_rtstruct(tmp_path / "outside", GEOMETRY, {"PATIENT_SECRET_ROI": [(2, [(1, 1), (5, 1), (5, 5)])]})
    _plant(root / "b" / "rt" / "1-1.dcm", how, outside)
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/rt/1-1.dcm"}],
                {"encoding": "per_structure", "structures": {"liver": "liver"}})
    cases, problems = _ingest(tmp_path, yml, root)
    assert "PATIENT_SECRET_ROI" not in repr(cases) + repr(problems)
    assert cases["Toy__a"]["label_keys"] == ["liver"]
    assert KIND[how] in {p["kind"] for p in problems if p["case_id"] == "Toy__b"}, problems


def test_an_mhd_data_file_that_is_a_fifo_is_named_not_read(tmp_path: Path) -> None:
    from curator.io.formats import read_volume
    from curator.testing.native import save_itk

    save_itk(tmp_path / "ct.mhd", image_array(0), GEOMETRY)
    (raw,) = [p for p in tmp_path.iterdir() if p.suffix.lower() in (".raw", ".zraw")]
    _plant(raw, "fifo", raw)
    with pytest.raises(CuratorError) as e:
        read_volume(tmp_path / "ct.mhd", role="image")
    assert e.value.kind == "not_a_regular_file"


def test_sources_check_neither_hangs_on_a_fifo_nor_reads_a_link_out(tmp_path: Path) -> None:
    """`curator sources check` hung on a FIFO metadata file, and sniffed unused files by opening them."""
    from curator.ingest.check import check_source

    root = _nifti_source(tmp_path)
    os.mkfifo(root / "clinical.csv")
    (root / "extra").mkdir()
    os.mkfifo(root / "extra" / "IM0001")  # a suffix-less file no pattern takes: sniffed for DICOM
    yml = write_dataset_yaml(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz"}], {"values": {1: "liver"}},
                metadata={"file": "clinical.csv", "key": "case_id"})
    r = check_source(str(yml), root, sample=None)
    assert r.cases == 2
    assert ("not_a_regular_file", "error") in [(p["kind"], p["severity"]) for p in r.problems]
    assert r.other_files.get("(none)") == 1  # counted, not sniffed


def test_the_change_check_of_a_case_never_hashes_a_file_out_of_the_root(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning fingerprints every file of a series folder to see what changed: a slice linked out
    of the root was read (hashed) there too."""
    from curator.io import fsutil
    from curator.workspace import ChecksumCache, Workspace

    root, series = _dicom_source(tmp_path)
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"x" * 1000)
    inside = series / "IM9999.dcm"
    os.symlink(outside, inside)
    hashed: list[Path] = []
    real = fsutil.sha256_file
    monkeypatch.setattr(fsutil, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    cache = ChecksumCache(Workspace(tmp_path / "ws").init(), "Toy")
    cache.paths(root, ["b/series"])
    assert inside not in hashed and outside not in hashed and len(hashed) == len(list(series.iterdir())) - 1


def test_a_text_file_swapped_after_its_check_is_refused_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file opened must be the file checked: a folder on the way (or the file) replaced by a
    link out of the root between the check and the open was read (a race with a writer)."""
    from curator.io import confined

    root = tmp_path / "root"
    root.mkdir()
    (root / "meta.csv").write_text("case,age\na,1\n", encoding="utf-8")
    outside = tmp_path / "secret.csv"
    outside.write_text("case,age\nx,99\n", encoding="utf-8")
    real_check = confined._regular_stat

    def swapped_after_check(r: Path, p: Path, **kw: Any) -> Any:  # checked, then another file took its place
        got, _ = real_check(r, p, **kw)
        return got, os.stat(outside)

    monkeypatch.setattr(confined, "_regular_stat", swapped_after_check)
    with pytest.raises(CuratorError, match="changed while it was being read"):
        confined.read_text_inside(root, "meta.csv", "metadata file", "fix it")

    def link_in_its_place(r: Path, p: Path, **kw: Any) -> Any:  # the checked path is now a link
        got, st = real_check(r, p, **kw)
        got.unlink()
        got.symlink_to(outside)
        return got, st

    monkeypatch.setattr(confined, "_regular_stat", link_in_its_place)
    with pytest.raises(CuratorError, match="changed while it was being read"):
        confined.read_text_inside(root, "meta.csv", "metadata file", "fix it")
    monkeypatch.setattr(confined, "_regular_stat", real_check)
    (root / "meta.csv").unlink()
    (root / "meta.csv").write_text("case,age\na,1\n", encoding="utf-8")
    assert confined.read_text_inside(root, "meta.csv", "metadata file", "fix it")[1] == "case,age\na,1\n"
