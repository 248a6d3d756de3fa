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
COLOURS = {"include": "#2b6cb0", "exclude": "#c53030", "override_include": "#2f855a", "override_exclude": "#805ad5",
           "truncated": "#a0aec0", "unchecked": "#d69e2e"}
JUDGED = ("include", "exclude", "override_include")
NOT_JUDGED = ("truncated", "unchecked")  # kept in training without being judged
# the volume feature per qc.volume_basis (stages.qc.volume_norm; absolute: a case without an image)
VOLUME_AXIS = {"body": "volume / body volume", "section": "volume / body size at its level",
               "absolute": "store-grid volume (ml)"}  # qc's volume_ml: the resampled store's, not labels.volume_ml
UNIT_FEATURES = ("f_sphericity", "f_eccentricity")  # between 0 and 1


def bounded() -> pl.Expr:
    """Whether a cohort's rows have bounds for some feature (aggregated over the rows)."""
    return pl.any_horizontal(pl.col("^.*_(lo|hi)$").is_not_null()).any()


def volume_name(df: pl.DataFrame, scale: str = "") -> str:
    """The volume axis's name for one cohort's rows, ``scale`` (e.g. ``log10``) beside the unit:
    ``volume / body volume (log10)``, ``volume (ml, log10)``."""
    bases = df["volume_basis"].unique().to_list() if "volume_basis" in df.columns else []
    name = VOLUME_AXIS.get(bases[0], "volume") if len(bases) == 1 else "volume"
    if not scale:
        return name
    return name.replace(")", f", {scale})") if name.endswith(")") else f"{name} ({scale})"


def unit_limits(ax: Any, which: str, values: Any) -> None:
    """Sphericity and eccentricity axes within [0, 1] (beyond 1 only as far as a value goes: mesh
    sphericity can reach 1.05): matplotlib padded a single value's bins to 1.5, or below 0."""
    v = np.asarray(values, dtype=np.float64)
    top = max(1.0, float(v.max())) if v.size else 1.0
    get, put = (ax.get_xlim, ax.set_xlim) if which == "x" else (ax.get_ylim, ax.set_ylim)
    lo, hi = get()
    put(max(0.0, lo), min(top, hi))


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
    """The term's rows in its largest judged cohort with bounds (normalised and absolute volumes never
    share an axis; a cohort too small for bounds has only side-check exclusions to show)."""
    df = qc.filter(pl.col("term_id") == term)
    judged = df.filter(pl.col("decision").is_in(JUDGED))
    if judged.height == 0:
        return df
    withb = df.group_by("cohort").agg(bounded().alias("b"))
    top = judged.group_by("cohort").agg(pl.len().alias("n")).join(withb, on="cohort")\
        .sort(["b", "n", "cohort"], descending=[True, True, False])
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


def _bins(data: Any, unit: bool) -> Any:
    """Histogram bins over ``data``; a feature in [0, 1] (``unit``) keeps them there."""
    n = min(30, max(5, int(math.sqrt(data.size)) * 2))
    lo, hi = float(data.min()), float(data.max())
    if not unit:
        return np.histogram_bin_edges(data, bins=n)
    if hi - lo < 1e-6:  # one value: numpy pads by 0.5 either side
        lo, hi = lo - 0.02, hi + 0.02
    return np.linspace(max(0.0, lo), min(max(1.0, float(data.max())), hi), n + 1)


def distributions(qc: pl.DataFrame, terms: list[str]) -> str:
    """:func:`distributions_figure` as a ``data:`` URI."""
    return png(distributions_figure(qc, terms))


def distributions_figure(qc: pl.DataFrame, terms: list[str]) -> Any:
    """Per term (rows) and feature (columns): histogram of every label of the cohort (grey) and of the
    labels kept after filtering — judged (blue) and kept unjudged, truncated or unchecked (amber) —
    with the cohort bounds as dashed lines (UKBOB Fig. 8, per term)."""
    from matplotlib import ticker

    plt = _plt()
    fig, axes = plt.subplots(len(terms), 3, figsize=(10, 1.95 * len(terms) + 0.8), squeeze=False)
    for row, term in enumerate(terms):
        df = main_cohort(qc, term)
        kept = [df.filter(pl.col("decision").is_in(d)) for d in (("include", "override_include"), NOT_JUDGED)]
        for col, (c, name) in enumerate(FEATURES):
            ax = axes[row][col]
            allv = np.asarray(df[c].drop_nulls().to_list(), dtype=float)
            log = bool(c == "f_volume" and allv.size and allv.min() > 0)
            if allv.size:
                tr = np.log10 if log else np.asarray
                bins = _bins(tr(allv), c in UNIT_FEATURES)
                ax.hist(tr(allv), bins=bins, color="#cbd5e0", label="before: every label")
                ax.hist([tr(np.asarray(k[c].drop_nulls().to_list(), dtype=float)) for k in kept], bins=bins,
                        stacked=True, color=[COLOURS["include"], COLOURS["unchecked"]], alpha=0.85,
                        label=["after: judged, kept", "after: kept unjudged (truncated, unchecked)"])
                for b in ("lo", "hi"):
                    vals = df[f"{name}_{b}"].drop_nulls()
                    if vals.len():
                        x = float(vals[0])
                        if not log or x > 0:
                            ax.axvline(math.log10(x) if log else x, color=COLOURS["exclude"], ls="--", lw=1)
                if c in UNIT_FEATURES:
                    unit_limits(ax, "x", allv)
            x_ticks(ax)
            ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # label counts: no 0.5, 1.5
            ax.tick_params(labelsize=7)
            if c == "f_volume":  # the basis is the cohort's: a share of the body volume, or ml
                ax.set_xlabel(volume_name(df, "log10" if log else ""), fontsize=7, labelpad=1)
            elif row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:  # the cohort over its row, read across: a long one ran past the axis as a y label
                ax.set_ylabel("labels", fontsize=7)
                ax.set_title(str(df["cohort"][0]) if df.height else term, fontsize=8, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.1, right=0.98, top=1 - 0.55 / fig.get_figheight(), bottom=0.4 / fig.get_figheight(),
                        hspace=0.65, wspace=0.25)
    return fig


def scatter(qc: pl.DataFrame, terms: list[str]) -> str:
    """:func:`scatter_figure` as a ``data:`` URI."""
    return png(scatter_figure(qc, terms))


def scatter_figure(qc: pl.DataFrame, terms: list[str]) -> Any:
    """Per term: sphericity vs eccentricity and volume vs sphericity, coloured by decision (a person's
    exclude, ``override_exclude``, apart from the filter's)."""
    plt = _plt()
    cols = 2
    fig, axes = plt.subplots(len(terms), cols, figsize=(9, 2.6 * len(terms) + 0.55), squeeze=False)
    for row, term in enumerate(terms):
        df = main_cohort(qc, term)
        if "override" in df.columns:  # a person's exclude is not the filter's
            df = df.with_columns(decision=pl.when((pl.col("decision") == "exclude") & pl.col("override"))
                                 .then(pl.lit("override_exclude")).otherwise(pl.col("decision")))
        for col, (x, y) in enumerate((("f_eccentricity", "f_sphericity"), ("f_volume", "f_sphericity"))):
            ax = axes[row][col]
            for decision, colour in COLOURS.items():
                d = df.filter(pl.col("decision") == decision).drop_nulls([x, y])
                if d.height:
                    ax.scatter(d[x].to_list(), d[y].to_list(), s=14 if decision != "exclude" else 30,
                               c=colour, marker="x" if decision == "exclude" else "o", label=decision,
                               alpha=0.85, linewidths=1.2, clip_on=False)  # a point at 1.0 on the edge
            log = x == "f_volume" and _volume_axis(df.drop_nulls([x]))
            x_ticks(ax, df[x].drop_nulls().to_numpy() if log else (), log=log)
            for axis, c in (("x", x), ("y", y)):
                if c in UNIT_FEATURES and df[c].drop_nulls().len():
                    unit_limits(ax, axis, df[c].drop_nulls().to_numpy())
            ax.set_xlabel(volume_name(df, "log scale" if log else "") if x == "f_volume" else x[2:],
                          fontsize=8)
            ax.set_ylabel(y[2:], fontsize=7)
            ax.tick_params(labelsize=7)
        axes[row][0].set_title(str(df["cohort"][0]) if df.height else term, fontsize=8, loc="left")
        legend_outside(axes[row])
    fig.subplots_adjust(left=0.09, right=0.8, top=1 - 0.35 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                        hspace=0.6, wspace=0.3)
    return fig


def legend_outside(row: Any) -> None:
    """One legend for a row of panels, right of its last panel: inside a panel, at a fixed corner, it hid
    points (a person's exclude under it)."""
    seen: dict[str, Any] = {}
    for ax in row:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        row[-1].legend(list(seen.values()), list(seen), fontsize=6, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                       borderaxespad=0.0, frameon=False)
