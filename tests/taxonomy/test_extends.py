"""A taxonomy of one's own that extends another (``extends: curator`` or a file): new terms and
names over the base, every mistake reported, the base's checksum in the release's lineage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from curator.errors import RegistryError
from curator.release.lineage import taxonomy_info
from curator.taxonomy import default_path, load_taxonomy, read_taxonomy
from curator.taxonomy.load import taxonomy_files
from curator.taxonomy.release import taxonomy_from_rows, term_row

STENT = {"id": "stent", "name": "stent", "category": "device", "region": "abdomen", "synonyms": ["endoprosthesis"],
         "part_of": ["aorta"]}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_an_extension_adds_terms_names_and_categories_to_the_bundled_taxonomy(tmp_path: Path) -> None:
    bundled = load_taxonomy()
    assert bundled.resolve("leber") is None and "device" not in bundled.categories
    path = _write(tmp_path / "lab.yaml", {"extends": "curator", "version": "lab-1", "categories": ["device"],
                                          "terms": [STENT], "synonyms": {"liver": ["leber", "liver"]}})
    tax, issues = read_taxonomy(path)
    assert issues == [] and tax is not None
    assert len(tax) == len(bundled) + 1 and tax.version == f"{bundled.version}+lab-1"
    assert tax.resolve("endoprosthesis").id == "stent" and tax.resolve("Leber").id == "liver"
    assert tax.term("liver").synonyms == (*bundled.term("liver").synonyms, "leber")  # "liver" is its name already
    assert "stent" in tax.children("aorta", "part_of") and tax.categories[-1] == "device"
    assert tax.regions == bundled.regions
    assert (tax.term("stent").defined_in, tax.term("liver").defined_in, tax.term("liver").named_in) == \
        ("lab.yaml", "curator", ("lab.yaml",))  # the terms table says which names are the lab's own
    assert bundled.term("liver").named_in == () and tax.term("spleen").named_in == ()
    back = taxonomy_from_rows([term_row(tax, t) for t in tax.terms])
    assert (back.term("stent").defined_in, back.term("liver").named_in) == ("lab.yaml", ("lab.yaml",))
    assert load_taxonomy(path).resolve("leber").id == "liver"  # the strict, cached entry point too


def test_a_chain_of_files_is_read_relative_to_each_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    mid = _write(tmp_path / "mid.yaml", {"extends": "curator", "categories": ["device"], "terms": [STENT]})
    top = _write(tmp_path / "site" / "top.yaml", {"extends": "../mid.yaml", "version": "2",
                                                  "synonyms": {"stent": ["graft"]}})
    tax, issues = read_taxonomy(top)
    assert issues == [] and tax.resolve("graft").id == "stent"
    assert tax.version == f"{load_taxonomy().version}+local+2"
    assert (tax.term("stent").defined_in, tax.term("stent").named_in) == ("mid.yaml", ("top.yaml",))
    assert [p.resolve() for p in taxonomy_files(top)] == [top.resolve(), mid.resolve(), default_path().resolve()]
    assert taxonomy_files() == [default_path()]
    info = taxonomy_info(top)
    assert info["file"] == "top.yaml" and info["version"] == "2"
    assert info["extends"]["file"] == "mid.yaml" and "version" not in info["extends"]
    assert info["extends"]["extends"]["file"] == "label_system/taxonomy.yaml"
    assert info["extends"]["extends"]["sha256"] == hashlib.sha256(default_path().read_bytes()).hexdigest()


@pytest.mark.parametrize(("doc", "loc", "kind", "words"), [
    ({"extends": "curator", "terms": [dict(STENT, id="liver")]}, "terms[0](liver)", "duplicate", "already a term"),
    ({"extends": "curator", "synonyms": {"livr": ["x"]}}, "synonyms.livr", "unknown_term", "close: liver"),
    ({"extends": "curator", "synonyms": {"liver": {"a": 1}}}, "synonyms.liver", "type", "list of names"),
    ({"extends": "curator", "synonyms": ["liver"]}, "synonyms", "type", "maps a term id"),
    ({"extends": "curator", "sinonyms": {"liver": ["x"]}}, "sinonyms", "unknown_key", "top-level"),
    ({"extends": "curator", "terms": [dict(STENT, part_of=["aorta_of_the_moon"])]}, "stent", "unknown_term",
     "not a term id"),
    ({"extends": "curator", "terms": [dict(STENT, synonyms=["liver"])]}, "", "ambiguous_name", "several terms"),
    ({"extends": 3}, "extends", "type", "'curator'"),
    ({"extends": "curator", "categories": ["device"], "terms": [dict(STENT, id="renal_stent_l", name="left renal stent",
                                                                     laterality="right", synonyms=[])]},
     "renal_stent_l", "laterality", "says left"),
    # a side said by a single letter, as the resolver reads it: "Kidney_R" on the left kidney took the
    # exact key "kidney r" and resolved right-kidney labels to kidney_left, with no error
    ({"extends": "curator", "synonyms": {"kidney_left": ["Kidney_R"]}}, "kidney_left", "laterality",
     "'Kidney_R' says right"),
    ({"extends": "curator", "synonyms": {"parotid_gland_right": ["Parotid L"]}}, "parotid_gland_right", "laterality",
     "'Parotid L' says left"),
    ({"extends": "nowhere.yaml", "terms": []}, "", "missing", "does not exist"),
])
def test_every_mistake_of_an_extension_is_reported(tmp_path: Path, doc: dict, loc: str, kind: str, words: str) -> None:
    _, issues = read_taxonomy(_write(tmp_path / "lab.yaml", doc))
    hit = [i for i in issues if i.kind == kind and words in i.message]
    assert hit, issues
    if loc:
        assert hit[0].loc == f"lab.yaml:{loc}"
    with pytest.raises(RegistryError, match="problem"):
        load_taxonomy(tmp_path / "lab.yaml")


def test_synonyms_are_refused_in_a_file_that_extends_nothing(tmp_path: Path) -> None:
    doc = yaml.safe_load(default_path().read_text(encoding="utf-8"))
    doc["synonyms"] = {"liver": ["leber"]}
    _, issues = read_taxonomy(_write(tmp_path / "full.yaml", doc))
    assert [(i.loc, i.kind) for i in issues] == [("full.yaml:synonyms", "value")]


def test_files_extending_each_other_in_a_loop_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    tax, issues = read_taxonomy(a)
    assert tax is None and {(i.loc, i.kind) for i in issues} == {("a.yaml:extends", "extends"),
                                                                  ("b.yaml:extends", "cycle")}
    assert [p.name for p in taxonomy_files(a)] == ["a.yaml", "b.yaml"]  # stops at the loop


def test_the_load_error_names_the_check_command_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "lab.yaml", {"extends": "curator", "synonyms": {"livr": ["x"]}})
    with pytest.raises(RegistryError) as e:
        load_taxonomy(path)
    assert f"curator labels check --taxonomy {path.resolve()}" in (e.value.remedy or "")


def test_the_example_in_the_docs_is_a_valid_extension(tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "taxonomy.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(# lab_taxonomy\.yaml.*?)```", text, re.DOTALL)
    assert example, "docs/taxonomy.md lost its extension example"
    (tmp_path / "lab_taxonomy.yaml").write_text(example.group(1), encoding="utf-8")
    tax, issues = read_taxonomy(tmp_path / "lab_taxonomy.yaml")
    assert issues == [] and tax.resolve("EVAR graft").id == "aortic_stent_graft" and tax.resolve("foie").id == "liver"


def test_a_misspelt_extends_is_named_and_does_not_flood_the_check(tmp_path: Path) -> None:
    """`extend: curator` said only "must be a mapping with a `terms:` list", or, with one new term,
    read as a one-term taxonomy: 964 term_unknown errors against the built-in datasets."""
    from curator.registry.check import check_label_system

    _, issues = read_taxonomy(_write(tmp_path / "a.yaml", {"extend": "curator", "synonyms": {"liver": ["leber"]}}))
    assert (issues[0].loc, issues[0].kind) == ("a.yaml:extend", "unknown_key")
    assert "did you mean 'extends'?" in issues[0].message and "extends: curator" in issues[-1].message
    one = _write(tmp_path / "b.yaml", {"extend": "curator", "categories": ["device"], "terms": [STENT]})
    problems = [p for p in check_label_system((), one) if not p.builtin]
    assert [(p.where, p.kind) for p in problems] == [("b.yaml:extend", "unknown_key"), ("b.yaml:stent", "unknown_term"),
                                                     ("b.yaml", "datasets_not_checked")], problems


GLUTEAL = {"id": "gluteal_muscles_left", "name": "left gluteal muscles", "category": "muscle", "region": "pelvis",
           "laterality": "left", "partitions": [["gluteus_maximus_left", "gluteus_medius_left", "gluteus_minimus_left"]]}


def test_an_extension_groups_terms_of_the_base_with_a_partition(tmp_path: Path) -> None:
    """A lab's union of existing structures (left gluteal muscles = maximus ∪ medius ∪ minimus) was
    refused: each member had to list the new term in its `part_of`, which an extension cannot
    edit. The partition now says it: the base's members become part_of the new term."""
    from curator.harmonize.mapping import raw_value_terms
    from curator.registry import load_registry

    bundled = load_taxonomy()
    tax, issues = read_taxonomy(_write(tmp_path / "lab.yaml", {"extends": "curator", "terms": [GLUTEAL]}))
    assert issues == [] and tax is not None
    members = GLUTEAL["partitions"][0]
    for m in members:
        assert tax.term(m).part_of == (*bundled.term(m).part_of, "gluteal_muscles_left")
        assert "gluteal_muscles_left" not in bundled.term(m).part_of  # the bundled taxonomy is untouched
    assert sorted(tax.children("gluteal_muscles_left", "part_of")) == sorted(members)
    assert tax.derived(members) == {"gluteal_muscles_left": tuple(sorted(members))}
    assert tax.derived(members[:2]) == {}  # half a partition derives nothing
    # a dataset labelling the three muscles derives the group (TotalSegmentator's masks)
    terms = raw_value_terms(load_registry().get("TotalSegmentator_v2"), tax)
    assert "gluteal_muscles_left" in terms["gluteus_maximus_left"]
    back = taxonomy_from_rows([term_row(tax, t) for t in tax.terms])  # the release's terms table keeps it
    assert "gluteal_muscles_left" in back.term("gluteus_medius_left").part_of


def test_a_grouping_extension_is_checked_like_any_partition(tmp_path: Path) -> None:
    """Members the file defines itself still list the term in their own part_of (the message says
    so), and a right-side base term cannot join a left group."""
    own = dict(STENT, id="lab_part", name="lab part", category="muscle", region="pelvis", part_of=[], synonyms=[])
    group = dict(GLUTEAL, partitions=[["gluteus_maximus_left", "lab_part"]])
    _, issues = read_taxonomy(_write(tmp_path / "a.yaml", {"extends": "curator", "terms": [group, own]}))
    assert [(i.loc, i.kind) for i in issues] == [("a.yaml:gluteal_muscles_left", "partition")]
    assert "add 'gluteal_muscles_left' to the part_of of 'lab_part'" in issues[0].message
    crossed = dict(GLUTEAL, partitions=[["gluteus_maximus_left", "gluteus_maximus_right"]])
    _, issues = read_taxonomy(_write(tmp_path / "b.yaml", {"extends": "curator", "terms": [crossed]}))
    assert [(i.loc, i.kind) for i in issues] == [("b.yaml:gluteus_maximus_right", "laterality")]


def test_an_edited_taxonomy_file_is_read_again_in_the_same_process(tmp_path: Path) -> None:
    """load_taxonomy cached a file by its path: a notebook running a pipeline again after editing
    its extension got the old terms, while the run recorded the new file's checksum (the tables
    then claimed to come from the edited file). An edited file, or one it extends, is read again."""
    base = _write(tmp_path / "site.yaml", {"extends": "curator", "synonyms": {"liver": ["leber"]}})
    lab = _write(tmp_path / "lab.yaml", {"extends": "site.yaml", "version": "1"})
    assert load_taxonomy(lab).version.endswith("+1") and load_taxonomy(lab).resolve("milz") is None
    _write(lab, {"extends": "site.yaml", "version": "2", "synonyms": {"spleen": ["milz"]}})
    assert load_taxonomy(lab).version.endswith("+2") and load_taxonomy(lab).resolve("milz").id == "spleen"
    _write(base, {"extends": "curator", "synonyms": {"liver": ["leber", "foie"]}})
    assert load_taxonomy(lab).resolve("foie").id == "liver"
    assert load_taxonomy(lab) is load_taxonomy(lab)  # unchanged files: parsed once


def test_a_cached_taxonomy_is_served_without_parsing_its_files_again(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking that the files are unchanged parsed each file of the chain for its `extends:` on every
    call: a lab's full copy of the taxonomy cost a quarter second a call, and harmonize asks per case."""
    from curator.taxonomy import load

    lab = _write(tmp_path / "lab.yaml", {"extends": "curator", "version": "1", "synonyms": {"spleen": ["milz"]}})
    load_taxonomy(lab)
    parsed: list[str] = []
    real = yaml.safe_load
    monkeypatch.setattr(load.yaml, "safe_load", lambda text: parsed.append("x") or real(text))
    for _ in range(3):
        assert load_taxonomy(lab).resolve("milz").id == "spleen"
    assert taxonomy_files(lab) == [lab, default_path()]
    assert parsed == []
    _write(lab, {"extends": "curator", "version": "2", "synonyms": {"spleen": ["milz", "mjälte"]}})
    assert load_taxonomy(lab).resolve("mjälte").id == "spleen" and parsed  # an edit is read again
