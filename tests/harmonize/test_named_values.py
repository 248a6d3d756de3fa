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
