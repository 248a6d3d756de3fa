"""Assemble BENCHMARKS.md: the summary (benchmarks/results/SUMMARY.md) + every results file.

    python benchmarks/assemble.py          # rewrites BENCHMARKS.md in the repository root
    python benchmarks/assemble.py --out /tmp/B.md && diff BENCHMARKS.md /tmp/B.md   # check it

Each ``benchmarks/results/<area>.md`` is written by the people who ran that benchmark (numbers,
versions, commands, machine load); this script only stitches them together, one heading level
down, so BENCHMARKS.md never disagrees with them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["preprocess", "dedup", "qc", "pseudolabel", "release"]


def demote(text: str) -> str:
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        out.append("#" + line if not fence and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out).rstrip() + "\n"


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
