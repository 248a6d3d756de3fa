"""Every ```yaml block of docs/registry.md is a part of a dataset YAML (its top-level keys are a
dataset's: ``layout``, ``labels``, ``fixes``, ``official_split``) that a user pastes into theirs:
pasted into a minimal dataset YAML, each must pass the validator ``curator labels check
--registry`` runs, with no error and no warning. The ``labels:`` reference block put
``structures:`` under ``encoding: label_map`` and failed as pasted (tester 33 #2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from curator.registry.check import check_label_system
from curator.registry.spec import KNOWN_KEYS

DOC = Path(__file__).resolve().parents[2] / "docs" / "registry.md"

BASE: dict[str, Any] = {
    "name": "DocExample", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
    "citation_key": "doc2026", "citation": "@misc{doc2026, title={doc}, year={2026}}",
    "layout": [{"image": "imagesTr/{case}.nii.gz", "label": "labelsTr/{case}.nii.gz"}],
    "labels": {"encoding": "label_map", "values": {1: "kidney"}},
}
# a block's labels read one mask per structure: the minimal YAML's label pattern names the structure
STRUCTURE_LAYOUT = [{"image": "{case}/ct.nii.gz", "label": "{case}/segmentations/{structure}.nii.gz"}]


def yaml_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every ```yaml fenced block."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def pasted(block: dict[str, Any]) -> dict[str, Any]:
    """The minimal dataset YAML with ``block``'s keys in place of its own."""
    out = {**BASE, **block}
    labels = block.get("labels")
    if isinstance(labels, dict) and labels.get("encoding") == "per_structure" and "layout" not in block:
        out["layout"] = STRUCTURE_LAYOUT
    return out


BLOCKS = yaml_blocks(DOC.read_text(encoding="utf-8"))


def test_the_blocks_are_found_and_the_labels_reference_shows_both_encodings() -> None:
    encodings = [b["labels"].get("encoding", "label_map") for _, text in BLOCKS
                 if isinstance(b := yaml.safe_load(text), dict) and isinstance(b.get("labels"), dict)]
    assert len(BLOCKS) >= 5 and {"label_map", "per_structure"} <= set(encodings), (len(BLOCKS), encodings)


@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_a_yaml_block_of_the_docs_passes_labels_check_as_pasted(tmp_path: Path, line: int, text: str) -> None:
    block = yaml.safe_load(text)
    assert isinstance(block, dict) and set(block) <= KNOWN_KEYS, \
        f"docs/registry.md line {line}: a yaml block whose keys are no dataset's: {block!r:.200}"
    path = tmp_path / "doc_example.yaml"
    path.write_text(yaml.safe_dump(pasted(block), sort_keys=False), encoding="utf-8")
    said = [(p.where, p.severity, p.message) for p in check_label_system((path,))
            if not p.builtin and p.severity in ("error", "warning")]
    assert said == [], f"docs/registry.md line {line}: {said}"


def test_the_old_labels_block_is_refused(tmp_path: Path) -> None:
    """The check above catches the block as it was (``structures:`` under a label map), and a
    structure map under ``encoding: none``, which did nothing and was accepted."""
    for encoding in ("label_map", "none"):
        old = {"labels": {"encoding": encoding, "values": {1: "kidney"}, "ignore": [255],
                          "structures": {"kidney_left": "left kidney"}, "other_structures": "problem"}}
        f = tmp_path / "old.yaml"
        f.write_text(yaml.safe_dump(pasted(old), sort_keys=False), encoding="utf-8")
        said = [p for p in check_label_system((f,)) if not p.builtin and p.severity == "error"]
        assert [p.where for p in said] == ["old.yaml:labels.structures"], (encoding, said)
