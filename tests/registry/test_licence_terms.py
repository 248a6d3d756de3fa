"""``licence_terms`` as a contributor writes them (tester 43 #1, #7): unquoted ``yes``/``no``
(YAML booleans) read as the words written, values that are no term refused with their line,
terms that contradict the licence id refused, and the draft's ``TODO`` refused in every key."""

from __future__ import annotations

from pathlib import Path

from curator.registry import validate_files
from curator.registry.card import licence_terms
from curator.registry.check import check_label_system
from curator.release.licences import parse_licence
from curator.release.sources import source_row

HEAD = """name: Mine
version: VERSION
title: My head-and-neck CTs
homepage: HOMEPAGE
modality: CT
region: head and neck
licence: LICENCE
licence_notes: "the download page: CC BY-NC-ND 4.0"
licence_terms: TERMS
citation_key: mine
citation: "@misc{mine, title={mine}}"
layout:
  - {image: "{case}/ct.nrrd", label: "{case}/seg.nrrd"}
labels:
  values: {1: brainstem}
"""


def _file(tmp_path: Path, terms: str, licence: str = "CC-BY-NC-ND-4.0", version: str = '"1"',
          homepage: str = "https://example.org") -> Path:
    f = tmp_path / "Mine.yaml"
    f.write_text(HEAD.replace("TERMS", terms).replace("LICENCE", licence).replace("VERSION", version)
                 .replace("HOMEPAGE", homepage))
    return f


def _mine(tmp_path: Path, f: Path) -> list[tuple[str, str, str, str]]:
    """`labels check`'s problems of the file, as (where, kind, severity, message)."""
    return [(p.where, p.kind, p.severity, p.message) for p in check_label_system([f]) if p.where.startswith("Mine.yaml")]


def test_unquoted_yes_and_no_read_as_the_words_written(tmp_path: Path) -> None:
    """`commercial_use: no` unquoted is YAML's False: str() made it "False", and the card of a
    CC-BY-NC-ND dataset said "All sources allow commercial use" (its release's `sources` table
    held False). Read as `no`, the dataset forbids commercial use and derivatives."""
    f = _file(tmp_path, "{commercial_use: no, derivatives: no, redistribution: yes, confidence: medium}")
    specs, issues = validate_files([f])
    assert issues == []
    spec = specs["Mine"]
    assert spec.extra["licence_terms"] == {"commercial_use": "no", "derivatives": "no", "redistribution": "yes",
                                           "confidence": "medium"}
    t = licence_terms(spec)
    assert (t.commercial, t.derivatives, t.redistribution, t.confidence) == ("no", "no", "yes", "medium")
    row = source_row({"name": "Mine", "dataset": "Mine", "cases": 1, "licence": spec.licence,
                      "licence_terms": spec.extra["licence_terms"], "citation_key": "mine", "citation": "@misc{mine}"})
    assert (row["commercial_use"], row["derivatives"], row["redistribution"]) == ("no", "no", "yes")
    assert _mine(tmp_path, f) == []


def test_a_value_that_is_no_term_is_refused_with_its_line(tmp_path: Path) -> None:
    f = _file(tmp_path, "{comercial_use: 'no', derivatives: maybe, redistribution: 'yes', confidence: yes}")
    issues = sorted((i.loc, i.kind, i.message) for i in validate_files([f])[1])
    assert issues == [
        ("Mine.yaml:licence_terms.comercial_use", "unknown_key",
         "unknown key 'comercial_use' in licence_terms (did you mean 'commercial_use'?) (line 9)"),
        ("Mine.yaml:licence_terms.confidence", "value",
         ("confidence must be one of high, medium, low, not True (YAML reads unquoted yes/no/on/off as "
          "true/false: write the word) (line 9)")),
        ("Mine.yaml:licence_terms.derivatives", "value",
         "derivatives must be one of yes, share-alike, no, unknown, not 'maybe' (line 9)")]
    (issue,) = validate_files([_file(tmp_path, "open")])[1]
    assert (issue.loc, issue.kind) == ("Mine.yaml:licence_terms", "type")


def test_terms_that_grant_what_the_licence_forbids_are_refused_and_never_read_as_granted(tmp_path: Path) -> None:
    """CC-BY-NC-ND with `commercial_use: "yes"`, `derivatives: "yes"` passed `--strict`, and the
    card listed the dataset under "Allow commercial use, derivatives and redistribution"."""
    f = _file(tmp_path, '{commercial_use: "yes", derivatives: "yes", redistribution: "yes", confidence: medium}')
    found = _mine(tmp_path, f)
    assert [(w, k, s) for w, k, s, _ in found] == [("Mine.yaml:licence_terms.commercial_use", "licence", "error"),
                                                   ("Mine.yaml:licence_terms.derivatives", "licence", "error")]
    assert "commercial_use: yes contradicts the licence: CC-BY-NC-ND-4.0 forbids commercial use (NC)" in found[0][3]
    assert "forbids derivatives (ND)" in found[1][3] and found[1][3].endswith("(line 9)")
    t = licence_terms(validate_files([f])[0]["Mine"])  # until fixed, the card reads the licence's terms
    assert (t.commercial, t.derivatives, t.redistribution) == ("no", "no", "yes")
    sa = _file(tmp_path, '{commercial_use: "yes", derivatives: "yes", redistribution: "yes", confidence: high}',
               licence="CC-BY-SA-4.0")
    ((where, _, severity, said),) = _mine(tmp_path, sa)
    assert (where, severity) == ("Mine.yaml:licence_terms.derivatives", "error") and "(SA)" in said
    # terms the id leaves open or allows are no contradiction: unknown over NC, share-alike over MIT
    assert _mine(tmp_path, _file(tmp_path, '{commercial_use: unknown, derivatives: "no", redistribution: "no", '
                                 'confidence: low}')) == []
    assert _mine(tmp_path, _file(tmp_path, "{commercial_use: 'yes', derivatives: share-alike, redistribution: 'yes', "
                                 "share_alike: CC-BY-SA-4.0, confidence: high}", licence="MIT")) == []


def test_a_release_never_reads_a_term_that_is_not_one_as_a_grant() -> None:
    """A `sources` row of an older release holding False, a typo: unknown, never "yes"."""
    t = parse_licence("LicenseRef-challenge").with_declared(
        {"commercial_use": False, "derivatives": "False", "redistribution": "perhaps"})
    assert (t.commercial, t.derivatives, t.redistribution) == ("no", "unknown", "unknown")
    t = parse_licence("CC-BY-NC-4.0").with_declared({"commercial_use": True, "derivatives": True})
    assert (t.commercial, t.derivatives) == ("no", "yes")


def test_terms_without_a_confidence_are_a_warning(tmp_path: Path) -> None:
    """docs/registry.md asks every contributed dataset for the confidence of its licence reading."""
    ((where, kind, severity, said),) = _mine(tmp_path, _file(
        tmp_path, "{commercial_use: 'no', derivatives: 'no', redistribution: 'yes'}"))
    assert (where, kind, severity) == ("Mine.yaml:licence_terms", "licence_confidence", "warning")
    assert "gives no `confidence`" in said and said.endswith("(line 9)")


def test_the_drafts_todo_is_refused_in_every_key(tmp_path: Path) -> None:
    """`version: TODO` and `homepage: TODO` passed `labels check --strict`, although the draft and
    the docs say TODO is refused until filled in; the version reached cases.dataset_version."""
    f = _file(tmp_path, "{commercial_use: 'no', derivatives: 'no', redistribution: 'yes', confidence: high}",
              version="TODO", homepage="TODO")
    assert validate_files([f])[1] == []  # a valid file: what refuses the placeholder is `labels check`
    assert [(w, s, m) for w, _, s, m in _mine(tmp_path, f)] == [
        ("Mine.yaml:version", "error", "version is still the draft's placeholder TODO: fill it in (line 2)"),
        ("Mine.yaml:homepage", "error", ("homepage is still the draft's placeholder TODO: fill it in (or remove "
                                         "the key: it is optional) (line 4)"))]
