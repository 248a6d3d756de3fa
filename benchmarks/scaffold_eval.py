"""How often ``curator sources init`` guesses a dataset's layout: over the registry's tiny native
downloads (``curator.testing.registry_fixtures``, one per built-in dataset), the draft's layout
is applied to the download and compared with the built-in YAML's cases.

* **exact**: the draft finds the same (image, label files) pairs as the built-in YAML;
* **images**: the same image files become cases (labels paired otherwise or missing);
* **cases**: the draft finds as many cases (its own choice of files);
* and how many label files the draft leaves unclaimed.

``python benchmarks/scaffold_eval.py [--out results.md]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILLED = {"version": "1", "region": "abdomen", "licence": "CC-BY-4.0", "citation": "@misc{x, title={x}}",
          "homepage": "https://example.org"}


def pairs(cases: list[Any]) -> set[tuple[str, tuple[str, ...]]]:
    return {((c.image or "").rstrip("/"), tuple(sorted(p.rstrip("/") for _, p in c.labels))) for c in cases}


def evaluate(name: str, tmp: Path) -> dict[str, Any]:
    from curator.registry import load_registry
    from curator.registry.layout import discover
    from curator.registry.scaffold import TODO, scaffold
    from curator.registry.spec import parse_spec
    from curator.testing.native import write_tree
    from curator.testing.registry_fixtures import FIXTURES

    root = tmp / name
    write_tree(root, [(f.path, f.kind, f.values) for f in FIXTURES[name].files])
    builtin, _ = discover(load_registry().get(name), root)
    draft = scaffold(root, name)
    d = {k: (FILLED.get(k, v) if v == TODO else v) for k, v in draft.spec.items()}
    if d["labels"].get("encoding") == "label_map":
        d["labels"] = {**d["labels"], "values": {k: "liver" for k in d["labels"]["values"]}}
    if d["labels"].get("encoding") == "per_structure":
        d["labels"] = {**d["labels"], "structures": {k: "liver" for k in d["labels"]["structures"]},
                       "other_structures": "ignore"}
    spec, issues = parse_spec(d, f"{name}.yaml")
    found = discover(spec, root)[0] if spec is not None and d["layout"] else []
    want, got = pairs(builtin), pairs(found)
    return {"dataset": name, "builtin_cases": len(builtin), "draft_cases": len(found),
            "exact": want == got, "images": {w[0] for w in want} == {g[0] for g in got},
            "cases": len(found) == len(builtin), "unclaimed": len(draft.unclaimed_labels),
            "layout": [e["image"] + (" -> " + e["label"] if "label" in e else "") for e in d["layout"]],
            "issues": [i.message for i in issues][:2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    ap.add_argument("--verbose", action="store_true", help="print each dataset's draft layout")
    args = ap.parse_args()
    from curator.testing.registry_fixtures import FIXTURES

    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(FIXTURES):
            r = evaluate(name, Path(tmp))
            rows.append(r)
            if args.verbose:
                mark = "exact" if r["exact"] else "images" if r["images"] else "cases" if r["cases"] else "-"
                print(f"{name:28s} {mark:6s} {r['builtin_cases']:>2} vs {r['draft_cases']:>2}  {r['layout']}")
    n = len(rows)
    lines = ["| measure | datasets | share |", "|---|---|---|"]
    for key, what in (("exact", "same (image, labels) pairs as the built-in YAML"),
                      ("images", "same image files as cases"), ("cases", "same number of cases")):
        k = sum(r[key] for r in rows)
        lines.append(f"| {what} | {k} / {n} | {k / n:.0%} |")
    lines.append(f"| no label file left unclaimed | {sum(r['unclaimed'] == 0 for r in rows)} / {n} | |")
    text = "\n".join(lines) + f"\n\n{time.perf_counter() - t0:.1f} s for {n} downloads.\n"
    missed = [r["dataset"] for r in rows if not r["exact"]]
    text += f"\nNot exact: {', '.join(missed)}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
