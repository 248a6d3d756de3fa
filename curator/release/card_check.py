"""The required structure of a release's ``DATASET_CARD.md`` and its checker.

A card is YAML front matter between ``---`` lines, then Markdown. The checker returns every
problem as a sentence (an empty list means the card is valid); ``curator verify`` and the
tests use it.

>>> check_card("no front matter")[0]
'the card does not start with YAML front matter (a line "---")'
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

_BIBTEX_KEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")

REQUIRED_KEYS = ("collection", "version", "schema_version", "n_cases", "licences", "licence_summary",
                 "sources", "splits")
SOURCE_KEYS = ("name", "licence", "citation")
REQUIRED_SECTIONS = ("Summary", "Sources", "Composition", "Deduplication", "Quality control", "Splits",
                     "Known issues", "Licence constraints", "Lineage")


_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
# characters that open an inline construct: links and images ([, then ](url)), emphasis (* and an
# _ not between two letters or digits, as CommonMark reads it), code, strikethrough, a table cell
_INLINE = re.compile(r"[\\`*\[\]|~]|(?<![^\W_])_|_(?![^\W_])")
_ENTITY = re.compile(r"&(?=#?\w+;)")  # `&lt;` written in a note shows as `&lt;`, not `<`
# what makes a line a heading, quote, list item, thematic break or setext underline
_BLOCK_START = re.compile(r"[#>=+-]|\d{1,9}[.)](?=\s|$)")


def md_text(value: Any) -> str:
    """Text from a dataset's files (a name, a note, a licence note) as plain text in Markdown:
    it shows as written and adds no structure, link, image or HTML to the card.

    Line breaks become spaces (a note is one paragraph: no line of it can start a heading or
    close the list it is in); a first character that would start a block (``#``, ``>``, ``-``,
    ``+``, ``=``, ``1.``) and every character that opens an inline construct (``[``, ``]``, ``*``,
    ``_`` at a word's edge, a lone backtick, ``~``, ``|``, ``\\``) is backslash-escaped; ``<``
    becomes ``&lt;`` (and the ``&`` of an entity ``&amp;``), so no HTML tag reaches a renderer
    that passes HTML through. A `code span` is kept: Markdown shows its content literally (only
    ``|`` is escaped in it, for tables). A bare ``https://`` address stays a link, as it would
    anywhere on a hub; a ``javascript:`` one is no link in Markdown.

    >>> print(md_text("## Licence constraints"))
    \\## Licence constraints
    >>> print(md_text("see [here](javascript:alert(1)) ![t](https://t.invalid/p.png) <b>MSD_Spleen</b>"))
    see \\[here\\](javascript:alert(1)) !\\[t\\](https://t.invalid/p.png) &lt;b>MSD_Spleen&lt;/b>
    >>> print(md_text("ignore `'._*'` files:\\n- *all* of them"))
    ignore `'._*'` files: - \\*all\\* of them
    """
    text = " ".join(str(value).split())
    out, at = [], 0
    for m in _CODE_SPAN.finditer(text):
        out += [_escape(text[at:m.start()]), m.group(0).replace("|", "\\|")]
        at = m.end()
    out.append(_escape(text[at:]))
    text = "".join(out)
    start = _BLOCK_START.match(text)
    return text if start is None else f"{text[:start.end() - 1]}\\{text[start.end() - 1:]}"


def _escape(text: str) -> str:
    text = _INLINE.sub(lambda m: "\\" + m.group(0), text)
    return _ENTITY.sub("&amp;", text).replace("<", "&lt;")


def md_fence(text: str, lang: str = "") -> str:
    """``text`` in a fenced code block whose fence no backtick run in it can close."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{lang}\n{text}\n{fence}\n"


def split_front_matter(text: str) -> tuple[dict[str, Any] | None, str, list[str]]:
    """(front matter, body, issues)."""
    if not text.startswith("---\n"):
        return None, text, ['the card does not start with YAML front matter (a line "---")']
    end = text.find("\n---\n", 4)
    if end < 0:
        return None, text, ['the front matter is not closed by a line "---"']
    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError as e:
        return None, text[end + 5:], [f"the front matter is not valid YAML: {e}"]
    if not isinstance(meta, dict):
        return None, text[end + 5:], ["the front matter is not a mapping"]
    return meta, text[end + 5:], []


def sections(body: str) -> list[str]:
    """Level-2 headings of the Markdown body, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^## +(.+)$", body, flags=re.MULTILINE)]


def section_text(body: str, title: str) -> str:
    m = re.search(rf"^## +{re.escape(title)}\s*$(.*?)(?=^## |\Z)", body, flags=re.MULTILINE | re.DOTALL)
    return m.group(1) if m else ""


def check_card(text: str, datasets: set[str] | None = None, n_cases: int | None = None,
               per_source: dict[str, int] | None = None) -> list[str]:
    """Every structural problem of a card. ``datasets``/``n_cases``/``per_source`` (cases per
    ``cases.source``): what the release holds."""
    meta, body, issues = split_front_matter(text)
    if meta is None:
        return issues
    issues += [f"front matter key {k!r} is missing" for k in REQUIRED_KEYS if k not in meta]
    srcs = meta.get("sources") or []
    if not isinstance(srcs, list):
        issues.append("front matter `sources` must be a list")
        srcs = []
    names = set()
    for i, s in enumerate(srcs):
        if not isinstance(s, dict):
            issues.append(f"sources[{i}] is not a mapping")
            continue
        names.add(str(s.get("dataset") or s.get("name")))
        issues += [f"source {s.get('name', i)!r} has no {k}" for k in SOURCE_KEYS if not str(s.get(k) or "").strip()]
    found = sections(body)
    issues += [f"section '## {t}' is missing" for t in REQUIRED_SECTIONS if t not in found]
    order = [t for t in found if t in REQUIRED_SECTIONS]
    if order != [t for t in REQUIRED_SECTIONS if t in order]:
        issues.append(f"sections are out of order: {order}; expected {list(REQUIRED_SECTIONS)}")
    src_text = section_text(body, "Sources")
    for s in srcs:
        if isinstance(s, dict):
            for k in ("name", "licence"):
                if s.get(k) and md_text(s[k]) not in src_text:
                    issues.append(f"the Sources section does not show {k} {s[k]!r}")
            bib = bibtex_keys(str(s.get("citation") or ""))
            for key in (k.strip() for k in str(s.get("citation_key") or "").split(",") if k.strip()):
                # the key in the source's Sources row, and (BibTeX citations) its entry under Citations
                in_table = _in_a_row(key, src_text)
                if bib and key not in bib:
                    issues.append(f"the citation key {key!r} of {s.get('name')!r} is not the key of its BibTeX "
                                  f"entry ({', '.join(bib)})")
                elif not in_table or (bib and not re.search(rf"@\w+\s*\{{\s*{re.escape(key)}\s*,", src_text)):
                    issues.append(f"the citation of {s.get('name')!r} ({key}) is not in the Sources section "
                                  "(its key in the table and its BibTeX entry under Citations)")
    if datasets is not None and names and not datasets <= names:
        issues.append(f"datasets without a source entry: {sorted(datasets - names)}")
    if n_cases is not None and meta.get("n_cases") != n_cases:
        issues.append(f"front matter n_cases = {meta.get('n_cases')} but the release has {n_cases} cases")
    if per_source is not None:
        issues += _source_counts(srcs, per_source)
    return issues


def _in_a_row(key: str, text: str) -> bool:
    """Whether a table row of ``text`` has a cell listing ``key`` (a cell holds ``k1,k2`` as
    :func:`md_text` writes it)."""
    def plain(cell: str) -> str:  # md_text undone
        return re.sub(r"\\(.)", r"\1", cell).replace("&lt;", "<").replace("&amp;", "&")

    return any(key in (k.strip() for k in plain(cell).split(",")) for line in text.splitlines()
               if line.startswith("|") for cell in re.split(r"(?<!\\)\|", line))


def _source_counts(srcs: list[Any], per_source: dict[str, int]) -> list[str]:
    """Each front-matter source's ``cases`` against the release's cases of that source (one
    dataset ingested under two aliases is two sources, each with its own cases)."""
    issues = []
    for s in srcs:
        if isinstance(s, dict) and "name" in s and s.get("cases") != per_source.get(str(s["name"]), 0):
            issues.append(f"source {s['name']!r} has cases = {s.get('cases')} in the front matter but the release "
                          f"has {per_source.get(str(s['name']), 0)} cases of it")
    return issues


def bibtex_keys(text: str) -> list[str]:
    """The keys of the BibTeX entries in ``text``, in order."""
    return _BIBTEX_KEY.findall(text)


def check_card_file(path: Path) -> list[str]:
    """Check a release's card against its cases table (datasets, number of cases, cases per source)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets, n, per_source = None, None, None
    cases = path.parent / "cases.parquet"
    if cases.is_file():
        try:
            table = pq.read_table(cases, columns=["dataset", "source"])
        except (OSError, pa.ArrowException) as e:  # a damaged table: verify reports it, the card check says why
            return [f"the card cannot be checked against cases.parquet ({type(e).__name__}: {e})"]
        datasets, n = set(table.column("dataset").to_pylist()), table.num_rows
        per_source = dict(Counter(table.column("source").to_pylist()))
    return check_card(path.read_text(encoding="utf-8"), datasets, n, per_source)
