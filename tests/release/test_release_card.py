"""The dataset card: licence reading and combination, rendering into a release, the structure check."""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from curator.config import PipelineConfig
from curator.release.card_check import (
    REQUIRED_SECTIONS,
    check_card,
    check_card_file,
    section_text,
    split_front_matter,
)
from curator.release.integrity import verify_release
from curator.release.licences import combine, parse_licence
from curator.runner.context import Context
from tests.conftest import REAL

Build = Callable[..., Path]
LICENCES = REAL.parents[1] / "reference" / "licences.tsv"  # ../shared/reference next to ../shared/data


@pytest.mark.parametrize("text,family,commercial,deriv", [
    ("CC-BY-4.0", "CC-BY", "yes", "yes"),
    ("CC BY-NC-SA 4.0", "CC-BY-NC-SA", "no", "share-alike"),
    ("cc-by-nc-nd-4.0", "CC-BY-NC-ND", "no", "no"),
    ("CC0-1.0", "CC0", "yes", "yes"),
    ("Apache-2.0", "permissive", "yes", "yes"),
    ("ODbL-1.0", "ODbL", "yes", "share-alike"),
    ("unknown (challenge registration)", "unknown", "unknown", "unknown"),
    ("TCIA restricted data usage agreement", "unknown", "unknown", "unknown"),
    ("conflicting: CC-BY-4.0 (Zenodo) vs CC-BY-NC-SA (NeurIPS listing)", "CC-BY-NC-SA", "no", "share-alike"),
])
def test_parse_licence(text: str, family: str, commercial: str, deriv: str) -> None:
    t = parse_licence(text)
    assert (t.family, t.commercial, t.derivatives) == (family, commercial, deriv)
    assert t.conflicting == text.startswith("conflicting")


def test_combination_constraints() -> None:
    c = combine({"A": parse_licence("CC-BY-4.0"), "B": parse_licence("CC-BY-4.0")})
    assert (c.commercial_use, c.redistribute_adapted) == ("yes", "yes")
    c = combine({"A": parse_licence("CC-BY-4.0"), "K": parse_licence("CC-BY-NC-SA-4.0"),
                 "M": parse_licence("CC-BY-SA-4.0"), "N": parse_licence("CC-BY-ND-4.0"),
                 "U": parse_licence("unknown")}, {"K": "no redistribution of images"})
    assert c.commercial_use == "no" and c.redistribute_adapted == "no"
    assert c.share_alike == ["K", "M"] and c.no_derivatives == ["N"] and c.unknown == ["U"]
    text = " ".join(c.constraints)
    for needle in ("Non-commercial use only: K", "Incompatible share-alike", "No derivatives: N",
                   "Licence unknown for U", "K: no redistribution of images", "Attribution"):
        assert needle in text


def test_terms_declared_unknown_are_not_read_as_allowed() -> None:
    """A known licence id whose registry terms say ``unknown`` (SEGA's secondary-source CC-BY-4.0,
    DAP_Atlas's repository Apache-2.0) allows nothing for sure: the card said adapted material could
    be shared and that all sources allow commercial use and adaptation."""
    open_all = {"commercial_use": "unknown", "derivatives": "unknown", "redistribution": "unknown"}
    for lic in ("CC-BY-4.0", "Apache-2.0"):
        c = combine({"S": parse_licence(lic).with_declared(open_all)})
        assert (c.commercial_use, c.redistribute, c.redistribute_adapted) == ("unknown",) * 3
        assert c.unknown == ["S"]
        assert not any(line.startswith("All sources allow") for line in c.constraints)
        assert any("S (commercial use, derivatives, redistribution)" in line for line in c.constraints)
        both = combine({"S": parse_licence(lic).with_declared(open_all), "B": parse_licence("CC-BY-4.0")})
        assert (both.redistribute_adapted, both.unknown) == ("unknown", ["S"])
    # non-commercial is known, what may be done with adapted material is not
    c = combine({"N": parse_licence("CC-BY-NC-4.0").with_declared({"derivatives": "unknown"})})
    assert (c.commercial_use, c.redistribute_adapted, c.unknown) == ("no", "unknown", ["N"])
    # a term known to forbid still wins over one that is open
    c = combine({"N": parse_licence("CC-BY-NC-4.0").with_declared({"derivatives": "unknown"}),
                 "D": parse_licence("CC-BY-ND-4.0")})
    assert c.redistribute_adapted == "no"


def test_no_registry_dataset_with_open_terms_is_read_as_allowing_them() -> None:
    """Every built-in dataset alone: a term its licence_terms leave unknown is unknown on the card."""
    from curator.registry import load_registry

    reg = load_registry()
    for name, spec in reg.datasets.items():
        t = parse_licence(spec.licence).with_declared(spec.extra.get("licence_terms"))
        c = combine({name: t})
        if "unknown" in (t.derivatives, t.redistribution):
            assert c.redistribute_adapted != "yes", name
        if "unknown" in (t.commercial, t.derivatives, t.redistribution):
            assert c.unknown == [name], name
            assert not any(line.startswith("All sources allow") for line in c.constraints), name


def test_every_builtin_dataset_gives_its_licence_terms_and_evidence() -> None:
    """What the project's licence reference records of each dataset, a built-in YAML records too
    (docs/registry.md, "To contribute a dataset"): what the licence allows (`licence_terms`, with the
    confidence of that reading) and the evidence (`licence_notes`). Unlike the reference, this
    needs nothing outside the repository, and it holds for a dataset the reference does not list."""
    from curator.registry import load_registry

    for name, spec in load_registry().datasets.items():
        terms = spec.extra.get("licence_terms") or {}
        missing = {"commercial_use", "derivatives", "redistribution", "confidence"} - set(terms)
        assert not missing, f"{name}: licence_terms lacks {sorted(missing)}"
        assert str(spec.extra.get("licence_notes") or "").strip(), f"{name}: no licence_notes"


def test_share_alike_binds_to_the_licence_that_imposes_it() -> None:
    """MIT labels drawn on CC-BY-SA images are share-alike under CC-BY-SA, not under "MIT": with a
    CC-BY-SA source they make one adapted work; with a CC-BY-NC-SA one they do not."""
    labels_on_sa = parse_licence("MIT").with_declared({"derivatives": "share-alike", "share_alike": "CC-BY-SA-4.0"})
    sa = parse_licence("CC-BY-SA-4.0")
    c = combine({"L": labels_on_sa, "M": sa})
    assert c.share_alike == ["L", "M"] and c.redistribute_adapted == "yes"
    assert not any("Incompatible" in line for line in c.constraints)
    assert not any("permissive" in line for line in c.constraints)
    assert labels_on_sa.share_alike == sa.share_alike != ""
    nc_sa = parse_licence("CC-BY-NC-SA-4.0")
    c = combine({"L": labels_on_sa, "K": nc_sa})
    assert c.redistribute_adapted == "no"
    assert any(line.startswith("Incompatible share-alike licences") and sa.share_alike in line
               and nc_sa.share_alike in line for line in c.constraints)
    # naming the licence implies share-alike derivatives
    assert parse_licence("MIT").with_declared({"share_alike": "CC-BY-SA-4.0"}).derivatives == "share-alike"
    # share-alike declared without naming its licence: compatibility with another one is not known
    unnamed = parse_licence("MIT").with_declared({"derivatives": "share-alike"})
    c = combine({"U": unnamed, "M": sa})
    assert c.redistribute_adapted == "unknown"
    assert any(line.startswith("Share-alike licence not named for U") for line in c.constraints)
    assert combine({"U": unnamed}).redistribute_adapted == "yes"  # alone it binds nothing else


def test_registry_share_alike_sources_name_the_licence_that_imposes_it() -> None:
    """MSD_Liver + Couinaud_Liver was reported as incompatible (CC-BY-SA, permissive): Couinaud's
    share-alike comes from its MSD Task08 images, under MSD's own licence."""
    from curator.registry import load_registry

    reg = load_registry()
    terms = {n: parse_licence(s.licence).with_declared(s.extra.get("licence_terms")) for n, s in reg.datasets.items()}
    msd = reg.datasets["MSD_Liver"]
    assert msd.licence in (reg.datasets["Couinaud_Liver"].extra.get("licence_notes") or "")  # the images' licence
    c = combine({n: terms[n] for n in ("MSD_Liver", "Couinaud_Liver")})
    assert c.share_alike == ["Couinaud_Liver", "MSD_Liver"]
    assert not any("Incompatible" in line for line in c.constraints)
    assert c.redistribute_adapted == "yes"
    for name, t in terms.items():  # and no other registry source leaves its share-alike licence unnamed
        if t.derivatives == "share-alike":
            assert t.share_alike not in ("", "unknown"), name


@pytest.mark.skipif(not LICENCES.is_file(), reason="shared reference licences.tsv not present")
def test_reference_licence_table_is_read_consistently() -> None:
    """The project's researched licence table: our reading agrees on commercial use where it is known."""
    with open(LICENCES, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    checked = 0
    for r in rows:
        t = parse_licence(r["licence"])
        if r["commercial_use"] == "no" and t.known and not t.conflicting:
            assert t.commercial == "no", r
            checked += 1
        if r["licence"].startswith("unknown"):
            assert not t.known
    assert checked > 5


@pytest.mark.skipif(not LICENCES.is_file(), reason="shared reference licences.tsv not present")
def test_the_release_card_reads_every_registry_licence_as_the_reference_does() -> None:
    """The card combines each source's licence id *with* its YAML's licence_terms: CHAOS's and
    FLARE22's non-commercial, no-redistribution terms of use sit behind a LicenseRef, and
    Couinaud_Liver's MIT labels are drawn on share-alike images. The id alone read them all wrong."""
    from curator.registry import load_registry

    with open(LICENCES, newline="", encoding="utf-8") as f:
        ref = {r["name"]: r for r in csv.DictReader(f, delimiter="\t")}
    reg = load_registry()
    # every dataset the reference researched is in the registry; a dataset contributed since has no
    # row there and is checked by test_every_builtin_dataset_gives_its_licence_terms_and_evidence
    assert set(ref) - set(reg.datasets) == set()
    for name, r in ref.items():
        spec = reg.datasets[name]
        t = parse_licence(spec.licence).with_declared(spec.extra.get("licence_terms"))
        assert (t.commercial, t.derivatives, t.redistribution) == (
            r["commercial_use"], r["derivatives"], r["redistribution"]), name
        assert t.conflicting == ("conflicting" in r["licence"]), name
    specs = {n: reg.datasets[n] for n in ("CHAOS_CT", "FLARE22", "AMOS22_CT", "Couinaud_Liver")}
    c = combine({n: parse_licence(s.licence).with_declared(s.extra.get("licence_terms")) for n, s in specs.items()})
    assert (c.commercial_use, c.redistribute) == ("no", "no")
    assert c.share_alike == ["AMOS22_CT", "Couinaud_Liver"] and c.conflicting == ["AMOS22_CT", "CHAOS_CT"]
    assert c.no_redistribution == ["CHAOS_CT", "FLARE22"]
    assert any(line.startswith("No redistribution: CHAOS_CT, FLARE22") for line in c.constraints)


def test_release_card_lists_every_source_and_passes_the_check(demo: Path) -> None:
    rel = demo / "releases" / "demo" / "0.1.0"
    card = (rel / "DATASET_CARD.md").read_text()
    assert check_card_file(rel / "DATASET_CARD.md") == []
    meta, body, _ = split_front_matter(card)
    assert meta is not None
    ctx = Context(PipelineConfig.load(demo / "pipeline.yaml"))
    assert {s["name"] for s in meta["sources"]} == set(ctx.sources)
    for name, src in ctx.sources.items():
        entry = next(s for s in meta["sources"] if s["name"] == name)
        assert entry["licence"] == src.spec.licence and entry["citation"] == src.spec.citation.strip()
        assert src.spec.citation.strip() in body
    assert meta["licence_summary"]["commercial_use"] == "no"  # KiTS23 is CC-BY-NC-SA
    assert sum(meta["splits"].values()) == meta["n_cases"]
    ran = {t.stem for t in rel.glob("*.parquet")}
    # a stage that ran is summarised; one that did not says so
    assert ("The dedup stage did not run" in body) is ("duplicates" not in ran)
    if "duplicates" in ran:  # copies are counted as such, not as more patients' scans
        import pyarrow.parquet as pq

        dropped = sum(not k for k in pq.read_table(rel / "duplicates.parquet").column("kept").to_pylist())
        assert dropped and meta["n_dropped_duplicates"] == dropped
        assert f"{dropped} of the cases are copies of another case's scan" in body
        from curator.release.query import Release

        people = Release(rel).sql("select count(distinct patient_id) from cases where case_id not in "
                                  "(select case_id from duplicates where not kept)").fetchall()[0][0]
        everyone = Release(rel).sql("select count(distinct patient_id) from cases").fetchall()[0][0]
        assert meta["n_patients"] == people < everyone  # a dropped copy is no further person
    if "qc" in ran:
        assert "The qc stage did not run" not in body and "exclude" in body


def test_the_quality_control_table_counts_every_label_row(demo_base: Path) -> None:
    """Labels qc measured no mask for (annotated absent: no voxels) have a null qc_decision, and the
    card's table left them out: it summed to fewer rows than n_label_rows beside it."""
    from curator.release.card_check import section_text
    from curator.release.query import Release

    rel = demo_base / "releases" / "demo" / "0.1.0"
    meta, body, _ = split_front_matter((rel / "DATASET_CARD.md").read_text())
    assert meta is not None
    table = section_text(body, "Quality control").split("Excluded labels per term")[0]
    rows = {r.split("|")[1].strip(): int(r.split("|")[2]) for r in table.splitlines()
            if r.startswith("| ") and not r.startswith("| decision |")}
    empty = Release(rel).sql("select count(*) from labels where qc_decision is null and not present").fetchall()[0][0]
    assert empty > 0 and rows["not judged (no voxels)"] == empty  # the demo has such labels
    assert sum(rows.values()) == meta["n_label_rows"] == Release(rel).table("labels").height


def test_card_is_identical_when_rebuilt(demo: Path, demo_base: Path, tmp_path: Path, release_with: Build) -> None:
    other = tmp_path / "other"
    shutil.copytree(demo_base, other, symlinks=True)
    a, b = release_with(demo, "0.2.0"), release_with(other, "0.2.0")
    assert (a / "DATASET_CARD.md").read_bytes() == (b / "DATASET_CARD.md").read_bytes()


def test_structure_check_finds_each_defect(demo: Path) -> None:
    good = (demo / "releases" / "demo" / "0.1.0" / "DATASET_CARD.md").read_text()
    assert check_card(good) == []
    assert "YAML front matter" in check_card(good.split("---\n", 2)[2])[0]
    for section in REQUIRED_SECTIONS:
        broken = good.replace(f"## {section}\n", f"## {section} (renamed)\n")
        assert f"section '## {section}' is missing" in check_card(broken)
    meta, body, _ = split_front_matter(good)
    assert meta is not None
    meta["sources"][0]["licence"] = ""
    del meta["splits"]
    issues = check_card("---\n" + yaml.safe_dump(meta) + "---\n" + body)
    assert any("has no licence" in i for i in issues) and "front matter key 'splits' is missing" in issues
    meta, body, _ = split_front_matter(good)
    assert meta is not None
    key = meta["sources"][-1]["citation_key"]
    issues = check_card("---\n" + yaml.safe_dump(meta) + "---\n" + body.replace(key, "XXX"))
    assert any(key in i for i in issues)
    # the BibTeX blocks gone, the key still named in the table: caught (a body-wide substring test was not)
    no_bib = re.sub(r"```bibtex\n.*?```\n", "", body, flags=re.DOTALL)
    assert no_bib != body and any(key in i and "BibTeX" in i for i in check_card(
        "---\n" + yaml.safe_dump(meta) + "---\n" + no_bib))
    assert check_card(good, datasets={"KiTS23", "Other"})[0].startswith("datasets without a source entry")
    assert "n_cases" in check_card(good, n_cases=999)[0]


def test_a_dataset_yamls_free_text_is_plain_text_on_the_card(demo: Path, release_with: Build) -> None:
    """A note `## Licence constraints` stopped the release as "a bug in curator's card template"
    (a second section of that name); other notes added a fake `## Lineage (addendum)` section, a
    remote image (a tracking pixel on every hub view) and a `javascript:` link to the card and to
    the Hugging Face README made from it."""
    from curator.release.card_check import sections

    rel = release_with(demo, "0.2.0", extra_steps=("tests.release.helpers:hostile_text",))
    assert check_card_file(rel / "DATASET_CARD.md") == []
    _, body, _ = split_front_matter((rel / "DATASET_CARD.md").read_text())
    # the required sections, and the one a release built on a parent has (0.1.0): none from the text
    assert sections(body) == [REQUIRED_SECTIONS[0], "Changes since 0.1.0", *REQUIRED_SECTIONS[1:]]
    assert "addendum" not in "".join(re.findall(r"^#.*", body, flags=re.MULTILINE))
    assert not re.search(r"^- #", body, flags=re.MULTILINE)  # no heading in a list item either
    assert "![t](" not in body and not re.search(r"(?<!\\)\]\(javascript:", body) and "<script" not in body
    known = section_text(body, "Known issues")
    assert "\\## Licence constraints" in known and "!\\[t\\](https://tracker.invalid/p.png)" in known
    # the licence notes are one line of a list item: their "headings" are text within it
    assert "- DemoTotalSeg: # Summary - ok ## Lineage (addendum) \\*\\*All" in section_text(body, "Licence constraints")


def test_verify_reports_a_broken_card(demo: Path) -> None:
    rel = demo / "releases" / "demo" / "0.1.0"
    card = rel / "DATASET_CARD.md"
    card.write_text(card.read_text().replace("## Splits\n", "## Split\n"))
    rep = verify_release(rel)
    assert rep.modified == ["DATASET_CARD.md"]
    assert rep.card_issues == ["section '## Splits' is missing"]


def test_verify_reports_row_counts_the_tables_do_not_hold(demo: Path) -> None:
    """release.json lists the checksums, so an edited release.json passed verify ("OK", exit 0)
    with a cases count one above the table's; its counts are now checked against the tables."""
    import json

    rel = demo / "releases" / "demo" / "0.1.0"
    assert verify_release(rel).counts_differ == []
    info = json.loads((rel / "release.json").read_text())
    n = info["counts"]["cases"]
    info["counts"]["cases"] = n - 1
    (rel / "release.json").write_text(json.dumps(info))
    rep = verify_release(rel)
    assert not rep.ok and rep.counts_differ == [f"cases: release.json says {n - 1} rows, cases.parquet has {n}"]


def test_the_released_report_names_its_code_and_schema(demo: Path) -> None:
    """Its header read "created – · code – · schema –" (the release step passed no versions);
    the creation time stays in release.json, so a rebuilt release keeps a byte-identical report."""
    from curator import __version__
    from curator.schema import schema_version

    html = (demo / "releases" / "demo" / "0.1.0" / "report.html").read_text()
    assert f"code {__version__} · schema {schema_version()}" in html and "–" not in html.split("<nav>")[0]


def test_the_card_cites_the_key_its_bibtex_carries() -> None:
    """A YAML without citation_key (or with one its entry does not carry) still gets a card that
    cites a key printed above its BibTeX — the check refusing the card would stop the release."""
    from curator.release.card import cited_key

    bib = "@article{heller2023kits21, title={x}}"
    assert cited_key(None, bib, "KiTS23") == "heller2023kits21"
    assert cited_key("KiTS23", bib, "KiTS23") == "heller2023kits21"
    assert cited_key("heller2023kits21", bib, "KiTS23") == "heller2023kits21"
    assert cited_key("a,b", "@misc{a, t={1}}\n@misc{b, t={2}}", "X") == "a,b"
    assert cited_key(None, "Doe J. (2024) A dataset.", "Mine") == "Mine"  # no BibTeX: the name


def test_each_citation_is_given_once_and_in_citations_bib(demo: Path) -> None:
    """The demo's two phantom sources share one citation: the card prints it once, naming both,
    and CITATIONS.bib (covered by release.json) holds every source's entry exactly once."""
    import json

    from curator.release.card_check import bibtex_keys

    rel = demo / "releases" / "demo" / "0.1.0"
    meta, body, _ = split_front_matter((rel / "DATASET_CARD.md").read_text())
    assert meta is not None
    shared = [s for s in meta["sources"] if s["citation_key"] == "curatordemo"]
    assert len(shared) == 2 and body.count(shared[0]["citation"]) == 1
    assert f"**curatordemo** ({shared[0]['name']}, {shared[1]['name']})" in body
    bib = (rel / "CITATIONS.bib").read_text()
    keys = bibtex_keys(bib)
    assert sorted(keys) == sorted({k for s in meta["sources"] for k in s["citation_key"].split(",")})
    assert len(keys) == len(set(keys))
    assert "CITATIONS.bib" in json.loads((rel / "release.json").read_text())["files"]


def test_citations_bib_merges_shared_entries_and_comments_out_clashes() -> None:
    from curator.release.card import citations_bib
    from curator.release.card_check import bibtex_keys

    msd = "@article{MSD,\n  title={The medical segmentation decathlon}\n}"
    two = "@article{a, title={A}}\n" + msd
    sources = [{"name": "MSD_Liver", "citation_key": "MSD", "citation": msd},
               {"name": "MSD_Spleen", "citation_key": "MSD", "citation": msd + "\n"},
               {"name": "Both", "citation_key": "a,MSD", "citation": two},
               {"name": "Other", "citation_key": "MSD", "citation": "@article{MSD, title={Something else}}"},
               {"name": "Plain", "citation_key": "Plain", "citation": "Doe J. (2024) A dataset."}]
    bib = citations_bib(sources)
    live = "\n".join(line for line in bib.splitlines() if not line.startswith("%"))
    assert bibtex_keys(live) == ["MSD", "a"]  # one entry per key, in first-cited order
    assert "% MSD_Liver, MSD_Spleen, Both\n@article{MSD" in bib
    assert "% Other: another entry under the key MSD (the one above is MSD_Liver, MSD_Spleen, Both's)" in bib
    assert "% @article{MSD, title={Something else}}" in bib
    assert "% Plain (not BibTeX):\n% Doe J. (2024) A dataset." in bib
