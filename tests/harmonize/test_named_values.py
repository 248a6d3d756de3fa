"""Names a label file gives its values, judged against the dataset YAML's mapping."""

from __future__ import annotations

from pathlib import Path

from curator.harmonize.stage import named_segments_disagree
from curator.taxonomy import load_taxonomy


def test_a_segment_named_as_another_structure_is_said() -> None:
    """A tester's SEG named segment 1 "Liver" (its SNOMED code too) and the YAML mapped 1 to
    spleen: sources check and harmonize said nothing — only a swapped pair (a name the YAML gives
    another number) was judged."""
    tax = load_taxonomy()
    said = named_segments_disagree(Path("seg.dcm"), {1: "Liver"}, {1: ["spleen"]}, tax)
    assert [(e.kind, e.detail) for e in said] == [(
        "dicom_seg_labels_disagree",
        "the SEG names segment 1 'Liver' (liver), but the dataset YAML maps 1 to spleen, another structure")]
    assert "labels.values" in said[0].remedy
    # a swapped pair keeps its numbering advice
    (swap,) = named_segments_disagree(Path("seg.dcm"), {1: "Spleen"}, {1: ["liver"], 2: ["spleen"]}, tax)
    assert "maps to segment number 2" in swap.detail and "numbering" in swap.remedy
    # not judged: names above or below the mapped term, names no term resolves, unmapped numbers
    assert not named_segments_disagree(Path("s.dcm"), {1: "Kidney", 2: "Tumour", 3: "Segment_1", 4: "Spleen"},
                                       {1: ["kidney_left"], 2: ["liver_tumor"], 3: ["liver"]}, tax)


def test_a_structure_file_named_for_another_structure_is_said(tmp_path: Path) -> None:
    """`kidney_left: right kidney` passed `labels check --strict` and `sources check`: only QC's
    side check, after a whole run, caught it."""
    import yaml

    from curator.harmonize.mapping import structure_names_disagree
    from curator.registry.check import check_label_system
    from curator.registry.spec import load_dataset_file

    d = {"name": "Sides", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation_key": "x", "citation": "@misc{x, title={x}}",
         "layout": [{"image": "{case}/ct.nii.gz", "label": "{case}/segmentations/{structure}.nii.gz"}],
         "labels": {"encoding": "per_structure",
                    "structures": {"kidney_left": "right kidney", "kidney_right": "left kidney", "seg_07": "liver",
                                   "kidney": "kidney_left", "spleen": "spleen"}}}
    f = tmp_path / "Sides.yaml"
    f.write_text(yaml.safe_dump(d))
    said = structure_names_disagree(load_dataset_file(f), load_taxonomy())
    assert [(i.loc, i.kind) for i in said] == [("Sides.yaml:labels.structures.kidney_left", "structure_name_disagrees"),
                                              ("Sides.yaml:labels.structures.kidney_right", "structure_name_disagrees")]
    assert "named as left kidney, but the dataset YAML maps it to kidney_right" in said[0].message
    mine = [p for p in check_label_system([f]) if p.kind == "structure_name_disagrees" and not p.builtin]
    assert [p.severity for p in mine] == ["warning", "warning"]
