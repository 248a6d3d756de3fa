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
