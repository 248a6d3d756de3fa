"""A dataset YAML's problems say the line they are on, a misspelt key's likely meaning, and name
the file (not the dataset) as pipeline.yaml's problems do."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.errors import RegistryError
from curator.registry import validate_files
from curator.registry.check import check_label_system
from curator.registry.spec import load_dataset_file

HEAD = """name: Mine
version: "1"
modality: CT
region: abdomen
licence: CC-BY-4.0
citation_key: mine
citation: "@misc{mine, title={mine}}"
layout:
  - image: "img/{case}.nii.gz"
    LAYOUT
labels:
  LABELS
  values: {1: liver, 2: VALUE}
"""


def _file(tmp_path: Path, layout: str = 'label: "lab/{case}.nii.gz"', labels: str = "encoding: label_map",
          value: str = "spleen") -> Path:
    f = tmp_path / "Mine.yaml"
    f.write_text(HEAD.replace("LAYOUT", layout).replace("LABELS", labels).replace("VALUE", value))
    return f


def _issues(f: Path) -> list[tuple[str, str, str]]:
    return [(i.loc, i.kind, i.message) for i in validate_files([f])[1]]


def test_a_misspelt_key_says_its_line_and_the_key_meant(tmp_path: Path) -> None:
    """`encodng:` and `lable:` were "unknown key" without a line or the key meant; pipeline.yaml's
    unknown settings say their line."""
    assert _issues(_file(tmp_path, labels="encodng: label_map")) == [
        ("Mine.yaml:labels.encodng", "unknown_key", ("unknown key 'encodng' in labels (did you mean 'encoding'?) "
         "(line 12)"))]
    assert _issues(_file(tmp_path, layout='lable: "lab/{case}.nii.gz"')) == [
        ("Mine.yaml:layout[0].lable", "unknown_key", ("unknown key 'lable' in a layout entry (did you mean 'label'?) "
         "(line 10)"))]
    # nothing close: the keys labels takes (it listed none)
    ((_, _, said),) = _issues(_file(tmp_path, labels="colour: red"))
    assert said.startswith("unknown key 'colour' in labels (known: ['annotated_by_any_file', 'any_nonzero', ") \
        and said.endswith("(line 12)"), said
    with pytest.raises(RegistryError, match=r"split must be one of .* \(line 10\)"):
        load_dataset_file(_file(tmp_path, layout="split: training"))


def test_a_name_no_term_resolves_is_placed_by_file_and_line(tmp_path: Path) -> None:
    """term_unknown was `Mine:labels.values.2` (the dataset's name) beside `Mine.yaml:...` for
    every other problem of the file, and without a line."""
    said = [(p.where, p.message) for p in check_label_system([_file(tmp_path, value="spleeen of the moon")])
            if p.kind == "term_unknown"]
    assert len(said) == 1 and said[0][0] == "Mine.yaml:labels.values.2" and said[0][1].endswith("(line 13)"), said


def _said(f: Path) -> list[tuple[str, str]]:
    return [(p.where, p.kind) for p in check_label_system([f]) if not p.builtin]


def test_one_mistake_is_one_problem(tmp_path: Path) -> None:
    """`1.0:` was also "a label_map needs values" (it had one); `region: brian` also warned its
    brain terms far from region 'brian'; a band in a dataset of another region warned once per value."""
    f = tmp_path / "Float.yaml"
    f.write_text(HEAD.replace("    LAYOUT\n", "").replace("  LABELS\n", "").replace("{1: liver, 2: VALUE}",
                                                                                    "{1.0: liver}"))
    assert _said(f) == [("Float.yaml:labels.values.1.0", "value")]
    f.write_text(HEAD.replace("    LAYOUT\n", "").replace("  LABELS\n", "").replace("VALUE", "spleen")
                 .replace("region: abdomen", "region: abdomn"))
    assert _said(f) == [("Float.yaml:region", "value")]
    f.write_text(HEAD.replace("    LAYOUT\n", "").replace("  LABELS\n", "").replace("VALUE", "spleen, '55-70': liver")
                 .replace("region: abdomen", "region: brain"))
    far = [p for p in check_label_system([f]) if p.kind == "region_far"]
    assert [(p.where, p.message.split(" resolves")[0]) for p in far] == [
        ("Float.yaml:labels.values.1", "'liver' (raw values 1, 55, 56, 57 and 13 more)"),
        ("Float.yaml:labels.values.2", "'spleen'")]


def test_a_name_with_a_double_underscore_is_refused() -> None:
    """A case id is <source>__<case>: gc and status read the source back from it, so a source
    `KiTS__v2` beside `KiTS` made KiTS's files look like another source's (review 27)."""
    import pytest

    from curator.config import SourceConfig
    from curator.errors import ConfigError
    from curator.registry.spec import parse_spec

    _, issues = parse_spec({"name": "KiTS__v2"}, "k.yaml")
    assert any(i.loc == "k.yaml:name" and "without '__'" in i.message for i in issues), issues
    with pytest.raises(ConfigError, match="without '__'"):
        SourceConfig.from_dict({"dataset": "KiTS23", "root": "/x", "name": "KiTS__v2"})
