"""The page's building blocks: its style sheet, escaped cells, tables and inline images.

>>> esc(0.123456), esc(None), esc("<b>")
('0.1235', '<span class="muted">–</span>', '&lt;b&gt;')
"""

from __future__ import annotations

import html
from typing import Any

import polars as pl

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 18px;color:#1a202c}
h1{margin:18px 0 4px}h2{margin-top:34px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}th,td{border:1px solid #e2e8f0;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f7fafc}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#718096}.warn{color:#9c4221;font-weight:600}.gallery{display:flex;flex-wrap:wrap;gap:14px}.gallery figure{margin:0;max-width:580px}
figcaption{font-size:12px;color:#4a5568}img{max-width:100%}nav a{margin-right:12px}
.excl{color:#c53030;font-weight:600}
"""


def esc(v: Any) -> str:
    if v is None:
        return '<span class="muted">–</span>'
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return html.escape(", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v))
    return html.escape(str(v))


def table_html(df: pl.DataFrame, limit: int = 200, columns: list[str] | None = None) -> str:
    if columns:
        df = df.select([c for c in columns if c in df.columns])
    body = []
    for row in df.head(limit).iter_rows():
        cells = "".join(f'<td class="n">{esc(v)}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else f"<td>{esc(v)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    more = (f'<p class="muted">showing {limit} of {df.height} rows; query the release for all '
            "(<code>curator query</code>)</p>") if df.height > limit else ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'
