"""Report figures as inline PNGs (matplotlib, Agg backend): long tail of terms, QC feature
distributions before/after filtering with their bounds, feature scatter plots with flagged points.

>>> import polars as pl
>>> uri = long_tail(pl.DataFrame({"term_id": ["liver", "aorta"], "labels": [9, 2]}))
>>> uri.startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
import polars as pl

FEATURES = (("f_volume", "volume"), ("f_sphericity", "sphericity"), ("f_eccentricity", "eccentricity"))
COLOURS = {"include": "#2b6cb0", "exclude": "#c53030", "override_include": "#2f855a", "truncated": "#a0aec0",
           "unchecked": "#d69e2e"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> str:
    """A figure as a ``data:`` URI (the figure is closed)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def long_tail(counts: pl.DataFrame, label: str = "labels") -> str:
    """Labels per term, most frequent first, log scale: the long tail of the collection."""
    plt = _plt()
    n = counts.height
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.18 * n), 3.2))
    ax.bar(range(n), counts[label].to_list(), color="#2b6cb0")
    log_ticks(ax, counts[label].to_numpy(), "y")
    ax.set_ylabel(f"{label} (log)")
    ax.set_xlim(-0.6, n - 0.4)
    if n <= 60:
        ax.set_xticks(range(n), counts["term_id"].to_list(), rotation=90, fontsize=7)
    else:
        ax.set_xlabel(f"{n} terms, most frequent first")
        ax.set_xticks([])
    ax.set_title("labels per term")
    fig.subplots_adjust(left=max(0.04, 0.9 / fig.get_figwidth()), bottom=0.45 if n <= 60 else 0.15)
    return png(fig)


def main_cohort(qc: pl.DataFrame, term: str) -> pl.DataFrame:
    """The term's rows in its largest judged cohort (normalised and absolute volumes never share an axis)."""
    df = qc.filter(pl.col("term_id") == term)
    judged = df.filter(pl.col("decision").is_in(["include", "exclude", "override_include"]))
    if judged.height == 0:
        return df
    top = judged.group_by("cohort").agg(pl.len().alias("n")).sort(["n", "cohort"], descending=[True, False])
    return df.filter(pl.col("cohort") == top["cohort"][0])


def _volume_axis(df: pl.DataFrame) -> bool:
    v = df["f_volume"].drop_nulls()
    return v.len() > 0 and float(np.min(v.to_numpy())) > 0


def plain(x: float) -> str:
    """A tick value in plain decimals, 3 significant digits (``0.00006``, ``20``, ``1,500``), never
    in scientific notation (``6e-05``, ``2×10¹``), which small panels cannot fit or read."""
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return np.format_float_positional(x, precision=3, unique=True, fractional=False, trim="-")


def log_ticks(ax: Any, values: Any, which: str = "x") -> None:
    """``ax``'s ``which`` axis ("x" or "y") logarithmic, with plain tick labels: 3 ticks when
    ``values`` (positive) span under a decade — matplotlib labelled every minor tick of such a
    range, in scientific notation, on top of each other — else the decades, and no minor labels."""
    from matplotlib import ticker

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and float(v.max()) < 10.0 * float(v.min()):
        axis.set_major_locator(ticker.MaxNLocator(3))
    else:
        axis.set_major_locator(ticker.LogLocator(base=10.0, numticks=6))
    axis.set_minor_locator(ticker.LogLocator(base=10.0, subs=tuple(range(2, 10)), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: plain(x)))


def x_ticks(ax: Any, values: Any = (), log: bool = False) -> None:
    """Readable x tick labels on a small panel: at most 4 plain ticks on a linear axis (a narrow
    range such as eccentricity 0.9775-0.9925 got eight 6-character labels, run together); a
    logarithmic one (``log``: positive ``values``) as :func:`log_ticks` draws it."""
    from matplotlib import ticker

    if log:
        log_ticks(ax, values)
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(4))


def distributions(qc: pl.DataFrame, terms: list[str]) -> str:
    """Per term (rows) and feature (columns): histogram of every judged label (grey) and of the labels
    kept after filtering (blue), with the cohort bounds as dashed lines (UKBOB Fig. 8, per term)."""
    from matplotlib import ticker

    plt = _plt()
    fig, axes = plt.subplots(len(terms), 3, figsize=(10, 1.7 * len(terms) + 0.6), squeeze=False)
    for row, term in enumerate(terms):
        df = main_cohort(qc, term).filter(pl.col("decision").is_in(["include", "exclude", "override_include"]))
        kept = df.filter(pl.col("decision") != "exclude")
        for col, (c, name) in enumerate(FEATURES):
            ax = axes[row][col]
            allv = np.asarray(df[c].drop_nulls().to_list(), dtype=float)
            keep = np.asarray(kept[c].drop_nulls().to_list(), dtype=float)
            log = c == "f_volume" and allv.size and allv.min() > 0
            if allv.size:
                data = np.log10(allv) if log else allv
                bins = np.histogram_bin_edges(data, bins=min(30, max(5, int(math.sqrt(allv.size)) * 2)))
                ax.hist(data, bins=bins, color="#cbd5e0", label="before")
                ax.hist(np.log10(keep) if log else keep, bins=bins, color=COLOURS["include"], alpha=0.8,
                        label="after")
                for b in ("lo", "hi"):
                    vals = df[f"{name}_{b}"].drop_nulls()
                    if vals.len():
                        x = float(vals[0])
                        if not log or x > 0:
                            ax.axvline(math.log10(x) if log else x, color=COLOURS["exclude"], ls="--", lw=1)
            x_ticks(ax)
            ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # label counts: no 0.5, 1.5
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"log10 {name}" if c == "f_volume" else name, fontsize=9)
            if col == 0:
                ax.set_ylabel(str(df["cohort"][0]) if df.height else term, fontsize=7)
    axes[0][2].legend(fontsize=7, loc="upper left")
    fig.subplots_adjust(left=0.1, right=0.98, top=1 - 0.35 / fig.get_figheight(), bottom=0.3 / fig.get_figheight(),
                        hspace=0.45, wspace=0.25)
    return png(fig)


def scatter(qc: pl.DataFrame, terms: list[str]) -> str:
    """Per term: sphericity vs eccentricity and volume vs sphericity, coloured by decision."""
    plt = _plt()
    cols = 2
    fig, axes = plt.subplots(len(terms), cols, figsize=(7.5, 2.6 * len(terms) + 0.4), squeeze=False)
    for row, term in enumerate(terms):
        df = main_cohort(qc, term)
        for col, (x, y) in enumerate((("f_eccentricity", "f_sphericity"), ("f_volume", "f_sphericity"))):
            ax = axes[row][col]
            for decision, colour in COLOURS.items():
                d = df.filter(pl.col("decision") == decision).drop_nulls([x, y])
                if d.height:
                    ax.scatter(d[x].to_list(), d[y].to_list(), s=14 if decision != "exclude" else 30,
                               c=colour, marker="x" if decision == "exclude" else "o", label=decision,
                               alpha=0.85, linewidths=1.2)
            if x == "f_volume" and _volume_axis(df.drop_nulls([x])):
                x_ticks(ax, df[x].drop_nulls().to_numpy(), log=True)
            else:
                x_ticks(ax)
            ax.set_xlabel(x[2:], fontsize=8)
            ax.set_ylabel(f"{df['cohort'][0]}\n{y[2:]}" if col == 0 and df.height else y[2:], fontsize=7)
            ax.tick_params(labelsize=7)
        axes[row][0].legend(fontsize=6, loc="upper right")
    fig.subplots_adjust(left=0.14, right=0.98, top=1 - 0.2 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                        hspace=0.5, wspace=0.3)
    return png(fig)
