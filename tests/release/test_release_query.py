"""Queries on a release: DuckDB reads the release's own files only and never writes."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import duckdb
import pytest

from curator.errors import ReleaseError
from curator.release.query import Release, check_read_only


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_select_runs_and_nothing_else_does(demo: Path, tmp_path: Path) -> None:
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    before = _digest(rel.path)
    n = rel.sql("select count(*) from cases").fetchall()[0][0]
    assert n == rel.table("cases").height
    assert rel.sql("explain select * from splits where split = 'test'").fetchall()
    assert rel.sql("with t as (select split from splits) select count(*) from t").fetchall()[0][0] == n
    target = rel.path / "cases.parquet"
    for bad in (f"copy (select 1 as a) to '{target}' (format parquet, use_tmp_file false)",
                f"explain analyze copy (select 1) to '{tmp_path / 'x.csv'}'",
                "select 1; attach ':memory:' as other", "set enable_external_access = true",
                "create table t as select 1", "install httpfs"):
        with pytest.raises(ReleaseError, match=r"only a SELECT \(also written FROM-first"):
            rel.sql(bad)
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(ReleaseError, match="Permission") as denied:
        rel.sql(f"select * from read_csv('{secret}')").fetchall()
    assert isinstance(denied.value.__cause__, duckdb.PermissionException)
    assert denied.value.remedy.startswith("a query reads the tables of the release, not other files")
    with pytest.raises(ReleaseError, match="Permission"):  # even the workspace next to the release
        rel.sql(f"select * from read_parquet('{demo / 'workspace' / 'tables' / 'cases.parquet'}')").fetchall()
    con = rel.connect()  # the raw connection cannot widen its own access either
    with pytest.raises(duckdb.Error):
        con.execute("set enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"copy (select 1) to '{tmp_path / 'out.csv'}'")
    assert _digest(rel.path) == before and not (tmp_path / "out.csv").exists()


def test_check_read_only_statement_kinds() -> None:
    for ok in ("select 1", "from cases", "describe cases", "show tables", "summarize cases", "values (1)",
               "explain select 1", "EXPLAIN ANALYZE select 1"):
        check_read_only(ok)
    for bad in ("pragma version", "call pragma_version()", "export database 'x'", "copy cases to 'x'"):
        with pytest.raises(ReleaseError):
            check_read_only(bad)
    for several in ("select 1 as a; select 2 as b", "select 1; explain select 2"):  # only the last would show
        with pytest.raises(ReleaseError, match="holds 2 statements; one runs at a time"):
            check_read_only(several)
    for empty in ("", "  ;  ", "/* nothing */"):
        with pytest.raises(ReleaseError, match="no SQL statement"):
            check_read_only(empty)
    check_read_only("select 1;")  # one statement and its semicolon


def test_a_pivot_without_an_in_list_is_told_to_name_its_values(demo: Path) -> None:
    """DuckDB runs an IN-less PIVOT as a MULTI statement (a CREATE TYPE first): it was refused as
    "only SELECT queries run on a release, not MULTI", as if the query had tried to write."""
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    for query in ("pivot labels on origin using count(*) group by term_id",
                  "with p as (PIVOT labels ON origin USING count(*) GROUP BY term_id) select * from p"):
        with pytest.raises(ReleaseError) as e:
            rel.sql(query)
        assert "a PIVOT without an IN list does not run on a release" in e.value.detail and "MULTI" not in str(e.value)
        assert e.value.remedy.startswith("give the PIVOT an explicit IN list of the values of origin")
        assert "`select distinct origin from labels order by 1` lists them" in e.value.remedy
    values = [r[0] for r in rel.sql("select distinct origin from labels order by 1").fetchall()]
    listed = ", ".join(f"'{v}'" for v in values)
    wide = rel.sql(f"pivot labels on origin in ({listed}) using count(*) group by term_id").pl()
    assert wide.columns == ["term_id", *values]
    assert int(wide.select(values).sum_horizontal().sum()) == rel.table("labels").height


def test_sql_that_does_not_parse_is_a_query_error(demo: Path) -> None:
    """A typo is the user's error (a ReleaseError with a remedy), not DuckDB's raw ParserException."""
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    for bad in ("selec * from cases", "select * from cases where nonsense ===", "explain selec 1"):
        with pytest.raises(ReleaseError, match="syntax error") as e:
            rel.sql(bad)
        assert e.value.kind == "query_error" and "fix the SQL" in str(e.value)
        assert isinstance(e.value.__cause__, duckdb.ParserException)
    with pytest.raises(ReleaseError, match="syntax error"):
        check_read_only("selec 1")


def test_a_damaged_table_is_named_and_the_others_stay_queryable(demo: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every table's view was created up front: one cut Parquet file made every query fail (a
    query_error about another table). Now the damaged table alone is left out, with a warning,
    and reading it is a release_corrupt error naming the file and `curator verify`."""
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    damaged = rel.path / "qc.parquet"
    os.truncate(damaged, 100)
    with caplog.at_level(logging.WARNING, logger="curator"):
        n = rel.sql("select count(*) from cases").fetchall()[0][0]
    assert n == rel.table("cases").height and list(rel.unreadable) == ["qc"]
    assert f"{damaged}: table 'qc' cannot be read" in caplog.text and "curator verify" in caplog.text
    for read in (lambda: rel.sql("select count(*) from QC"), lambda: rel.sql("describe qc"),
                 lambda: rel.sql("select * from cases join qc using (case_id)"),
                 lambda: rel.table("qc"), lambda: rel.schema("qc")):
        with pytest.raises(ReleaseError, match="table 'qc' cannot be read") as e:
            read()
        assert e.value.kind == "release_corrupt" and e.value.path == str(damaged)
        assert e.value.remedy and "curator verify" in e.value.remedy
        assert f"delete the folder {rel.path} and run `curator release`" in e.value.remedy  # followable (#9)
    assert rel.sql("with qc as (select 1 as x) select x from qc").fetchall() == [(1,)]  # a CTE, not the table


def test_a_page_damaged_mid_file_is_refused_not_read_as_other_values(demo: Path) -> None:
    """Bytes flipped inside a data page, footer intact: DuckDB decoded the page into other values
    without an error. The table's checksum (release.json) is checked before it is read."""
    rel_path = demo / "releases" / "demo" / "0.1.0"
    before = Release(rel_path).sql("select * from labels order by all").fetchall()
    damaged = rel_path / "labels.parquet"
    data = bytearray(damaged.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 200):
        data[i] ^= 0x5A
    damaged.write_bytes(bytes(data))
    con = duckdb.connect()  # what a reader without the check sees: no error
    assert con.sql(f"select count(*) from read_parquet('{damaged}')").fetchall()[0][0] == len(before)
    rel = Release(rel_path)
    for read in (lambda: rel.sql("select * from labels"), lambda: rel.table("labels")):
        with pytest.raises(ReleaseError, match="table 'labels' cannot be read .its bytes differ from the checksum "
                           "in release.json") as e:
            read()
        assert e.value.kind == "release_corrupt" and e.value.path == str(damaged)
    assert rel.sql("select count(*) from cases").fetchall()[0][0] > 0


def test_intact_tables_are_hashed_once(demo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Checked once per file (per process, and in a cache for later processes) while its size,
    time and inode stay the same."""
    from curator.release import integrity, verify_cache

    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})
    hashed: list[str] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    path = demo / "releases" / "demo" / "0.1.0"
    n_tables = len(Release(path).table_names())
    Release(path).sql("select count(*) from cases").fetchall()
    assert len(hashed) == n_tables
    Release(path).sql("select count(*) from labels").fetchall()
    Release(path).table("cases")
    assert len(hashed) == n_tables  # this process remembers
    monkeypatch.setattr(verify_cache, "_VERIFIED", {})  # a new process: the cache file remembers
    Release(path).sql("select count(*) from cases").fetchall()
    assert len(hashed) == n_tables
    os.utime(path / "cases.parquet")  # touched: checked again
    Release(path).sql("select count(*) from cases").fetchall()
    assert hashed[n_tables:] == [str((path / "cases.parquet").resolve())]
    splits = path / "splits.parquet"  # 'test' -> 'tesT', size and mtime put back: only the ctime moves
    st, data = splits.stat(), bytearray(splits.read_bytes())
    at = data.find(b"test")
    assert at > 0  # the dictionary page holds the split names as written
    data[at + 3] ^= 0x20  # decodes without an error, into another value
    splits.write_bytes(bytes(data))
    os.utime(splits, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ReleaseError, match="splits") as e:
        Release(path).sql("select split from splits").fetchall()
    assert e.value.kind == "release_corrupt"


def test_the_taxonomy_is_a_table_of_the_release(demo: Path) -> None:
    """Hierarchy and synonym queries need nothing but the release: the terms table."""
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    terms = {r["term_id"]: r for r in rel.table("terms").to_dicts()}
    assert set(terms) == set(tax.terms)
    kl = terms["kidney_left"]
    assert (kl["name"], kl["laterality"]) == ("left kidney", "left")
    assert kl["ancestors"] == tax.ancestors("kidney_left") and "kidney" in kl["ancestors"]
    assert terms["kidney"]["partitions"] == [["kidney_left", "kidney_right"]]
    assert "tumor" in terms["kidney_tumor"]["kinds"]
    under = rel.sql("select distinct l.term_id from labels l join terms t using (term_id) "
                    "where t.term_id = 'kidney' or list_contains(t.ancestors, 'kidney')").fetchall()
    labelled = {r[0] for r in rel.sql("select distinct term_id from labels").fetchall()}
    expect = {t for t in labelled if t == "kidney" or "kidney" in tax.ancestors(t)}
    assert {r[0] for r in under} == expect and {"kidney", "kidney_left", "kidney_right"} <= expect
    hit = rel.sql("select term_id from terms where list_contains(synonyms, 'renal tumour')").fetchall()
    assert hit == [("kidney_tumor",)]


def test_paths_with_glob_characters_are_paths(demo: Path, tmp_path: Path) -> None:
    """A release under 'rel [2024]' (brackets, a star): Polars must not read the path as a pattern."""
    import shutil

    from curator.release.diff import diff_releases

    src = demo / "releases" / "demo" / "0.1.0"
    a, b = tmp_path / "rel [2024]" / "0.1.0", tmp_path / "rel *x?" / "0.1.0"
    shutil.copytree(src, a, symlinks=True)
    shutil.copytree(src, b, symlinks=True)
    rel = Release(a)
    assert rel.table("cases").height == rel.sql("select count(*) from cases").fetchall()[0][0] > 0
    d = diff_releases(a, b)
    assert "cases" in d.tables and all(t.empty for t in d.tables.values())


def test_a_misspelt_name_gets_duckdbs_suggestion(demo: Path) -> None:
    """DuckDB puts what it suggests on a line of its own ('Candidate bindings: ...', 'Did you mean
    "labels"?'); only its first line reached the user, so a misspelt column or table came back
    without the one hint that fixes it."""
    rel = Release(demo / "releases" / "demo" / "0.1.0")
    with pytest.raises(ReleaseError) as col:
        rel.sql("select case_ids from cases")
    assert col.value.kind == "query_error" and 'Referenced column "case_ids"' in str(col.value) and '"case_id"' in str(col.value)
    assert "Candidate bindings" in str(col.value) and "\n" not in str(col.value)
    with pytest.raises(ReleaseError) as unquoted:  # a text value without quotes reads as a column
        rel.sql("select count(*) from cases where dataset = KiTS23")
    assert "put it in single quotes (dataset = 'KiTS23')" in str(unquoted.value)
    with pytest.raises(ReleaseError) as table:
        rel.sql("select * from label")
    assert 'Did you mean "labels"' in str(table.value) and "tables: attention, cases" in str(table.value)
    with pytest.raises(ReleaseError) as func:
        rel.sql("select lenght(case_id) from cases")
    assert 'Did you mean "length"' in str(func.value)
    with pytest.raises(ReleaseError, match="syntax error") as syntax:  # the LINE/caret excerpt stays out
        rel.sql("select * frm cases")
    assert "LINE 1" not in str(syntax.value) and "^" not in str(syntax.value)


def test_a_missing_release_path_names_what_is_there(demo: Path) -> None:
    """A mistyped version said "not a release folder (no release.json)" as for any folder; now a
    path that does not exist says so, with the collection's versions, and a release root names
    its collections."""
    from curator.release.query import release_versions, resolve_release

    root = demo / "releases"
    with pytest.raises(ReleaseError, match="no such release folder") as version:
        resolve_release(root / "demo" / "0.9.0")
    assert "versions of the collection" in str(version.value) and "0.1.0" in str(version.value)
    with pytest.raises(ReleaseError, match="no such release folder") as nowhere:
        resolve_release(demo / "nowhere" / "0.1.0")
    assert "<release root>/<collection>/<version>" in str(nowhere.value)
    with pytest.raises(ReleaseError, match="no release.json") as rootdir:
        resolve_release(root)
    assert "release root; its collections: demo" in str(rootdir.value)
    with pytest.raises(ReleaseError, match="no release.json"):
        resolve_release(root / "demo" / "0.1.0" / "cases.parquet")  # a file, not a folder
    assert [p.name for p in release_versions(root / "demo")] == ["0.1.0"]
    assert resolve_release(root / "demo") == root / "demo" / "0.1.0"


def test_a_collection_holding_only_a_killed_builds_staging_folder_says_so(tmp_path: Path) -> None:
    """Tester 36 #7: 'not a release folder … (or the collection folder …)' of the collection folder."""
    from curator.release.query import resolve_release

    collection = tmp_path / "releases" / "demo"
    (collection / ".0.1.0.tmp-host-11939" / "stores").mkdir(parents=True)
    with pytest.raises(ReleaseError) as e:
        resolve_release(collection)
    said = str(e.value)
    assert "no version of this collection is built yet" in said and ".0.1.0.tmp-host-11939" in said
    assert "or the collection folder" not in said and "curator release" in said


def test_cli_query_spreadsheet_quotes_formulas_in_csv_only(demo: Path, tmp_path: Path) -> None:
    """`--spreadsheet` quotes text a spreadsheet would run as a formula, printed or written with
    -o; it is refused where it would change nothing (a table, JSON, Parquet)."""
    from typer.testing import CliRunner

    from curator.cli import app

    runner = CliRunner()
    rel = str(demo / "releases" / "demo" / "0.1.0")
    sql = "select '=1+1' as f, -3.5 as x, case_id from cases order by case_id limit 1"
    plain = runner.invoke(app, ["query", rel, sql, "-f", "csv"])
    safe = runner.invoke(app, ["query", rel, sql, "-f", "csv", "--spreadsheet"])
    assert plain.exit_code == safe.exit_code == 0, safe.output
    assert plain.stdout.splitlines()[1].startswith("=1+1,-3.5,")
    assert safe.stdout.splitlines()[1].startswith("'=1+1,-3.5,")
    hint = "1 text cell(s) start with = + - @, which a spreadsheet would run as formulas: --spreadsheet quotes them"
    said = lambda r: " ".join(r.stderr.split())  # rich wraps stderr
    assert hint in said(plain) and hint not in said(safe)  # CSV without it says the option exists
    assert hint in said(runner.invoke(app, ["query", rel, sql, "-o", str(tmp_path / "plain.csv")]))
    assert hint not in said(runner.invoke(app, ["query", rel, "select 1 as a, -3.5 as x", "-f", "csv"]))
    assert runner.invoke(app, ["query", rel, sql, "-o", str(tmp_path / "r.csv"), "--spreadsheet"]).exit_code == 0
    assert (tmp_path / "r.csv").read_text().splitlines()[1].startswith("'=1+1,-3.5,")
    bad = runner.invoke(app, ["query", rel, sql, "-o", str(tmp_path / "r.parquet"), "--spreadsheet"])
    assert bad.exit_code == 2 and "--spreadsheet changes CSV cells only" in bad.output


def test_cli_query_says_which_version_a_collection_folder_stood_for(demo: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app

    runner = CliRunner()
    newest = runner.invoke(app, ["query", str(demo / "releases" / "demo"), "select count(*) as n from cases",
                                 "-f", "csv"])
    assert newest.exit_code == 0, newest.output
    assert newest.stdout.splitlines()[0] == "n"  # stdout stays pure CSV; the note goes to stderr
    assert "newest version of" in newest.stderr and "0.1.0" in newest.stderr
    exact = runner.invoke(app, ["query", str(demo / "releases" / "demo" / "0.1.0"), "select 1 as a", "-f", "csv"])
    assert exact.exit_code == 0 and "newest version" not in exact.output
    typo = runner.invoke(app, ["query", str(demo / "releases" / "demo"), "select nope from cases"])
    assert typo.exit_code == 2 and "Candidate bindings" in typo.output


def test_cli_query_of_a_missing_folder_says_a_workspace_is_taken_too(demo: Path) -> None:
    """The README showed `curator query work/workspace ...` while `workspace: work` makes the folder
    `work`; the error for a path that does not exist named only release folders."""
    from typer.testing import CliRunner

    from curator.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["query", str(demo / "work" / "workspace"), "select 1 as a"], env={"COLUMNS": "300"})
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "no such release folder" in said and "or pass a workspace folder" in said, said
    ws = next(p.parent for p in demo.rglob("workspace.json"))
    res = runner.invoke(app, ["query", str(ws), "select count(*) as n from cases", "-f", "csv"])
    assert res.exit_code == 0 and res.stdout.splitlines()[0] == "n", res.output


def test_newest_version_is_by_semantic_version(tmp_path: Path) -> None:
    """A collection folder stands for its newest version: 0.10.0 after 0.9.1, a release after its
    pre-release (0.10.0-rc.1 < 0.10.0), a folder that is no version never."""
    from curator.release.query import release_versions, resolve_release

    for v in ("0.2.0", "0.10.0", "0.9.1", "0.10.0-rc.1", "notes"):
        (tmp_path / v).mkdir()
        (tmp_path / v / "release.json").write_text("{}")
    assert [p.name for p in release_versions(tmp_path)] == ["notes", "0.2.0", "0.9.1", "0.10.0-rc.1", "0.10.0"]
    assert resolve_release(tmp_path).name == "0.10.0"
    (tmp_path / "0.11.0-rc.1").mkdir()  # a version folder without release.json (being written) does not count
    assert resolve_release(tmp_path).name == "0.10.0"


def test_a_column_or_table_newer_than_the_release_says_so(demo: Path) -> None:
    """`select count(*) from qc where oversized` on a release made with schema 1.6.0 gave DuckDB's
    bare "Referenced column not found", as if the name were misspelt."""
    import json
    import shutil

    import pyarrow.parquet as pq

    from curator.testing.releases import reseal

    coll = demo / "releases" / "demo"
    old = coll / "0.0.9"
    shutil.copytree(coll / "0.1.0", old)
    qc = old / "qc.parquet"
    table = pq.read_table(qc).drop_columns(["oversized"])
    qc.unlink()
    pq.write_table(table, qc)
    (old / "sources.parquet").unlink()
    info = json.loads((old / "release.json").read_text())
    info["schema_version"] = "1.6.0"
    info["files"].pop("sources.parquet")
    (old / "release.json").write_text(json.dumps(info))
    reseal(old)
    rel = Release(old)
    for query, said in (("select count(*) from qc where oversized", "`qc.oversized` was added in schema 1.7.0"),
                        ("select q.oversized from qc q", "`qc.oversized` was added in schema 1.7.0"),
                        ("select * from sources", "`sources` was added in schema 1.8.0")):
        with pytest.raises(ReleaseError) as e:
            rel.sql(query)
        assert e.value.kind == "query_error"
        assert f"this release has schema 1.6.0; {said} (manifests/CHANGELOG.md)" in e.value.detail, e.value.detail
    with pytest.raises(ReleaseError) as e:  # a misspelt name is still DuckDB's suggestion alone
        rel.sql("select count(*) from qc where oversizd")
    assert "schema" not in e.value.detail and "single quotes" in (e.value.remedy or "")
    with pytest.raises(ReleaseError) as e:  # a release of the current schema has the column: no hint
        Release(coll / "0.1.0").sql("select count(*) from cases where oversized")
    assert "schema" not in e.value.detail
