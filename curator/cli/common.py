"""Shared CLI plumbing: logging, error display, output formats."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from functools import wraps
from typing import Any, TypeVar

import typer
from click import ClickException
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from curator.errors import CuratorError

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
_DEBUG = {"on": False}


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def setup_logging(verbose: bool, debug: bool) -> None:
    _DEBUG["on"] = debug
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)])
    logging.getLogger("curator").setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("distributed", "asyncio", "numcodecs", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def handle_errors(fn: F) -> F:
    """Curator errors → a red message and exit code 2; anything else → exit code 3, no traceback
    unless ``--debug``."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException, KeyboardInterrupt):
            raise
        except CuratorError as e:
            err.print(f"[bold red]error[/] {escape(f'[{e.kind}] {e}')}", highlight=False)
            raise typer.Exit(2) from None
        except Exception as e:
            if _DEBUG["on"]:
                raise
            err.print(f"[bold red]internal error[/] {escape(f'{type(e).__name__}: {e}')}\n"
                      "This is a bug in curator. Re-run with --debug for the traceback and report it.",
                      highlight=False)
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


def emit(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: OutputFormat, title: str | None = None) -> None:
    """Print rows as a rich table, CSV or JSON (one object per row)."""
    if fmt == OutputFormat.json:
        sys.stdout.write(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], indent=1,
                                    default=str) + "\n")
    elif fmt == OutputFormat.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        # cells are data, not markup: "[kind]" in a message must print, not vanish as a style tag
        t = Table(title=None if title is None else escape(title), show_lines=False)
        for c in columns:
            t.add_column(escape(str(c)), overflow="fold")
        for r in rows:
            t.add_row(*("" if v is None else escape(str(v)) for v in r))
        out.print(t)
