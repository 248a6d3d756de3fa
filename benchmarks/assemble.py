"""Assemble BENCHMARKS.md: the summary (benchmarks/results/SUMMARY.md) + every results file.

    python benchmarks/assemble.py          # rewrites BENCHMARKS.md in the repository root
    python benchmarks/assemble.py --out /tmp/B.md && diff BENCHMARKS.md /tmp/B.md   # check it

Each ``benchmarks/results/<area>.md`` is written by the people who ran that benchmark (numbers,
versions, commands, machine load); this script only stitches them together, each file's top heading
at ``##``, so BENCHMARKS.md never disagrees with them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["preprocess", "dedup", "qc", "pseudolabel", "release"]


def _headings(text: str) -> list[tuple[int, int]]:
    """(line index, level) of every Markdown heading outside code fences."""
    out, fence = [], False
    for i, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"(#{1,6}) ", line)
        if m:
            out.append((i, len(m.group(1))))
    return out


def demote(text: str) -> str:
    """Shift the headings so the file's top level is ``##`` (a section of BENCHMARKS.md), whether
    the file starts at ``#`` or already at ``##``."""
    heads = _headings(text)
    shift = 2 - min((lv for _, lv in heads), default=2)
    lines = text.splitlines()
    for i, lv in heads:
        lines[i] = "#" * max(1, min(6, lv + shift)) + lines[i][lv:]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="where to write (default: %(default)s)")
    args = ap.parse_args(argv)
    res = ROOT / "benchmarks" / "results"
    parts = [(res / "SUMMARY.md").read_text().rstrip() + "\n"]
    names = ORDER + sorted(p.stem for p in res.glob("*.md") if p.stem not in ORDER and p.stem != "SUMMARY")
    for name in names:
        f = res / f"{name}.md"
        if f.exists():
            parts.append(f"\n<!-- from benchmarks/results/{name}.md -->\n" + demote(f.read_text()))
    args.out.write_text("\n".join(parts))


if __name__ == "__main__":
    main()
