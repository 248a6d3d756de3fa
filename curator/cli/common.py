"""Shared CLI plumbing: logging, error display, output formats."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar, overload

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
_ARGS: list[list[str]] = []  # the command line's arguments, when run as ``curator`` (main())
# every command's --registry but `curator card`'s (which alone means the built-in registry)
RegistryOpt = Annotated[list[Path] | None, typer.Option("--registry", help="extra dataset YAML files or folders")]


def debug_first(args: list[str]) -> list[str]:
    """``args`` with a ``--debug`` given after the command (``curator pseudolabel p.yaml --debug``,
    as the internal-error hint reads) moved to the front, where the global option is parsed
    (arguments after ``--`` are left alone)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[1:end]:
        return args
    return ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]


def remember_args(args: list[str]) -> None:
    _ARGS[:] = [list(args)]


def rerun_debug() -> str:
    """The command that failed, with ``--debug``: ``curator --debug pseudolabel pipeline.yaml``."""
    import shlex

    args = [a for a in (_ARGS[0] if _ARGS else []) if a != "--debug"]
    return "curator --debug " + (shlex.join(args) if args else "<the same command>")


class ExecutorKind(str, Enum):
    """``--executor``: checked by the command line, naming the option, before a command writes anything."""

    local = "local"
    dask = "dask"


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ReportFormat(str, Enum):
    """A report of several sections: tables for a person, or one JSON object."""

    table = "table"
    json = "json"


def setup_logging(verbose: bool, debug: bool) -> None:
    _DEBUG["on"] = debug
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)])
    logging.getLogger("curator").setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("distributed", "asyncio", "numcodecs", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``, a container stop) raised in the main
    thread, so a run stops as after Ctrl-C: stages' cleanup runs (a Dask cluster shuts down),
    and the user is told what the command leaves (``handle_errors``' ``stopped``)."""


def stop_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in this process. A process forked from it that
    inherits the handler dies of the signal as before (the check on the process id)."""
    owner = os.getpid()

    def raise_terminated(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated

    try:
        signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread (curator's CLI called from a thread): keep the default
        pass


# typer >= 0.2x vendors click: its BadParameter is no subclass of click's own ClickException
_USAGE: tuple[type[BaseException], ...] = (
    typer.Exit, typer.Abort, ClickException,
    *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


# what Ctrl-C / SIGTERM leaves: a pipeline stage keeps each finished case's result and skips it next time
RESUMES = "finished cases are kept; run the same command again to resume"
# a command writing into a staging folder moved in at the end (the exports)
STAGED = "nothing was written (the output is staged and moved in only at the end); run the same command again"


@overload
def handle_errors(fn: F, /) -> F: ...


@overload
def handle_errors(*, stopped: str = RESUMES) -> Callable[[F], F]: ...


def handle_errors(fn: F | None = None, /, *, stopped: str = RESUMES) -> F | Callable[[F], F]:
    """Curator errors → a red message and exit code 2; anything else → exit code 3, no traceback
    unless ``--debug``; Ctrl-C / SIGTERM → ``stopped`` (what the interrupted command leaves:
    :data:`RESUMES` by default, :data:`STAGED` for a command that keeps nothing), exit code 130 /
    143. ``@handle_errors`` or ``@handle_errors(stopped=STAGED)``."""
    if fn is None:
        return lambda f: _handled(f, stopped)
    return _handled(fn, stopped)


def _handled(fn: F, stopped: str) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _USAGE:  # click prints these (a bad option value: exit 2, the option named)
            raise
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            err.print(f"[bold yellow]{what}[/]: {escape(stopped)}", highlight=False)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
        except CuratorError as e:
            err.print(f"[bold red]error[/] {escape(f'[{e.kind}] {e}')}", highlight=False)
            raise typer.Exit(2) from None
        except Exception as e:
            if _DEBUG["on"]:
                raise
            err.print(f"[bold red]internal error[/] {escape(f'{type(e).__name__}: {e}')}\n"
                      f"This is a bug in curator. Re-run with --debug for the traceback ({escape(rerun_debug())}) "
                      "and report it.",
                      highlight=False)
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


def note_newest(given: Any, resolved: Any) -> None:
    """Say on stderr which version a collection folder stood for (``curator query releases/demo``
    reads its newest version): numbers quoted from a query need the version they came from."""
    from pathlib import Path

    if Path(given) != Path(resolved):
        err.print(escape(f"(newest version of {given}: {Path(resolved).name} — {resolved})"), highlight=False)


def print_stage_reports(reports: Sequence[Any]) -> None:
    """One line per stage: a tick when no case failed, no error row was written and the stage
    has nothing to point out (its ``notes``: qc's override rows that matched no label), else a '!'
    (the rows are in the problems table and were logged as the stage ran)."""
    for r in reports:
        mark = "[green]✓[/]" if r.clean and not r.notes else "[yellow]![/]"
        err.print(f"{mark} {escape(r.line())}", highlight=False)


def cell(v: Any) -> str:
    """A value as a table shows it: floats (alone or in a list) to 6 significant digits.

    Tables are for reading; ``--format csv`` and ``json`` keep every digit.
    """
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | tuple) and v and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(f"{x:.6g}" for x in v) + "]"
    return str(v)


def json_safe(v: Any) -> Any:
    """A value as ``--format json`` prints it: NaN and ±infinity (alone or inside lists and
    structs) become null — JSON has no such numbers, and ``NaN``/``Infinity`` is not JSON."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def csv_cell(v: Any) -> Any:
    """A value as ``--format csv`` writes it: booleans as ``true``/``false`` and lists and
    structs as JSON (what DuckDB's and other tools' CSV readers take back), not Python's
    ``True`` and ``{'x': nan}``; numbers keep every digit, null is an empty field."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list | tuple):
        return json.dumps(json_safe(v), default=str, allow_nan=False, ensure_ascii=False)
    return v


def print_json(obj: Any) -> None:
    """Print one JSON document to stdout as every ``--format json`` does: indented, NaN and
    ±infinity as null, anything JSON cannot hold (dates, paths) as its text."""
    sys.stdout.write(json.dumps(json_safe(obj), indent=1, default=str, allow_nan=False) + "\n")


MIN_COLUMN_WIDTH = 10  # below this a rich table is unreadable: rows are shown one block each


def spreadsheet_cell(v: Any) -> Any:
    """A value as ``curator query --spreadsheet`` writes it to CSV: as :func:`csv_cell`, and text
    a spreadsheet would run as a formula (``=…``, ``@…``, ``-x``) quoted with ``'``."""
    from curator.io.csvtext import formula_safe

    return formula_safe(csv_cell(v))


class FormulaCount:
    """``csv_cell`` that counts the text cells a spreadsheet would run as formulas: ``curator
    query`` then says ``--spreadsheet`` exists (its CSV stays exact data otherwise)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, v: Any) -> Any:
        from curator.io.csvtext import formula_safe

        out = csv_cell(v)
        if isinstance(out, str) and formula_safe(out) is not out:  # (a -inf of a numeric column is no text)
            self.n += 1
        return out

    def hint(self) -> str | None:
        """The note for stderr, or None when no cell starts like a formula."""
        return (f"({self.n:,} text cell(s) start with = + - @, which a spreadsheet would run as formulas: "
                "--spreadsheet quotes them)") if self.n else None


def emit(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: OutputFormat, title: str | None = None,
         spreadsheet: bool = False, csv_cell_of: Callable[[Any], Any] = csv_cell) -> None:
    """Print rows as a rich table, CSV or JSON (one object per row; NaN and ±infinity as null).
    CSV is data: every value exact (as ``csv_cell_of`` writes it: :func:`csv_cell`, or a
    :class:`FormulaCount`), unless ``spreadsheet`` (:func:`spreadsheet_cell`).

    A table with more columns than fit the terminal (``MIN_COLUMN_WIDTH`` characters each)
    is printed as one block per row, a line per column (like psql's expanded display).
    """
    if fmt == OutputFormat.json:
        print_json([dict(zip(columns, list(r), strict=True)) for r in rows])
    elif fmt == OutputFormat.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        to_cell = spreadsheet_cell if spreadsheet else csv_cell_of
        w.writerows([to_cell(v) for v in r] for r in rows)
        sys.stdout.write(buf.getvalue())
    elif rows and len(columns) * MIN_COLUMN_WIDTH > out.width:
        t = Table(title=None if title is None else escape(title), show_header=False)
        t.add_column("column", style="bold", no_wrap=True)
        t.add_column("value", overflow="fold")
        for i, r in enumerate(rows):
            if i:
                t.add_section()
            for c, v in zip(columns, r, strict=True):
                t.add_row(escape(str(c)), escape(cell(v)))
        out.print(t)
    else:
        # cells are data, not markup: "[kind]" in a message must print, not vanish as a style tag
        t = Table(title=None if title is None else escape(title), show_lines=False)
        for c in columns:
            t.add_column(escape(str(c)), overflow="fold")
        for r in rows:
            t.add_row(*(escape(cell(v)) for v in r))
        out.print(t)
